"""The unit kit: what an analysis unit is built from, below the units themselves.

The unit base (:mod:`.unit`), the study context a unit reads (:mod:`.context`), pairs of runs
(:mod:`.pairs`), result models (:mod:`.results`), report sections (:mod:`.sections`), the verdict
toolkit (:mod:`.rules`), the page and figure helpers a unit draws with (:mod:`.page`,
:mod:`.figures`), the study as the report reads it (:mod:`.study_data`), and helpers several
units share (:mod:`.basins`, :mod:`.model_paths`, :mod:`.line_cache`, :mod:`.cost`). The
registry of units is :mod:`transferscope.registry`.
"""
