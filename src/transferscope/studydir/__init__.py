"""The study directory as the runner and the units read it: the plan (:mod:`.plan`), the store
of runs and results (:mod:`.store`), run integrity (:mod:`.integrity`), the lock, and what the
analyses read from the data and the runs (:mod:`.inputs`). File names come from
:mod:`transferscope.paths`."""
