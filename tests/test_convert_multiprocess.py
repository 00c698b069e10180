"""`python -m sama_jax.convert ... --distributed`: several processes convert one checkpoint.

2 processes x 2 CPU devices (gloo collectives) against one process. Bit-identity: every
conversion is a transpose or reshape of float32 data and sharding only splits arrays, so
the workdir and the exported tensors must have the same bits as a single-process run's.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from conftest import REPO  # noqa: E402
from torch_wan import tiny_diffusers_wan  # noqa: E402

from sama_jax.convert import names as N  # noqa: E402
from sama_jax.convert.__main__ import main  # noqa: E402
from sama_jax.convert.export_plan import export_plan, torch_shape  # noqa: E402
from sama_jax.convert.safetensors_io import DIFFUSERS_WEIGHTS, index_files, read_tensor  # noqa: E402
from sama_jax.convert.to_torch import to_torch  # noqa: E402
from sama_jax.train import checkpoint as ckpt  # noqa: E402

CONFIG_FILE = '''
import ml_collections
from sama_jax.config import model_config
from sama_jax.train.config import train_config

def get_config():
  c = ml_collections.ConfigDict()
  c.model = model_config(dim=64, ffn_dim=128, num_heads=2, num_layers=2, text_dim=32, freq_dim=32,
                         semantic_dim=32, semantic_hidden_dim=16, num_semantic_tokens=5)
  c.train = train_config(learning_rate=1e-5)
  return c
'''


def tensors_of(path):
  return {name: read_tensor(file, name) for name, file in index_files(path).items()}


def assert_trees_equal(a, b):
  flat_a, flat_b = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
  assert [p for p, _ in flat_a] == [p for p, _ in flat_b]
  for (path, x), (_, y) in zip(flat_a, flat_b):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype, jax.tree_util.keystr(path)
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


def free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def run_processes(args, log_stem, n=2):
  """`python -m sama_jax.convert ARGS --distributed` as n processes of 2 CPU devices each."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  port = free_port()
  procs = []
  for i in range(n):
    log = open(f"{log_stem}.{i}.log", "w")
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "sama_jax.convert", *args, "--distributed", "--coordinator", f"localhost:{port}",
         "--num-processes", str(n), "--process-id", str(i), "--cpu-collectives", "gloo"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
  return procs


def finish(procs, log_stem, timeout=300):
  codes = [p.wait(timeout=timeout) for p in procs]
  assert codes == [0] * len(procs), [open(f"{log_stem}.{i}.log").read()[-3000:] for i in range(len(procs))]


@pytest.fixture(scope="module")
def wan(tmp_path_factory):
  """(torch model, its diffusers folder, config file, the single-process workdir)."""
  root = tmp_path_factory.mktemp("multiproc")
  model = tiny_diffusers_wan(seed=11)
  model.save_pretrained(str(root / "wan"), safe_serialization=True)
  (root / "config.py").write_text(CONFIG_FILE)
  single = str(root / "single")
  assert main(["from-torch", "--dit", str(root / "wan"), "--config", str(root / "config.py"), "--out", single,
               "--no-progress"]) == 0
  return model, str(root / "wan"), str(root / "config.py"), single


def test_two_processes_convert_both_ways_like_one(wan, tmp_path):
  model, folder, config, single = wan
  multi = str(tmp_path / "multi")
  stem = str(tmp_path / "from")
  finish(run_processes(["from-torch", "--dit", folder, "--config", config, "--out", multi, "--no-progress"], stem),
         stem)
  # The whole step-0 state (params, EMA, optimizer, step) and the config, read by one process.
  single_run, multi_run = os.path.join(single, "checkpoints"), os.path.join(multi, "checkpoints")
  assert_trees_equal(ckpt.read_state(multi_run), ckpt.read_state(single_run))
  assert ckpt.read_config(multi_run) == ckpt.read_config(single_run)
  assert "DiT" not in open(f"{stem}.1.log").read()  # process 0 alone reports

  out = str(tmp_path / "export")
  stem = str(tmp_path / "to")
  finish(run_processes(["to-torch", "--checkpoint", multi, "--out", out, "--layout", "diffusers"], stem), stem)
  with open(os.path.join(out, DIFFUSERS_WEIGHTS + ".index.json")) as f:
    files = set(json.load(f)["weight_map"].values())
  assert len(files) == 2  # one file per process
  original = {k: v.numpy() for k, v in model.state_dict().items()}
  exported = tensors_of(out)
  assert set(original) <= set(exported)
  for name, x in original.items():
    assert exported[name].dtype == x.dtype and np.array_equal(exported[name], x), name
  assert {k.split(".")[0] for k in set(exported) - set(original)} == {
      "segment_embedding", "siglip_feat_mlp", "semantic_head"}

  from diffusers import WanTransformer3DModel
  loaded = WanTransformer3DModel.from_pretrained(out)
  for name, x in loaded.state_dict().items():
    assert np.array_equal(x.numpy(), original[name]), name


def test_streamed_export_matches_the_whole_model_writer(wan, tmp_path):
  """to-torch writes file by file; the files are those `save_torch_dit` writes from the
  whole model (same names, same cut points, same bits)."""
  from sama_jax.convert.dit import load_torch_dit, save_torch_dit

  _, folder, _, single = wan
  limit = 200_000  # several files for this 0.5 MB model
  streamed = to_torch(single, str(tmp_path / "streamed"), "diffusers", max_shard_bytes=limit, log=lambda _: None)
  model, mc = load_torch_dit(folder, load_config_model(wan[2]))
  whole = save_torch_dit(model, mc, str(tmp_path / "whole"), "diffusers", max_shard_bytes=limit)
  assert len(streamed) > 3
  assert sorted(os.listdir(tmp_path / "streamed")) == sorted(os.listdir(tmp_path / "whole"))
  for a, b in zip(sorted(streamed), sorted(whole)):
    x, y = tensors_of(a), tensors_of(b)
    assert x.keys() == y.keys()
    for name in x:
      assert np.array_equal(x[name], y[name]), name


def load_config_model(path):
  from sama_jax.config import load_config
  return load_config(path).model


def test_plan_balances_processes_and_places_every_tensor_once(tiny_config):
  from flax import nnx

  from sama_jax.convert.trees import flatten
  from sama_jax.models import SamaDiT

  shapes = {k: tuple(v.shape) for k, v in flatten(nnx.to_pure_dict(nnx.state(
      nnx.eval_shape(lambda: SamaDiT(tiny_config, nnx.Rngs(0))), nnx.Param))).items()}
  one, sama1 = export_plan(shapes, tiny_config.patch_size, "diffusers", 4, 2**40, processes=1)
  three, sama3 = export_plan(shapes, tiny_config.patch_size, "diffusers", 4, 2**40, processes=3)
  names = lambda shards: sorted(t.name for s in shards for t in s.tensors)
  assert names(one) == names(three) and len(set(names(three))) == len(names(three))
  assert [s.process for s in three] == [0, 1, 2] and sama3.process == 0
  loads = [sum(t.nbytes for t in s.tensors) for s in three]
  loads[0] += sum(t.nbytes for t in sama3.tensors)
  largest = max(sum(t.nbytes for t in s.tensors if t.rule.ours == ours) for s in three for ours in s.params)
  assert max(loads) - min(loads) <= largest  # greedy: no process is over by more than one unit
  for rule in N.DIT_RULES:  # the plan's sizes are those of the tensors written
    ours = np.zeros(shapes[rule.ours][1:] if rule.stacked else shapes[rule.ours], np.float32)
    assert torch_shape(rule.kind, ours.shape, tiny_config.patch_size) == N.to_torch(
        rule.kind, ours, tiny_config.patch_size).shape, rule.ours


def test_distributed_official_export_is_refused(wan, tmp_path):
  with pytest.raises(ValueError, match="diffusers layout only"):
    to_torch(wan[3], str(tmp_path / "x.safetensors"), "official", distributed=True)


def test_process_flags_without_distributed_are_refused(wan, tmp_path, capsys):
  assert main(["to-torch", "--checkpoint", wan[3], "--out", str(tmp_path / "x"), "--layout", "diffusers",
               "--process-id", "1"]) == 2
  assert "without --distributed" in capsys.readouterr().err
