"""pytest setup: the repository root is importable (configs/, aikd_jax/, tests/).

XLA's optimisation passes dominate the compile time of the tiny test models; tests run
with most of them off (subprocesses inherit this). Set JAX_DISABLE_MOST_OPTIMIZATIONS=0
to test with full optimisation.
"""
import os

os.environ.setdefault('JAX_DISABLE_MOST_OPTIMIZATIONS', '1')
