"""python -m sama_jax.train --config configs/stage1_tiny.py --workdir DIR [--init_from DIR]
[--config.train.learning_rate=1e-4 ...]: see sama_jax/train/loop.py."""

import logging

from absl import app, flags
from ml_collections import config_flags

from sama_jax.train.loop import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Python config file (get_config).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, TensorBoard.")
_INIT_FROM = flags.DEFINE_string("init_from", None, "Workdir of an earlier stage to take parameters from.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  train(_CONFIG.value, _WORKDIR.value, _INIT_FROM.value)


if __name__ == "__main__":
  app.run(main)
