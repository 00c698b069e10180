"""Project-level promises: CI runs the README's test command, configs load, and the
training/editing code never imports torch."""

import os
import re
import subprocess
import sys

import pytest

from conftest import REPO
from sama_jax.config import load_config


def readme_command(kind: str) -> str:
  with open(os.path.join(REPO, "README.md")) as f:
    text = f.read()
  match = re.search(rf"<!-- {kind} command -->\s*```(?:bash|sh)?\n(.+?)\n```", text)
  assert match, f"README.md has no marked {kind} command block"
  return match.group(1).strip()


def test_ci_runs_the_readme_test_command_verbatim():
  with open(os.path.join(REPO, ".ci", "run")) as f:
    lines = [l.strip() for l in f if l.strip() and not l.startswith("#")]
  assert readme_command("test") in lines


@pytest.mark.parametrize("name,dim,layers", [("tiny", 64, 2), ("wan1_3b", 1536, 30), ("wan14b", 5120, 40)])
def test_configs_load_with_published_shapes(name, dim, layers):
  config = load_config(os.path.join(REPO, "configs", f"{name}.py"))
  assert (config.model.dim, config.model.num_layers) == (dim, layers)


def test_missing_config_file_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    load_config(str(tmp_path / "nope.py"))


def test_library_imports_no_torch():
  code = ("import sys, pkgutil, importlib, sama_jax\n"
          "skip = ('sama_jax.convert.torch_to_safetensors',)\n"
          "for m in pkgutil.walk_packages(sama_jax.__path__, 'sama_jax.'):\n"
          "  if m.name not in skip and not m.name.endswith('__main__'): importlib.import_module(m.name)\n"
          "bad = [m for m in ('torch', 'diffusers') if m in sys.modules]\n"
          "assert not bad, bad\n")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(os.path.join(REPO, "configs")) if f.endswith(".py")))
def test_every_config_loads_and_opens_with_its_command(name):
  path = os.path.join(REPO, "configs", name)
  assert open(path).readline().startswith("#"), f"{name} should open with a comment saying how to run it"
  config = load_config(path)
  if "train" in config:  # training configs
    assert config.model.in_channels > 0 and config.train.total_steps > 0


def test_readme_demo_command_runs_the_demo():
  command = readme_command("demo")
  assert command.endswith("python -m sama_jax.demo") and "pip install" in command
