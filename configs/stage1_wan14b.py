# Stage 1 (factorized pre-training) of SAMA-14B on real data, from Wan2.1-T2V-14B weights
# converted with `python -m sama_jax.convert from-torch`; paper hyper-parameters
# (SAMA_METHOD.md decision 5). Paths are placeholders: override them on the command line.
#   python -m sama_jax.train --config configs/stage1_wan14b.py --workdir gs://BUCKET/stage1 \
#       --init_from gs://BUCKET/wan14b_converted \
#       --config.data.image_edits.path=/data/image_edits.jsonl --config.data.clips.path=/data/koala.csv
# The mesh shards weights and optimizer state over fsdp (ZeRO-3) and heads over tensor.
import ml_collections

from sama_jax.config import model_config
from sama_jax.data.config import data_config
from sama_jax.edit import edit_config
from sama_jax.encoders import encoders_config
from sama_jax.lora import lora_config
from sama_jax.parallel.mesh import mesh_config
from sama_jax.train.config import run_config, train_config

WAN = {"1_3b": dict(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30),
       "14b": dict(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40)}


def get_config(arg: str | None = None, size: str = "14b") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.stage = "stage1"
  c.encoders = encoders_config(codec="wan_vae", vae_path="/models/Wan2.1_VAE.safetensors", text="umt5",
                               umt5_path="/models/umt5-xxl", tokenizer_path="/models/umt5-xxl",
                               semantic="siglip", siglip_path="/models/siglip-so400m-patch14-384")
  c.model = model_config(**WAN[size], dtype="bfloat16", remat="full", timestep_bf16=True,
                         attention="cudnn")  # "splash" on TPU
  manifest = lambda path: {"format": "manifest", "path": path}
  c.data = data_config(
      image_edits=manifest("/data/image_edits.jsonl"), clips=manifest("/data/t2v_clips.csv"),
      video_edits={"format": "none"}, resolution=(832, 480), num_frames=49,
      buckets=((832, 480), (480, 832), (640, 640), (736, 544), (544, 736)),
      image_batch_size=448, video_batch_size=112, num_workers=8,
      image_edit_prefix="[Video edit] ", video_edit_prefix="[Video edit] ")
  c.data.stage1.image_edit, c.data.stage1.clip = 1.0, 1.0
  c.train = train_config(learning_rate=2e-5, warmup_steps=500, total_steps=20_000, ema_decay=0.9998,
                         weight_decay=0.01)
  c.lora = lora_config()  # --config.lora.rank=16: train LoRA adapters only
  c.run = run_config(log_every=10, checkpoint_every=500, keep_checkpoints=3, keep_every=5000)
  c.mesh = mesh_config(data=1, fsdp=-1, context=1, tensor=1)
  c.edit = edit_config()
  return c
