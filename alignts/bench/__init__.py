"""Benchmarks (may use every part of alignts). ``alignts.bench.kernels``: numba kernels vs NumPy twins."""
