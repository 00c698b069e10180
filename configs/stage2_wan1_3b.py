# Stage 2 (SFT) of SAMA on the Wan2.1-T2V-1.3B backbone, from stage 1:
#   python -m sama_jax.train --config configs/stage2_wan1_3b.py --workdir runs/stage2_1_3b \
#       --init_from runs/stage1_1_3b
import importlib.util
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def _load(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(arg=None):
  return _load("stage2_wan14b").stage2(_load("stage1_wan1_3b").get_config(arg))
