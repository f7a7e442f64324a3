"""Running a study: training its runs (:mod:`.executors`, :mod:`.ray_executor`), running its
analyses (:mod:`.analyze`, :mod:`.analysis_pool`), estimating its time (:mod:`.estimate`) and
the events the display shows (:mod:`.events`)."""
