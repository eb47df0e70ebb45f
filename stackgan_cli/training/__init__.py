"""Training: ``stackgan train`` and ``stackgan resume``.

config.py       TrainConfig (every training default) and the model-width resolution
run.py          start a run / resume one: checks, run directory, config.json
loop.py         Trainer: the epoch loop, logging, checkpoints, samples, stopping
step.py         one official iteration (G forward, D step, G step), fast; optimizers
family.py       StackGAN-v1 stages;  family_v2.py  the StackGAN-v2 tree (a D per branch)
ema.py          moving average of G's parameters (v2: 0.999), kept beside the trained weights
fast_layers.py  execution-only rewrites of the networks (same maths, less work)
checkpoint.py   last.pt / epoch_NNNN.pt: one save (atomic), one load
distributed.py  torchrun / DistributedDataParallel
progress.py     live display or plain lines;  samples.py  sample grids;  plot.py  losses.png
metrics_file.py reading metrics.jsonl back (torch-free)
signals.py      Ctrl-C / SIGTERM: finish the step, save, exit 130
"""
