"""PyTorch checkpoints -> a trainer workdir (`python -m sama_jax.convert from-torch`).

The DiT (diffusers folder, or safetensors in diffusers or official naming) becomes the
step-0 checkpoint of WORKDIR: params = EMA = the converted weights, a fresh optimizer, and
the run's config (model from the checkpoint / the config file; encoders pointing at the
given VAE, umT5, tokenizer and SigLIP), so `python -m sama_jax.train --init_from WORKDIR`
and `python -m sama_jax.edit --checkpoint WORKDIR` take it as it is.
"""

from __future__ import annotations

import os
import sys
import tempfile

import jax
import ml_collections
from flax import nnx

from sama_jax.config import load_config
from sama_jax.convert import safetensors_io as io
from sama_jax.convert.dit import detect_layout, infer_config, load_torch_dit
from sama_jax.convert.key_report import format_report, key_report
from sama_jax.convert.orbax_io import write_train_state, write_trainer_checkpoint
from sama_jax.convert.pickle_inputs import safetensors_input


def _say(message: str) -> None:
  print(message, file=sys.stderr)


def encoder_fields(vae=None, text_encoder=None, tokenizer=None, siglip=None) -> dict:
  """The `encoders` config fields that point at the given encoders."""
  fields = {}
  if vae:
    fields.update(codec="wan_vae", vae_path=os.path.abspath(vae))
  if text_encoder:
    fields.update(text="umt5", umt5_path=os.path.abspath(text_encoder), tokenizer_path=os.path.abspath(tokenizer))
  if siglip:
    fields.update(semantic="siglip", siglip_path=os.path.abspath(siglip))
  return fields


def check_encoders(mc, vae=None, text_encoder=None, tokenizer=None, siglip=None, log=print) -> dict:
  """Builds each given encoder once (then lets it go) and checks its width against the DiT;
  returns the `encoders` config fields that point at them."""
  from sama_jax.convert import load_torch_siglip, load_torch_umt5, load_torch_vae
  from sama_jax.models.text import load_tokenizer

  if vae:
    _, vc = load_torch_vae(vae)
    _same("--vae", vae, "latent channels", vc.z_dim, "model.in_channels", mc.in_channels)
    log(f"VAE {vae}: loads, {vc.z_dim} latent channels")
  if text_encoder:
    load_tokenizer(tokenizer)
    _, tc = load_torch_umt5(text_encoder)
    _same("--text-encoder", text_encoder, "width", tc.d_model, "model.text_dim", mc.text_dim)
    log(f"text encoder {text_encoder}: loads, width {tc.d_model}; tokenizer {tokenizer}: loads")
  if siglip:
    _, sc = load_torch_siglip(siglip)
    _same("--siglip", siglip, "width", sc.hidden_size, "model.semantic_dim", mc.semantic_dim)
    log(f"SigLIP {siglip}: loads, width {sc.hidden_size}")
  return encoder_fields(vae, text_encoder, tokenizer, siglip)


def _same(flag, path, what, value, field, expected) -> None:
  if value != expected:
    raise ValueError(f"{flag} {path!r} has {what} {value} but the DiT has {field}={expected}; "
                     "they must be equal")


def saved_config(cfg, mc, encoder_fields: dict) -> ml_collections.ConfigDict:
  """The config saved with the checkpoint: every section of the config file, with the
  model as converted and full train, encoders and edit sections."""
  from sama_jax.edit import edit_config
  from sama_jax.encoders import encoders_config
  from sama_jax.train.config import train_config

  section = lambda name: cfg[name].to_dict() if name in cfg else {}
  full = ml_collections.ConfigDict()
  for name in cfg:
    full[name] = cfg[name]
  full.model = mc
  full.train = train_config(**section("train"))
  full.encoders = encoders_config(**{**section("encoders"), **encoder_fields})
  full.edit = edit_config(**section("edit"))
  return full


def _check_inputs(paths: dict, tokenizer, out: str) -> None:
  for flag, path in paths.items():
    if path and not os.path.exists(path):
      raise FileNotFoundError(f"--{flag} {path!r} does not exist")
  if tokenizer and not paths["text-encoder"]:
    raise ValueError("--tokenizer is given without --text-encoder; the tokenizer belongs to the umT5 text encoder")
  run_dir = os.path.join(out, "checkpoints")
  if os.path.isdir(run_dir) and os.listdir(run_dir):
    raise FileExistsError(f"--out {out!r} already holds checkpoints; choose a new workdir")


def _tokenizer_of(text_encoder: str, tokenizer: str | None) -> str:
  from sama_jax.models.text import TOKENIZER_CONFIG
  if tokenizer:
    return tokenizer
  if os.path.isfile(os.path.join(text_encoder, TOKENIZER_CONFIG)):
    return text_encoder  # a folder holding both, as google/umt5-xxl does
  raise ValueError(f"--text-encoder {text_encoder!r} holds no tokenizer; pass --tokenizer FOLDER "
                   "(e.g. the Wan2.1 diffusers folder's tokenizer/)")


def _checked_report(path: str, mc, log) -> int:
  """Prints the key table; raises on missing or unexpected tensors; returns the tensors used."""
  names = io.index_files(path)
  layout = detect_layout(names)
  report = key_report(names, layout, mc.num_layers)
  log(format_report(report))
  if report.required:
    raise ValueError(f"{path!r} lacks {len(report.required)} tensors a {mc.num_layers}-layer DiT needs, e.g. "
                     f"{report.required[0]!r}; the config does not match the checkpoint")
  if report.unexpected:
    raise ValueError(f"{len(report.unexpected)} tensors of {path!r} have no place in a {mc.num_layers}-layer "
                     f"SAMA DiT (an image-to-video or otherwise different model, or a config with too few "
                     f"layers?), e.g. {list(report.unexpected[:3])}")
  return report.used


def load_dit_with_report(path: str, mc, log=print, progress_bar: bool = True):
  """load_torch_dit with the key table printed first and a bar over tensors."""
  from tqdm import tqdm

  with tqdm(total=_checked_report(path, mc, log), unit="tensor", desc="DiT", disable=not progress_bar) as bar:
    return load_torch_dit(path, mc, progress=lambda _: bar.update(1))


def _quiet(*_) -> None:
  pass


def from_torch(dit: str, config_file: str, out: str, *, vae=None, text_encoder=None, tokenizer=None,
               siglip=None, allow_pickle: bool = False, log=print, progress_bar: bool = True,
               distributed: bool = False) -> str:
  """Converts and writes WORKDIR `out`; returns the step folder written.

  distributed: every process of an initialised `jax.distributed` run calls this alike;
  the parameters and the fresh optimizer state become global arrays sharded over all
  devices (each process holds its shards), and each process writes its own shards.
  Process 0 alone checks the encoders, prints and writes the config."""
  if distributed and allow_pickle:
    raise ValueError("--allow-pickle cannot be combined with --distributed (every process would convert the "
                     "same files at once); convert pickles first with python -m "
                     "sama_jax.convert.torch_to_safetensors and pass the .safetensors")
  _check_inputs({"dit": dit, "vae": vae, "text-encoder": text_encoder, "siglip": siglip}, tokenizer, out)
  primary = jax.process_index() == 0
  log, progress_bar = (log, progress_bar) if primary else (_quiet, False)
  cfg = load_config(config_file)
  # Converted encoders must outlive this call (the config points at them); the DiT's need not.
  kept = os.path.join(out, "converted_inputs")
  vae = vae and safetensors_input("vae", vae, allow_pickle, kept, _say)
  text_encoder = text_encoder and safetensors_input("text-encoder", text_encoder, allow_pickle, kept, _say)
  siglip = siglip and safetensors_input("siglip", siglip, allow_pickle, kept, _say)
  if text_encoder:
    tokenizer = _tokenizer_of(text_encoder, tokenizer)
  with tempfile.TemporaryDirectory(prefix="sama_convert_") as scratch:
    dit = safetensors_input("dit", dit, allow_pickle, scratch, _say)
    mc = cfg.model if "model" in cfg else infer_config(dit)
    # Encoders first: each is built and dropped before the DiT takes the memory.
    fields = (check_encoders(mc, vae, text_encoder, tokenizer, siglip, log) if primary
              else encoder_fields(vae, text_encoder, tokenizer, siglip))
    if distributed:
      from tqdm import tqdm

      from sama_jax.convert.sharded import conversion_mesh, sharded_dit_params, sharded_fresh_state
      mesh = conversion_mesh()
      with tqdm(total=_checked_report(dit, mc, log), unit="tensor", desc="DiT", disable=not progress_bar) as bar:
        params = sharded_dit_params(dit, mc, mesh, progress=lambda _: bar.update(1))
    else:
      model, mc = load_dit_with_report(dit, mc, log, progress_bar)
  full = saved_config(cfg, mc, fields)
  if distributed:
    step_dir = write_train_state(out, sharded_fresh_state(params, mc, full.train, mesh), full)
  else:
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    del model  # the pure dict holds the same arrays
    step_dir = write_trainer_checkpoint(out, params, full)
  log(f"wrote {step_dir} (step 0: params = EMA = converted weights, fresh optimizer state)")
  return step_dir
