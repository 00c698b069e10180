"""Pure model code: Flax NNX modules and the functions they use. No I/O."""

from sama_jax.models.dit import WanDiT
from sama_jax.models.sama import SamaDiT

__all__ = ["WanDiT", "SamaDiT"]
