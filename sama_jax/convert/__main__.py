"""Checkpoint interchange between PyTorch and sama_jax trainer workdirs.

    python -m sama_jax.convert from-torch --dit Wan2.1-T2V-1.3B-Diffusers/transformer \
        --vae Wan2.1-T2V-1.3B-Diffusers/vae --text-encoder Wan2.1-T2V-1.3B-Diffusers/text_encoder \
        --tokenizer Wan2.1-T2V-1.3B-Diffusers/tokenizer --siglip siglip-so400m-patch14-384 \
        --config configs/wan1_3b.py --out runs/wan1_3b_init
    python -m sama_jax.convert to-torch --checkpoint runs/stage2 --out export/transformer --layout diffusers
    python -m sama_jax.convert to-torch --checkpoint runs/stage2 --out sama.safetensors --layout official \
        --dtype bfloat16
    python -m sama_jax.convert to-torch --checkpoint runs/lora --out lora.safetensors --layout diffusers \
        --lora-only

from-torch writes WORKDIR/checkpoints/0 (params = EMA = converted weights, fresh optimizer
state, the run's config), which `python -m sama_jax.train --init_from WORKDIR` and
`python -m sama_jax.edit --checkpoint WORKDIR` load. to-torch exports a workdir's newest
step (its EMA by default; a LoRA run's model with the adapters merged); --lora-only
writes a LoRA run's adapters alone as one .safetensors file (PEFT keys for diffusers,
DiffSynth keys for official). Bad input is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from sama_jax.convert.dit import LAYOUTS
from sama_jax.convert.multihost import add_distributed_flags, initialize_from_flags
from sama_jax.convert.to_torch import DTYPES

KNOWN_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, ValueError, KeyError)


class UsageError(Exception):
  """argparse's complaint, reported like every other input error."""


class _Parser(argparse.ArgumentParser):
  def error(self, message):
    raise UsageError(f"{self.prog}: {message}")


def parser() -> argparse.ArgumentParser:
  p = _Parser(prog="python -m sama_jax.convert", description=__doc__.splitlines()[0])
  verbs = p.add_subparsers(dest="verb", required=True, metavar="{from-torch,to-torch}")
  f = verbs.add_parser("from-torch", help="PyTorch DiT (+ encoders) -> trainer workdir at step 0")
  f.add_argument("--dit", required=True, help="diffusers WanTransformer3DModel folder or DiT .safetensors "
                 "(diffusers or official naming)")
  f.add_argument("--vae", help="Wan2.1 VAE: diffusers AutoencoderKLWan folder or .safetensors")
  f.add_argument("--text-encoder", help="umT5 transformers folder")
  f.add_argument("--tokenizer", help="umT5 tokenizer folder (default: the text encoder's folder)")
  f.add_argument("--siglip", help="SigLIP transformers folder")
  f.add_argument("--config", required=True, help="config file (get_config): model, train, edit, ... sections")
  f.add_argument("--out", required=True, help="the workdir to create")
  f.add_argument("--allow-pickle", action="store_true",
                 help="accept .pth/.pt/.bin inputs (unpickling can run code: trusted files only)")
  f.add_argument("--no-progress", action="store_true", help="no progress bar")
  add_distributed_flags(f)
  t = verbs.add_parser("to-torch", help="trainer workdir -> PyTorch DiT checkpoint")
  t.add_argument("--checkpoint", required=True, help="trainer workdir (its newest step is exported)")
  t.add_argument("--out", required=True, help="folder (diffusers) or .safetensors file (official)")
  t.add_argument("--layout", required=True, choices=LAYOUTS)
  t.add_argument("--ema", action=argparse.BooleanOptionalAction, default=None,
                 help="export the EMA parameters (default: EMA if the run kept one)")
  t.add_argument("--dtype", choices=DTYPES, help="cast on the way out (default: as trained)")
  t.add_argument("--lora-only", action="store_true",
                 help="a LoRA run's adapters only, as one .safetensors file (see sama_jax/convert/lora.py)")
  add_distributed_flags(t)
  return p


def run(a: argparse.Namespace) -> None:
  if a.verb == "to-torch" and a.distributed:  # refused before the processes start talking
    if getattr(a, "lora_only", False):
      raise ValueError("--lora-only writes one small file from one process; drop --distributed")
    from sama_jax.convert.to_torch import check_export
    check_export(a.out, a.layout, a.dtype, distributed=True)
  initialize_from_flags(a)
  if a.verb == "from-torch":
    from sama_jax.convert.from_torch import from_torch
    from_torch(a.dit, a.config, a.out, vae=a.vae, text_encoder=a.text_encoder, tokenizer=a.tokenizer,
               siglip=a.siglip, allow_pickle=a.allow_pickle, progress_bar=not a.no_progress,
               distributed=a.distributed)
  elif a.lora_only:
    from sama_jax.convert.lora import export_lora
    export_lora(a.checkpoint, a.out, a.layout, use_ema=a.ema, dtype=a.dtype)
  else:
    from sama_jax.convert.to_torch import to_torch
    to_torch(a.checkpoint, a.out, a.layout, use_ema=a.ema, dtype=a.dtype, distributed=a.distributed)


def one_line(error: BaseException) -> str:
  message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
  return " ".join(str(message).split())


def main(argv=None) -> int:
  try:
    run(parser().parse_args(argv))
  except (UsageError, *KNOWN_ERRORS) as e:
    print(f"error: {one_line(e)}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
