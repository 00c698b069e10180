# Stage 2 (SFT on paired video edits, plus some image edits) of SAMA-14B from stage 1:
#   python -m sama_jax.train --config configs/stage2_wan14b.py --workdir gs://BUCKET/stage2 \
#       --init_from gs://BUCKET/stage1 --config.data.video_edits.path=/data/video_edits.csv
import os

import ml_collections

from sama_jax.config import load_config

HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = load_config(os.path.join(HERE, "stage1_wan14b.py"))
  return stage2(c)


def stage2(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  c.stage = "stage2"
  c.data.video_edits = ml_collections.ConfigDict({**c.data.video_edits.to_dict(), "format": "manifest",
                                                  "path": "/data/video_edits.csv"})
  c.data.stage2.video_edit, c.data.stage2.image_edit, c.data.stage2.clip = 1.0, 0.25, 0.0
  return c
