# Stage 1 of SAMA on the Wan2.1-T2V-1.3B backbone (same recipe as configs/stage1_wan14b.py).
#   python -m sama_jax.train --config configs/stage1_wan1_3b.py --workdir runs/stage1_1_3b \
#       --init_from runs/wan1_3b_converted
import importlib.util
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg=None):
  spec = importlib.util.spec_from_file_location("stage1_wan14b", os.path.join(HERE, "stage1_wan14b.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config(arg, size="1_3b")
  c.model.remat = "dots_saveable"
  c.data.image_batch_size, c.data.video_batch_size = 64, 16
  return c
