# SAMA-14B: the published Wan2.1-T2V-14B backbone (SAMA_METHOD.md §6.1) plus SAMA's modules.
#   python -c "from sama_jax.config import load_config; print(load_config('configs/wan14b.py'))"
import ml_collections

from sama_jax.config import model_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = model_config(
      dim=5120, ffn_dim=13824, num_heads=40, num_layers=40,
      dtype="bfloat16", remat="full", timestep_bf16=True,
  )
  return config
