# Tiny SAMA DiT for CPU tests and the synthetic-world demo.
#   python -c "from sama_jax.config import load_config; print(load_config('configs/tiny.py'))"
# prints the config; a model built from it has about 0.2 M parameters.
import ml_collections

from sama_jax.config import model_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = model_config(
      dim=64, ffn_dim=128, num_heads=2, num_layers=2, text_dim=32, freq_dim=32,
      semantic_dim=48, semantic_hidden_dim=32, num_semantic_tokens=5,
  )
  return config
