"""Training: ``stackgan train`` and ``stackgan resume``.

config.py       TrainConfig (every training default) and the model-width resolution
run.py          start a run / resume one: checks, run directory, config.json
loop.py         Trainer: the epoch loop, logging, checkpoints, samples, stopping
step.py         one official iteration (G forward, D step, G step), fast; optimizers
fast_layers.py  execution-only rewrites of the networks (same maths, less work)
checkpoint.py   last.pt / epoch_NNNN.pt: one save (atomic), one load
distributed.py  torchrun / DistributedDataParallel
progress.py     live display or plain lines;  samples.py  sample grids;  plot.py  losses.png
signals.py      Ctrl-C / SIGTERM: finish the step, save, exit 130
"""
