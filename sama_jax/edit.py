"""Instruction-guided video editing (SAMA_METHOD.md §4).

    bundle = load_bundle("runs/stage2")                   # a trainer workdir (EMA weights)
    bundle = load_bundle("SAMA-14B.safetensors", config)  # a converted official checkpoint
    edited = edit(bundle, frames, "make the car red")     # uint8 [T, H', W', 3]

    python -m sama_jax.edit --checkpoint runs/stage2 --video in.mp4 \
        --instruction "make the red circle blue" --out out.mp4 [--preview strip.png]
    python -m sama_jax.edit --checkpoint runs/stage2 --batch edits.jsonl --out-dir edited/
    python -m sama_jax.edit ... --mesh fsdp=2,context=4 --weights bfloat16   # 8 devices

    bundle = load_bundle(path, config, mesh=mesh_config(data=1, fsdp=2, context=4), weights="int8")

Procedure: fit the source into the closest resolution bucket (centre crop, bicubic
resize), pad to 1 + 4k frames by repeating the last, encode it (clean, in context),
encode "[prefix] instruction" and the negative prompt, denoise target latents and
semantic tokens jointly from seeded noise with the Euler sampler (shifted levels,
text-only guidance, both branches in one batch, the whole loop one jitted function),
decode, drop the padded frames, and write an MP4 at the source fps.

On a mesh (`mesh=`), the DiT's parameters are sharded by the mesh rules (embed over fsdp,
heads and mlp over tensor), the two guidance branches over (data, fsdp) and the token
sequence over context with Ulysses attention (`model.sequence_parallel` is set to
"ulysses" when the context degree is > 1); the encoders and the codec run on the first
device (a Wan VAE decodes in spatial tiles, `vae.tile_size`). `weights` stores the DiT in
bfloat16 or int8 (weight-only, `models/quant.py`); compute is as configured.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import linen as nn
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from sama_jax.config import model_config
from sama_jax.data.frames import center_crop_resize, check_frames, closest_bucket, resolution_buckets, to_4k_plus_1
from sama_jax.diffusion.sampler import euler_sample
from sama_jax.diffusion.windows import latent_window, overlap_frames, window_starts, windowed_velocity
from sama_jax.encoders import Encoders, build_encoders, encoders_config, frames_to_unit
from sama_jax.models import SamaDiT
from sama_jax.models.quant import check_format, dequantize, quantize
from sama_jax.models.text import clean_text, tokenize
from sama_jax.parallel.mesh import make_mesh, mesh_config

MIN_FRAMES = 5


def edit_config(**overrides) -> ml_collections.ConfigDict:
  """Inference defaults of the released code (SAMA_METHOD.md decision 6)."""
  c = ml_collections.ConfigDict()
  c.steps = 50
  c.shift = 5.0
  c.guidance = 5.0  # text-only classifier-free guidance scale (1 turns it off)
  # The released code's optional two-scale mode (unused by its scripts): s_I·(v_IT − v_0T)
  # added with a third, source-free pass; 0 = off. Meaningful for a model trained with
  # train.source_dropout > 0.
  c.guidance_source = 0.0
  c.prompt_prefix = "[Video edit] "
  c.negative_prompt = "[Video edit]"
  c.area = 480 * 832  # bucket area in pixels
  c.factor = 32  # bucket sides are multiples of this
  c.max_frames = 81  # longer videos are cut here, unless max_window_frames is set
  # Long videos: 0 edits the whole video at once; N (1 + 4k >= 5) denoises windows of N
  # frames jointly (continuous RoPE, velocities blended in the overlaps), all frames kept.
  c.max_window_frames = 0
  c.window_overlap = 0.25  # share of a window's latent frames it shares with the next (>= 1 frame)
  c.max_input_pixels = 4096 * 4096  # larger source frames are refused
  c.semantic = True  # denoise semantic tokens alongside (the released model always does)
  c.seed = 0
  c.update(overrides)
  return c


@dataclasses.dataclass
class EditBundle:
  model: SamaDiT
  encoders: Encoders
  config: ml_collections.ConfigDict  # .model, .encoders, .edit
  # Compiled samplers by (steps, shift, guidance, window layout, guidance_source), and the
  # progress callback of the edit in flight (the compiled loop calls whatever is here, so
  # it need not recompile).
  samplers: dict = dataclasses.field(default_factory=dict, repr=False)
  progress: list = dataclasses.field(default_factory=lambda: [None], repr=False)
  mesh: jax.sharding.Mesh | None = None  # the DiT's parameters are sharded over it (None: one device)
  rules: tuple = ()  # logical axis rules for the mesh
  weights: str = "float32"  # how the DiT's parameters are stored: float32 | bfloat16 | int8

  def placement(self):
    """The context the sampler runs in: the mesh and its rules, or nothing."""
    if self.mesh is None:
      return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    stack.enter_context(jax.set_mesh(self.mesh))
    stack.enter_context(nn.logical_axis_rules(self.rules))
    return stack


def load_bundle(checkpoint: str, config: ml_collections.ConfigDict | None = None, *,
                use_ema: bool = True, mesh: ml_collections.ConfigDict | None = None,
                weights: str = "float32") -> EditBundle:
  """A model and its encoders from a trainer workdir (its saved config, EMA parameters by
  default) or from a PyTorch DiT checkpoint (diffusers folder or .safetensors file; the
  encoders then come from `config.encoders`, default: the world's).

  mesh: a `parallel.mesh.mesh_config` to shard the DiT over (its parameters are read
  straight into their shards; a dimension the mesh does not divide is replicated);
  None: one device. weights: "float32" (as stored), "bfloat16" or "int8" (weight-only)."""
  from sama_jax.convert import load_torch_dit
  from sama_jax.convert.dit import infer_config
  from sama_jax.convert.sharded import conversion_shardings, sharded_dit_params
  from sama_jax.train import checkpoint as ckpt
  from sama_jax.train.state import abstract_model

  check_format(weights)
  if not os.path.exists(checkpoint):
    raise FileNotFoundError(f"checkpoint {checkpoint!r} does not exist")
  device_mesh = None if mesh is None else make_mesh(mesh)
  rules = () if mesh is None else tuple(mesh.rules)
  run_dir = os.path.join(checkpoint, "checkpoints")
  if os.path.isdir(run_dir):
    saved = ml_collections.ConfigDict(ckpt.read_config(run_dir))
    config = config or saved
    mc = for_mesh(model_config(**saved.model.to_dict()), device_mesh)
    graphdef, abstract = abstract_model(mc)
    like = nnx.to_pure_dict(abstract)
    if device_mesh is None:
      device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
      shardings = jax.tree.map(lambda _: device, like)
    else:
      shardings = conversion_shardings(mc, device_mesh, rules)
    params = ckpt.restore_params(run_dir, like, shardings, use_ema=use_ema)
  else:
    config = config or ml_collections.ConfigDict()
    given = config.model if "model" in config else None
    if device_mesh is None:
      model, mc = load_torch_dit(checkpoint, given)
      graphdef, params = nnx.graphdef(model), nnx.to_pure_dict(nnx.state(model, nnx.Param))
    else:
      mc = for_mesh(model_config(**(given or infer_config(checkpoint)).to_dict()), device_mesh)
      graphdef, abstract = abstract_model(mc)
      params = sharded_dit_params(checkpoint, mc, device_mesh, rules=rules)
  params = jax.jit(lambda p: quantize(p, weights))(params)
  _, state = abstract_model(mc)
  nnx.replace_by_pure_dict(state, params)
  model = nnx.merge(graphdef, state)
  full = ml_collections.ConfigDict()
  full.model = mc
  full.encoders = encoders_config(**config.encoders.to_dict()) if "encoders" in config else encoders_config()
  full.edit = edit_config(**config.edit.to_dict()) if "edit" in config else edit_config()
  # Editing reads no semantic tokens (the semantic branch is fed noise), so the semantic
  # encoder is not built: no SigLIP weights are read, and a world run edits even where its
  # pre-trained world SigLIP (encoders.world_siglip_init, kept in the config) is gone.
  encoders = build_encoders(encoders_config(**{**full.encoders.to_dict(), "semantic": "none"}))
  return EditBundle(model, encoders, full, mesh=device_mesh, rules=rules, weights=weights)


def for_mesh(mc: ml_collections.ConfigDict, mesh: jax.sharding.Mesh | None) -> ml_collections.ConfigDict:
  """The model config to run on `mesh`: Ulysses attention when the sequence is split
  (context degree > 1), unless the config already chose."""
  if mesh is not None and mesh.shape["context"] > 1 and mc.get("sequence_parallel", "none") == "none":
    mc = model_config(**{**mc.to_dict(), "sequence_parallel": "ulysses"})
  return mc


def parse_mesh(text: str) -> ml_collections.ConfigDict:
  """`--mesh` "fsdp=2,context=4" -> a mesh_config; unnamed axes are 1 (data too: the
  guidance branches are the only batch), one axis may be -1 (the devices left over)."""
  degrees = {"data": 1}
  for part in filter(None, (p.strip() for p in text.split(","))):
    name, _, value = part.partition("=")
    if name not in ("data", "fsdp", "context", "tensor") or not value.lstrip("-").isdigit():
      raise ValueError(f"--mesh {text!r}: expected comma-separated AXIS=N with AXIS in data, fsdp, "
                       f"context, tensor (e.g. fsdp=2,context=4)")
    degrees[name] = int(value)
  return mesh_config(**degrees)


def prepare_source(frames: np.ndarray, c) -> tuple[np.ndarray, int]:
  """Bucketed, 4k+1-padded source frames and the number of real frames."""
  frames = check_frames(frames, "video")
  t, h, w, _ = frames.shape
  if t < MIN_FRAMES:
    raise ValueError(f"video has {t} frames; SAMA needs at least {MIN_FRAMES} (4k+1)")
  if h * w > c.max_input_pixels:
    raise ValueError(f"video is {w}x{h} = {w * h} pixels per frame, above the configured maximum "
                     f"edit.max_input_pixels={c.max_input_pixels}")
  if not c.max_window_frames:
    frames = frames[:c.max_frames]
  size = closest_bucket(w, h, resolution_buckets(c.area, c.factor))
  real = len(frames)
  return to_4k_plus_1(center_crop_resize(frames, size), mode="pad"), real


def edit(bundle: EditBundle, frames: np.ndarray, instruction: str, *, progress=None, **options) -> np.ndarray:
  """Edits `frames` (uint8 [T, H, W, 3]) by `instruction`; returns uint8 [T', H', W', 3]
  at the bucket size, T' = min(T, max_frames) (T with max_window_frames set). Options
  override `bundle.config.edit`."""
  c = edit_config(**{**bundle.config.edit.to_dict(), **options})
  check_window_options(c)
  if not isinstance(instruction, str) or not clean_text(instruction):
    raise ValueError("the instruction is empty; say what to change, e.g. 'make the car red'")
  source, real = prepare_source(frames, c)
  text = instruction_embeddings(bundle, instruction, c)
  source_latents = bundle.encoders.codec.encode(frames_to_unit(jnp.asarray(source[None])))
  latents = edit_latents(bundle, source_latents, text, video_frames=len(source), progress=progress, **options)
  return latents_to_frames(bundle, latents)[:real]


def instruction_embeddings(bundle: EditBundle, instruction: str, c: ml_collections.ConfigDict) -> jax.Array:
  """[2, L, D]: the text embeddings of the prefixed instruction, then of the negative
  prompt (edit config `c`), as `edit_latents` takes them."""
  enc = bundle.encoders
  ids, mask = tokenize(enc.tokenizer, [c.prompt_prefix + clean_text(instruction), c.negative_prompt], enc.text_len)
  return _text_embeddings(enc.text_encoder, jnp.asarray(ids), jnp.asarray(mask))


def latents_to_frames(bundle: EditBundle, latents: jax.Array) -> np.ndarray:
  """Decodes edited latents [1, F, h, w, C] to uint8 frames [T, H, W, 3]."""
  out = bundle.encoders.codec.decode(latents)[0]
  return np.asarray(jnp.clip((out + 1.0) * 127.5, 0, 255)).astype(np.uint8)  # truncation, as released


@nnx.jit
def _text_embeddings(text_encoder, ids: jax.Array, mask: jax.Array) -> jax.Array:
  return text_encoder(ids, mask)


def edit_latents(bundle: EditBundle, source_latents: jax.Array, text: jax.Array, *, video_frames: int | None = None,
                 progress=None, **options) -> jax.Array:
  """The denoising core of `edit`, from precomputed features: source_latents [1, F, h, w, C]
  (the codec's encoding of the bucketed, 1+4k-padded source) and text [2, L, D] (the
  embeddings of the prefixed instruction, then of the negative prompt) -> edited
  latents [1, F, h, w, C] float32, to decode with the codec. video_frames (for window
  layouts): the padded source's frame count; default F (the patch codec's 1:1)."""
  c = edit_config(**{**bundle.config.edit.to_dict(), **options})
  check_window_options(c)
  mc = bundle.config.model
  if source_latents.ndim != 5 or source_latents.shape[0] != 1 or source_latents.shape[-1] != mc.in_channels:
    raise ValueError(f"source latents have shape {tuple(source_latents.shape)}; expected [1, F, h, w, "
                     f"{mc.in_channels}]")
  if text.ndim != 3 or text.shape[0] != 2 or text.shape[-1] != mc.text_dim:
    raise ValueError(f"text embeddings have shape {tuple(text.shape)}; expected [2, L, {mc.text_dim}] "
                     "(instruction, negative prompt)")
  key_x, key_s = jax.random.split(jax.random.key(c.seed))
  noise = jax.random.normal(key_x, source_latents.shape, jnp.float32)
  semantic_noise = None
  if c.semantic:
    semantic_noise = jax.random.normal(key_s, (1, mc.num_semantic_tokens, mc.semantic_dim), jnp.float32)
  layout = window_layout(c, video_frames or source_latents.shape[1], source_latents.shape[1], mc)
  if c.guidance_source and layout is not None:
    raise ValueError("guidance_source with max_window_frames is not supported; use one of them")
  if c.guidance_source < 0:
    raise ValueError(f"guidance_source={c.guidance_source}; expected >= 0 (0 turns source guidance off)")
  key = (c.steps, c.shift, c.guidance, layout, float(c.guidance_source))
  if key not in bundle.samplers:
    bundle.samplers[key] = _make_sampler(bundle, *key)
  bundle.progress[0] = progress
  inputs = (jnp.asarray(text, jnp.float32), jnp.asarray(source_latents), noise, semantic_noise)
  try:
    with bundle.placement():
      if bundle.mesh is not None:
        inputs = jax.device_put(inputs, NamedSharding(bundle.mesh, P()))
      # Wait here: the progress callbacks run while the loop does, and read `progress`.
      out = jax.block_until_ready(bundle.samplers[key](nnx.state(bundle.model), *inputs))
  finally:
    bundle.progress[0] = None
  return out if bundle.mesh is None else jnp.asarray(jax.device_get(out))


def check_window_options(c) -> None:
  """Raises ValueError unless max_window_frames is 0 (off) or 1 + 4k >= MIN_FRAMES."""
  n = c.max_window_frames
  if not isinstance(n, int) or n < 0 or (n and (n < MIN_FRAMES or (n - 1) % 4)):
    raise ValueError(f"max_window_frames={n!r}; expected 0 (off) or a window of 1 + 4k >= {MIN_FRAMES} "
                     f"frames (5, 9, 13, 17, ...)")
  overlap_frames(2, c.window_overlap)  # validates the fraction


def window_layout(c, video_frames: int, latent_frames: int, model) -> tuple[tuple[int, ...], int] | None:
  """(window starts, window length) in latent frames for a padded video of `video_frames`
  frames encoded to `latent_frames`, or None when it fits in one window (or windows are off)."""
  if not c.max_window_frames or video_frames <= c.max_window_frames:
    return None
  if model.patch_size[0] != 1:
    raise ValueError(f"max_window_frames needs model.patch_size[0] == 1 (one latent frame per "
                     f"token frame); the model has {tuple(model.patch_size)}")
  window = latent_window(c.max_window_frames, video_frames, latent_frames)
  starts = window_starts(latent_frames, window, overlap_frames(window, c.window_overlap))
  reach = starts[-1] + window * (2 if model.source_rope == "shifted" else 1)
  if reach > model.rope_max_len:
    raise ValueError(f"the video's {latent_frames} latent frames need temporal RoPE positions up to "
                     f"{reach}, but model.rope_max_len={model.rope_max_len}; edit a shorter video")
  return starts, window


def _make_sampler(bundle: EditBundle, steps: int, shift: float, guidance: float, layout=None,
                  guidance_source: float = 0.0):
  """The jitted edit: the whole guided denoising loop; with a window layout (starts,
  window) the model runs on each window and the velocities are blended."""
  graphdef = nnx.graphdef(bundle.model)
  hook = bundle.progress

  def report(i):
    if hook[0] is not None:
      hook[0](i)

  @jax.jit
  def run(state, text, source, noise, semantic_noise):
    # int8 blocks stay int8 here; run_stacked dequantizes one layer at a time.
    model = nnx.merge(graphdef, dequantize(state, skip="blocks"))

    def velocity(x, t, ctx, s):
      n = x.shape[0] // source.shape[0]
      return model.velocity(x, t, ctx, source=jnp.concatenate([source] * n), semantic=s)

    if layout is not None:
      velocity = windowed_velocity(
          lambda x, t, ctx, s, source_w, offset: model.velocity(x, t, ctx, source=source_w, semantic=s,
                                                               frame_offset=offset), source, *layout)

    def no_source(x, t, ctx, s):
      return model.velocity(x, t, ctx, source=None, semantic=s)

    return euler_sample(velocity, noise, text[:1], text[1:], semantic_noise, steps=steps, shift=shift,
                        guidance=guidance, progress=report, source_guidance=guidance_source,
                        no_source_fn=no_source)

  return run


def preview_strip(source: np.ndarray, edited: np.ndarray, columns: int = 6) -> np.ndarray:
  """A two-row image: `columns` evenly spaced source frames over the edited ones."""
  t = min(len(source), len(edited))
  picks = np.linspace(0, t - 1, min(columns, t)).round().astype(int)
  h, w = edited.shape[1:3]
  src = center_crop_resize(source[picks], (w, h))
  return np.concatenate([np.concatenate(list(src), axis=1), np.concatenate(list(edited[picks]), axis=1)], axis=0)


def _edit_file(bundle, video: str, instruction: str, out: str, preview: str | None, options: dict) -> None:
  from PIL import Image
  from tqdm import tqdm

  from sama_jax.data.video import read_video, write_video

  frames, fps = read_video(video)
  steps = options.get("steps") or bundle.config.edit.steps
  bars = []  # opened at the first step, so input errors print without a bar

  def progress(i):
    if not bars:
      bars.append(tqdm(total=steps, desc=os.path.basename(video), unit="step"))
    bars[0].update(1)

  try:
    edited = edit(bundle, frames, instruction, progress=progress, **options)
  finally:
    for bar in bars:
      bar.close()
  write_video(out, edited, fps)
  if preview:
    Image.fromarray(preview_strip(frames, edited)).save(preview)


def main(argv=None) -> int:
  import argparse
  import json
  import sys

  from sama_jax.data.video import VideoError

  p = argparse.ArgumentParser(prog="python -m sama_jax.edit", description="Edit a video from a text instruction.")
  p.add_argument("--checkpoint", required=True, help="trainer workdir, diffusers folder or .safetensors DiT")
  p.add_argument("--config", help="config file (get_config) for a PyTorch checkpoint's model and encoders")
  p.add_argument("--video", help="source video")
  p.add_argument("--instruction", help="what to change")
  p.add_argument("--out", help="output MP4")
  p.add_argument("--preview", help="PNG strip of source over edited frames")
  p.add_argument("--batch", help="JSONL manifest: one {\"video\", \"instruction\", \"out\"} per line")
  p.add_argument("--steps", type=int)
  p.add_argument("--guidance", type=float)
  p.add_argument("--shift", type=float)
  p.add_argument("--guidance-source", type=float,
                 help="two-scale guidance: weight of the source term (0 = text-only, the default)")
  p.add_argument("--seed", type=int)
  p.add_argument("--negative-prompt")
  p.add_argument("--max-window-frames", type=int,
                 help="edit longer videos in overlapping windows of this many frames (1 + 4k), jointly")
  p.add_argument("--prompt-prefix")
  p.add_argument("--no-ema", action="store_true", help="use the raw rather than the EMA parameters")
  p.add_argument("--mesh", help="shard the DiT over devices, e.g. fsdp=2,context=4 (axes data, fsdp, "
                 "context, tensor; unnamed ones are 1, one may be -1 for the rest)")
  p.add_argument("--weights", default="float32", help="store the DiT's weights as float32 (default), "
                 "bfloat16 or int8 (weight-only)")
  a = p.parse_args(argv)
  options = {k: v for k, v in dict(steps=a.steps, guidance=a.guidance, shift=a.shift, seed=a.seed,
                                   negative_prompt=a.negative_prompt, prompt_prefix=a.prompt_prefix,
                                   max_window_frames=a.max_window_frames,
                                   guidance_source=a.guidance_source).items()
             if v is not None}
  known = (FileNotFoundError, VideoError, ValueError, KeyError)
  try:
    if not a.batch and not (a.video and a.instruction is not None and a.out):
      raise ValueError("give --video, --instruction and --out, or --batch MANIFEST.jsonl")
    from sama_jax.config import load_config
    config = load_config(a.config) if a.config else None
    mesh = parse_mesh(a.mesh) if a.mesh else None
    bundle = load_bundle(a.checkpoint, config, use_ema=not a.no_ema, mesh=mesh, weights=a.weights)
    if not a.batch:
      _edit_file(bundle, a.video, a.instruction, a.out, a.preview, options)
      print(f"wrote {a.out}")
      return 0
    if not os.path.isfile(a.batch):
      raise FileNotFoundError(f"batch manifest {a.batch!r} does not exist")
    with open(a.batch) as f:
      jobs = [line for line in f if line.strip()]
  except known as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  failures = []
  for n, line in enumerate(jobs, 1):
    try:
      job = json.loads(line)
      _edit_file(bundle, job["video"], job["instruction"], job["out"], job.get("preview"), options)
    except (*known, json.JSONDecodeError, TypeError) as e:
      failures.append(f"line {n}: {type(e).__name__}: {e}")
      print(f"error on line {n}: {e}", file=sys.stderr)
  print(f"edited {len(jobs) - len(failures)} of {len(jobs)} videos" + "".join(f"\n  {f}" for f in failures))
  return 1 if failures else 0


if __name__ == "__main__":
  raise SystemExit(main())
