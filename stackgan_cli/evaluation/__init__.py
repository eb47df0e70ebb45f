"""Inception Score, FID and a mode-collapse check for StackGAN generators (via torch-fidelity).

``inception`` loads the network, ``sampling`` generates the samples, ``real_stats`` handles the
real test images and their cached statistics, ``metrics`` does the maths, ``runner`` ties one
evaluation together and ``report`` prints and writes it. Import the submodules directly: they
pull in torch and torch-fidelity.
"""
