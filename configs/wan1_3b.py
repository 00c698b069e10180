# SAMA on the published Wan2.1-T2V-1.3B backbone (SAMA_METHOD.md §6.1): dim 1536, 30 layers.
#   python -c "from sama_jax.config import load_config; print(load_config('configs/wan1_3b.py'))"
import ml_collections

from sama_jax.config import model_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = model_config(
      dim=1536, ffn_dim=8960, num_heads=12, num_layers=30,
      dtype="bfloat16", remat="dots_saveable",
  )
  return config
