"""Training one run: the loop (:mod:`.trainer`), loaders, optimizers and schedules, checkpoints,
metrics, the GPU input pipeline and distributed data parallel."""
