# The built-in demo: a tiny SAMA trained on the synthetic world, stage 1 then stage 2,
# evaluated on held-out clips after each stage (configs/stage1_tiny.py has the model).
#   python -m sama_jax.demo                    # default preset, 12-18 minutes on 2 CPU cores (by the day)
#   python -m sama_jax.demo --preset smoke     # under 2 minutes, mostly compilation: checks the whole path
#   python -m sama_jax.demo --preset full      # longer: 10.4 min on one H200, 54 on 2 CPU cores (session 18)
# writes runs/demo/{stage1,stage2} (checkpoints, TensorBoard), results.md / results.json
# and previews/ (source | ground truth | stage 1 | stage 2 strips and GIFs).
import os

import ml_collections

from sama_jax.config import load_config
from sama_jax.train.config import set_total_steps

HERE = os.path.dirname(os.path.abspath(__file__))
PRESETS = {
    # name: (stage-1 steps, stage-2 steps, eval clips, sampling steps). One sampling step
    # (the x0 prediction at sigma = 1): the world's edits are deterministic, and more
    # steps measured lower success and far more flicker (docs/results.md finding 15);
    # smoke keeps 4 to exercise the sampling loop. Default: 11.9 minutes on 2 idle cores
    # (session 24; about 18 at session 22's slower 220 ms per image-edit step), most of it
    # stage 1's image pairs, whose edits still improve with every step (findings 19, 21);
    # 3600 + 400 steps (4500 + 500 until session 23) to stay inside the demo's 20 minutes.
    "smoke": (12, 12, 4, 4),
    "default": (3600, 400, 48, 1),
    "full": (8000, 8000, 128, 1),
}
# name: (world SigLIP pre-training steps, batch, frame pool): the SigLIP stand-in is
# first trained contrastively on world frames and captions (sama_jax/world_siglip.py, about
# 80 s at 600 steps), so Semantic Anchoring's targets know the objects (finding 23).
SIGLIP = {"smoke": (10, 16, 64), "default": (600, 64, 4096), "full": (1000, 64, 8192)}


def get_config(preset: str | None = "default") -> ml_collections.ConfigDict:
  preset = preset or "default"
  if preset not in PRESETS:
    raise ValueError(f"demo preset {preset!r}; expected one of {sorted(PRESETS)}")
  steps1, steps2, clips, sample_steps = PRESETS[preset]
  siglip_steps, siglip_batch, siglip_pool = SIGLIP[preset]
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.stage1 = load_config(os.path.join(HERE, "stage1_tiny.py"))
  c.stage2 = load_config(os.path.join(HERE, "stage2_tiny.py"))
  for stage, steps in ((c.stage1, steps1), (c.stage2, steps2)):
    set_total_steps(stage, steps)
    stage.edit.steps = sample_steps
  c.siglip = ml_collections.ConfigDict(dict(steps=siglip_steps, batch=siglip_batch, pool=siglip_pool, seed=0))
  # seen_clips: stage 2 is also scored on new clips of the training distribution.
  c.eval = ml_collections.ConfigDict(dict(num_clips=clips, seen_clips=max(2, clips // 2), seed=1000, previews=4))
  return c
