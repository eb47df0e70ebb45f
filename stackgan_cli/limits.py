"""Bounds on what one ``generate`` call may ask for (torch-free, so ``--help`` can state them)."""

MAX_SAMPLES = 256
"""Largest ``-n``: a grid row of 256 images is already 16k (64 px) to 66k (256 px) wide."""

MAX_STEPS = 64
"""Most frames in an interpolation strip."""
