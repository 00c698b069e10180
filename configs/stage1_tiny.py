# Stage 1 (factorized pre-training) of a tiny SAMA on the synthetic world, on CPU:
# Semantic Anchoring on image-edit pairs + Motion Alignment pretext clips.
#   python -m sama_jax.train --config configs/stage1_tiny.py --workdir runs/stage1_tiny
# writes checkpoints, metrics.jsonl and TensorBoard logs to runs/stage1_tiny; the loss falls.
import ml_collections

from sama_jax.config import model_config
from sama_jax.data.config import data_config
from sama_jax.edit import edit_config
from sama_jax.encoders import encoders_config
from sama_jax.lora import lora_config
from sama_jax.parallel.mesh import mesh_config
from sama_jax.train.config import run_config, train_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.stage = "stage1"
  # World encoders: patch codec (4x4 space-to-depth: 48 latent channels), tiny umT5 and SigLIP.
  # The umT5 stand-in is as wide as the DiT (128): at width 32 its frozen random features
  # kept the tiny DiT from learning which object and colour the words name (finding 20).
  c.encoders = encoders_config(codec="patch", codec_factor=4, text_len=24, world_text_dim=128,
                               world_siglip_dim=48, world_image_size=32, world_semantic_grid=2)
  # One latent position (4x4 pixels, 48 channels) per token, width 128: with 8x8-pixel
  # tokens the tiny DiT cannot tell which pixels of a token are the named object
  # (docs/results.md findings 13-15); 4x the tokens of 2x2 patches.
  # The blocks see (1 - sigma)·x_sigma (model.scale_input): at sigma = 1 the pure-noise
  # input would drown the source features it shares a token with (finding 15).
  # x0 prediction with the source skip (x̂0 = source + head): a model trained from scratch
  # starts out copying its source instead of having to learn to (docs/results.md); such a
  # model cannot be exported to PyTorch Wan / SAMA code.
  # The source enters as channels ([x_t ; z_s], an option of the released code), not as
  # in-context tokens (the released model): trained from scratch, a target token takes
  # thousands of steps to learn to look up the source token at its own position, and
  # until then it cannot see what it edits (docs/results.md finding 10). Half the tokens,
  # so a step costs about half as much.
  # RoPE base 100, not Wan's 10000 (made for grids of hundreds of positions): a head of 32
  # gives each spatial axis 5 frequencies, and at base 10000 three of them turn less than
  # 0.2 rad over the 8 tokens of a frame (position carries little); at 100 one does. At
  # 1500 stage-1 steps, seeds 0 and 1: 54% / 51% of held-out one-frame edits against
  # 45% / 39%; the demo 58% / 56% of held-out clips against 52% / 52% (finding 28).
  # Rematerialised blocks (only the matmul outputs kept for the backward): on the CPU the
  # scan's stores and reloads of every saved activation cost more than recomputing the
  # elementwise work: 190 ms against 234 ms per image-edit step (`full`: 211), 327 against
  # 363 per stage-2 video-edit step, the same loss and gradient (benchmarks/remat_step.py).
  c.model = model_config(dim=128, ffn_dim=512, num_heads=4, num_layers=4, in_channels=48, out_channels=48,
                         patch_size=(1, 1, 1), text_dim=128, freq_dim=64, semantic_dim=48, semantic_hidden_dim=64,
                         num_semantic_tokens=5, prediction="x0", source_skip=True, source_mode="channel",
                         scale_input=True, rope_theta=100.0, remat="dots_saveable")
  # Every edit instruction carries the released model's prompt prefix, so stage-1 image
  # edits and stage-2 video edits are prompted the way `edit` prompts them.
  # Eight images per video in a batch (the paper: 448 : 112): clip batches cost 9x.
  c.data = data_config(resolution=(32, 32), num_frames=9, image_batch_size=16, video_batch_size=2,
                       image_edit_prefix="[Video edit] ", video_edit_prefix="[Video edit] ")
  c.data.pretext.speed_mode = "time_warp"  # channel mode needs a source as long as the target
  # The world's edits are narrowed to the two kinds the demo's targets name: mixed with
  # background, add and replace edits the tiny DiT learns none (finding 15).
  c.data.world.edit_kinds = ("recolour", "remove")
  # Stage 1 as a curriculum, not a mix: Motion Alignment's pretext clips for the first
  # tenth of the run, then Semantic Anchoring's image pairs alone. Mixed in (3 image
  # batches per clip batch, or weighted down to 0.01) the clips' flow loss stopped the
  # image edits from being learnt (finding 18); run first they cost far less (still more
  # than their steps: image pairs alone score higher), and the edits then need every
  # image-edit step the budget holds (finding 19).
  c.data.stage1.image_edit, c.data.stage1.clip = 1.0, 0.0
  c.data.stage1_lead_in.update(share=0.1, image_edit=0.0, clip=1.0)
  # ... and the image pairs start at the peak learning rate: the schedule warms up and
  # decays again where the lead-in ends (train.schedule_restarts; finding 20).
  restart = (c.data.stage1_lead_in.share,)
  # The world recipe departs from the paper's (docs/results.md): a tiny model trained from
  # scratch, with a high learning rate. DiffSynth's Gaussian loss weight is ~0 at sigma ~ 1,
  # where the shift puts most draws, so uniform weights over per-example levels. The x0
  # objective is plain MSE on x̂0 (x0_sigma_floor=1): the velocity loss's 1/σ² weight
  # (floor 0.05) let rare low-σ draws dominate and the model never learnt to read the
  # instruction (docs/results.md finding 9); at lr 3e-3 it read the text worse than at 1e-3.
  # The latents an edit changes weigh 1 + edit_weight in the loss: an object is a few
  # percent of a frame, and with plain weights the copy term drowns it (finding 10; 8
  # rather than 3 since finding 20).
  # Shift 20 (69% of the draws above sigma 0.9, against 25% at shift 3) trains mostly near
  # the level the one-step sampler asks about; removals learnt faster (finding 16).
  # No text dropout, so no guidance (edit.guidance 1): with the semantic loss, dropout 0.1
  # halved the one-frame edits learnt in 1000 steps (finding 18).
  c.train = train_config(learning_rate=1e-3, warmup_steps=100, schedule="cosine", total_steps=400,
                         ema_decay=0.99, loss_weighting=False, per_sample_timesteps=True, timestep_shift=20.0,
                         x0_sigma_floor=1.0, edit_weight=8.0, text_dropout=0.0,
                         schedule_restarts=restart)
  c.lora = lora_config()  # --config.lora.rank=16: train LoRA adapters only
  c.run = run_config(log_every=10, checkpoint_every=100)
  c.mesh = mesh_config()
  c.edit = edit_config(area=32 * 32, factor=16, steps=20, shift=3.0, guidance=1.0)
  return c
