"""sama_jax: SAMA instruction-guided video editing (arXiv 2603.19228) in JAX / Flax NNX."""

__version__ = "0.1.0"
