"""`python -m sama_jax.convert`: PyTorch -> trainer workdir -> PyTorch, the official key set,
loading the converted workdir for editing and training, encoders, pickles and errors.

Bit-identity: every conversion is a transpose or reshape of float32 data, so a round trip
must give the same bits. Forward parity: 1e-4 relative in float32, as tests/test_dit_parity.py.
"""

import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from conftest import REPO, rel_error  # noqa: E402
from torch_wan import official_state_dict, run_diffusers, tiny_diffusers_wan  # noqa: E402

from sama_jax.config import load_config, model_config  # noqa: E402
from sama_jax.convert.__main__ import main  # noqa: E402
from sama_jax.convert.safetensors_io import index_files, read_tensor  # noqa: E402
from sama_jax.train import checkpoint as ckpt  # noqa: E402

TOL = 1e-4
CONFIG_FILE = '''
import ml_collections
from sama_jax.config import model_config
from sama_jax.edit import edit_config
from sama_jax.train.config import train_config

def get_config():
  c = ml_collections.ConfigDict()
  {model}
  c.train = train_config(learning_rate=1e-5)
  c.edit = edit_config(steps=3)
  return c
'''
# The tiny diffusers Wan of tests/torch_wan.py, with small SAMA modules.
TINY = dict(dim=64, ffn_dim=128, num_heads=2, num_layers=2, text_dim=32, freq_dim=32, semantic_dim=32,
            semantic_hidden_dim=16, num_semantic_tokens=5)


def config_file(folder, model=None):
  path = os.path.join(folder, "config.py")
  line = f"c.model = model_config(**{model!r})" if model else "pass"
  with open(path, "w") as f:
    f.write(CONFIG_FILE.replace("{model}", line))
  return path


def tensors_of(path):
  return {name: read_tensor(file, name) for name, file in index_files(path).items()}


def params_of(model):
  return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def assert_trees_equal(a, b):
  flat_a, flat_b = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
  assert [p for p, _ in flat_a] == [p for p, _ in flat_b]
  for (path, x), (_, y) in zip(flat_a, flat_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  """A random tiny diffusers Wan, its folder, and the workdir from-torch made of it."""
  root = str(tmp_path_factory.mktemp("cli"))
  torch_model = tiny_diffusers_wan(seed=7)
  torch_model.save_pretrained(os.path.join(root, "wan"), safe_serialization=True)
  workdir = os.path.join(root, "run")
  code = main(["from-torch", "--dit", os.path.join(root, "wan"), "--config", config_file(root, TINY),
               "--out", workdir, "--no-progress"])
  assert code == 0
  return torch_model, os.path.join(root, "wan"), workdir


def test_diffusers_round_trip_is_bit_identical(converted, tmp_path):
  torch_model, _, workdir = converted
  assert main(["to-torch", "--checkpoint", workdir, "--out", str(tmp_path / "out"), "--layout", "diffusers"]) == 0
  original = {k: v.numpy() for k, v in torch_model.state_dict().items()}
  main_file = tensors_of(str(tmp_path / "out" / "diffusion_pytorch_model.safetensors"))
  assert main_file.keys() == original.keys()  # diffusers' own tensors only
  for name, x in original.items():
    assert main_file[name].dtype == x.dtype and np.array_equal(main_file[name], x), name
  sama = tensors_of(str(tmp_path / "out" / "sama_modules.safetensors"))
  assert {k.split(".")[0] for k in sama} == {"segment_embedding", "siglip_feat_mlp", "semantic_head"}
  assert not sama["segment_embedding.weight"].any()  # a plain Wan starts with a zero type embedding


def test_exported_folder_loads_in_diffusers_and_matches_our_forward(converted, tmp_path):
  from diffusers import WanTransformer3DModel

  from sama_jax.edit import load_bundle

  _, _, workdir = converted
  assert main(["to-torch", "--checkpoint", workdir, "--out", str(tmp_path / "out"), "--layout", "diffusers",
               "--dtype", "float32"]) == 0
  reference = WanTransformer3DModel.from_pretrained(str(tmp_path / "out")).eval()
  model = load_bundle(workdir).model
  rng = np.random.default_rng(0)
  latents = rng.standard_normal((2, 3, 4, 6, 16)).astype(np.float32)
  timestep = np.array([10.0, 700.0], np.float32)
  text = rng.standard_normal((2, 5, 32)).astype(np.float32)
  ours, _ = model(latents, timestep, text)
  assert rel_error(ours, run_diffusers(reference, latents, timestep, text)) <= TOL


def official_key_shapes(dim, ffn, layers, text_dim, freq_dim, channels, patch, semantic, hidden):
  """Every tensor of an official SAMA DiT checkpoint, from SAMA_METHOD.md §6.1 and §2.1."""
  linear = lambda name, out, inp: {f"{name}.weight": (out, inp), f"{name}.bias": (out,)}
  keys = {"patch_embedding.weight": (dim, channels, *patch), "patch_embedding.bias": (dim,),
          **linear("text_embedding.0", dim, text_dim), **linear("text_embedding.2", dim, dim),
          **linear("time_embedding.0", dim, freq_dim), **linear("time_embedding.2", dim, dim),
          **linear("time_projection.1", 6 * dim, dim),
          **linear("head.head", channels * int(np.prod(patch)), dim), "head.modulation": (1, 2, dim),
          "segment_embedding.weight": (3, dim),
          "siglip_feat_mlp.norm.weight": (semantic,), "siglip_feat_mlp.norm.bias": (semantic,),
          **linear("siglip_feat_mlp.fc1", hidden, semantic), **linear("siglip_feat_mlp.fc2", dim, hidden),
          "semantic_head.norm.weight": (dim,), "semantic_head.norm.bias": (dim,),
          **linear("semantic_head.proj", semantic, dim)}
  for i in range(layers):
    for attn in ("self_attn", "cross_attn"):
      for proj in "qkvo":
        keys.update(linear(f"blocks.{i}.{attn}.{proj}", dim, dim))
      keys[f"blocks.{i}.{attn}.norm_q.weight"] = keys[f"blocks.{i}.{attn}.norm_k.weight"] = (dim,)
    keys.update({f"blocks.{i}.norm3.weight": (dim,), f"blocks.{i}.norm3.bias": (dim,),
                 **linear(f"blocks.{i}.ffn.0", ffn, dim), **linear(f"blocks.{i}.ffn.2", dim, ffn),
                 f"blocks.{i}.modulation": (1, 6, dim)})
  return keys


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A trainer-style workdir (step 5) whose EMA differs from its raw parameters."""
  from sama_jax.parallel.mesh import make_mesh, mesh_config
  from sama_jax.train.config import train_config
  from sama_jax.train.state import create_train_state

  root = tmp_path_factory.mktemp("trained")
  config = load_config(config_file(str(root), {**TINY, "num_layers": 3, "semantic_dim": 40}))
  mc = mesh_config(data=1)
  _, _, state, _ = create_train_state(config.model, train_config(), make_mesh(mc, jax.devices()[:1]), mc.rules)
  state["ema"] = jax.tree.map(lambda x: x + 1.0, state["ema"])
  manager = ckpt.checkpoint_manager(str(root / "run" / "checkpoints"), async_save=False)
  ckpt.save(manager, 5, state, config.to_dict(), {})
  manager.wait_until_finished()
  return str(root / "run"), state


def test_official_export_has_exactly_the_official_keys_and_shapes(trained, tmp_path):
  workdir, state = trained
  out = str(tmp_path / "sama.safetensors")
  assert main(["to-torch", "--checkpoint", workdir, "--out", out, "--layout", "official"]) == 0
  tensors = tensors_of(out)
  expected = official_key_shapes(dim=64, ffn=128, layers=3, text_dim=32, freq_dim=32, channels=16,
                                 patch=(1, 2, 2), semantic=40, hidden=16)
  assert sorted(tensors) == sorted(expected)
  assert {k: tensors[k].shape for k in tensors} == expected
  ema = np.asarray(state["ema"]["segment_embedding"])  # EMA by default
  np.testing.assert_array_equal(tensors["segment_embedding.weight"], ema)


def test_no_ema_exports_the_raw_parameters_in_bfloat16(trained, tmp_path):
  workdir, state = trained
  out = str(tmp_path / "raw.safetensors")
  assert main(["to-torch", "--checkpoint", workdir, "--out", out, "--layout", "official", "--no-ema",
               "--dtype", "bfloat16"]) == 0
  x = tensors_of(out)["semantic_head.proj.bias"]
  assert str(x.dtype) == "bfloat16"
  raw = np.asarray(state["params"]["semantic_head"]["proj"]["bias"])
  np.testing.assert_allclose(x.astype(np.float32), raw, rtol=2 ** -8)


def test_workdir_loads_for_editing_and_as_init_from(converted):
  from sama_jax.convert import load_torch_dit
  from sama_jax.edit import load_bundle
  from sama_jax.parallel.mesh import make_mesh, mesh_config
  from sama_jax.train.state import create_train_state

  _, folder, workdir = converted
  direct, _ = load_torch_dit(folder, model_config(**TINY))
  bundle = load_bundle(workdir)
  assert_trees_equal(params_of(bundle.model), params_of(direct))
  assert bundle.config.edit.steps == 3  # the config file's edit section rides along

  saved = ckpt.read_config(os.path.join(workdir, "checkpoints"))
  assert {"model", "encoders", "train", "edit"} <= set(saved) and saved["train"]["learning_rate"] == 1e-5
  config = load_config(os.path.join(os.path.dirname(workdir), "config.py"))
  mc = mesh_config(data=1)
  mesh = make_mesh(mc, jax.devices()[:1])
  _, _, fresh, shardings = create_train_state(config.model, config.train, mesh, mc.rules)
  for use_ema in (True, False):  # what --init_from reads
    params = ckpt.restore_params(os.path.join(workdir, "checkpoints"), fresh["params"], shardings["params"],
                                 use_ema=use_ema)
    assert_trees_equal(params, params_of(direct))
  # A run resuming in this workdir restores the whole state: step 0 and the optimizer a fresh run has.
  like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), fresh)
  state, _, _ = ckpt.restore(ckpt.checkpoint_manager(os.path.join(workdir, "checkpoints")), like, shardings)
  assert int(state["step"]) == 0
  assert_trees_equal(state["opt_state"], fresh["opt_state"])


def tiny_umt5(path, pickled=False):
  """A random umT5 encoder of width 32 (weights in model.safetensors, or pickled in
  pytorch_model.bin) and a word-level tokenizer for it, in two folders."""
  from tokenizers import Tokenizer, models, pre_tokenizers

  model = transformers.UMT5EncoderModel(transformers.UMT5Config(vocab_size=16, d_model=32, d_kv=8, num_heads=4,
                                                                d_ff=64, num_layers=1))
  model.save_pretrained(path)
  if pickled:
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, os.path.join(path, "pytorch_model.bin"))
    os.remove(os.path.join(path, "model.safetensors"))
  words = ["<pad>", "</s>", "<unk>", "[Video", "edit]", "make", "it", "red"]
  tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                       unk_token="<unk>").save_pretrained(path + "_tokenizer")
  return path, path + "_tokenizer"


def tiny_encoders(root):
  """Random tiny Wan VAE (4 latent channels), umT5 (width 32) + tokenizer, SigLIP (width 32)."""
  from diffusers import AutoencoderKLWan

  paths = {k: os.path.join(root, k) for k in ("vae", "umt5", "siglip")}
  AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1, latents_mean=[0.0] * 4,
                   latents_std=[1.0] * 4).save_pretrained(paths["vae"])
  paths["umt5"], paths["tokenizer"] = tiny_umt5(paths["umt5"])
  transformers.SiglipVisionModel(transformers.SiglipVisionConfig(
      hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, patch_size=4,
      image_size=32)).save_pretrained(paths["siglip"])
  return paths


def test_encoders_are_built_checked_and_recorded(tmp_path):
  from sama_jax.edit import load_bundle
  from sama_jax.encoders import build_encoders

  tiny_diffusers_wan(seed=2, in_channels=4, out_channels=4).save_pretrained(tmp_path / "wan")
  paths = tiny_encoders(str(tmp_path))
  args = ["from-torch", "--dit", str(tmp_path / "wan"), "--vae", paths["vae"], "--text-encoder", paths["umt5"],
          "--tokenizer", paths["tokenizer"], "--siglip", paths["siglip"], "--no-progress"]
  model = {**TINY, "in_channels": 4, "out_channels": 4}
  assert main(args + ["--config", config_file(str(tmp_path), model), "--out", str(tmp_path / "run")]) == 0
  encoders = ckpt.read_config(str(tmp_path / "run" / "checkpoints"))["encoders"]
  assert (encoders["codec"], encoders["text"], encoders["semantic"]) == ("wan_vae", "umt5", "siglip")
  assert encoders["vae_path"] == os.path.abspath(paths["vae"]) and encoders["siglip_path"] == os.path.abspath(
      paths["siglip"])
  bundle = load_bundle(str(tmp_path / "run"))  # the recorded paths build the real encoders ...
  assert (bundle.encoders.latent_channels, bundle.encoders.text_dim, bundle.encoders.semantic_dim) == (4, 32, None)
  assert build_encoders(bundle.config.encoders).semantic_dim == 32  # ... SigLIP only for training, not editing

  wide = {**model, "semantic_dim": 48}  # SigLIP is 32 wide
  os.makedirs(tmp_path / "wide")
  code = main(args + ["--config", config_file(str(tmp_path / "wide"), wide), "--out", str(tmp_path / "run2")])
  assert code == 2


def test_pickle_needs_allow_pickle(converted, tmp_path, capsys):
  torch_model, _, _ = converted
  pth = str(tmp_path / "wan.pth")
  torch.save(torch_model.state_dict(), pth)
  config = config_file(str(tmp_path), TINY)
  args = ["from-torch", "--dit", pth, "--config", config, "--no-progress"]
  assert main(args + ["--out", str(tmp_path / "refused")]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "--allow-pickle" in err and "sama_jax.convert.torch_to_safetensors" in err
  assert not os.path.exists(tmp_path / "refused" / "checkpoints")

  assert main(args + ["--out", str(tmp_path / "run"), "--allow-pickle"]) == 0
  assert "warning" in capsys.readouterr().err
  state = ckpt.read_state(str(tmp_path / "run" / "checkpoints"))
  kernel = state["params"]["dit"]["condition_embedder"]["time_proj"]["kernel"]
  np.testing.assert_array_equal(np.asarray(kernel), torch_model.condition_embedder.time_proj.weight.detach().numpy().T)


def test_pickled_encoder_folder_is_converted_into_the_workdir(converted, tmp_path, capsys):
  _, folder, _ = converted
  umt5, tokenizer = tiny_umt5(str(tmp_path / "umt5"), pickled=True)
  args = ["from-torch", "--dit", folder, "--text-encoder", umt5, "--tokenizer", tokenizer,
          "--config", config_file(str(tmp_path), TINY), "--no-progress"]
  assert main(args + ["--out", str(tmp_path / "refused")]) == 2
  assert "--text-encoder" in capsys.readouterr().err
  assert main(args + ["--out", str(tmp_path / "run"), "--allow-pickle"]) == 0
  path = ckpt.read_config(str(tmp_path / "run" / "checkpoints"))["encoders"]["umt5_path"]
  assert path.startswith(str(tmp_path / "run" / "converted_inputs"))
  assert os.path.isfile(os.path.join(path, "model.safetensors"))


def test_missing_and_unexpected_keys_are_tabled(converted, tmp_path, capsys):
  torch_model, _, _ = converted
  from sama_jax.convert.safetensors_io import write_file

  tensors = official_state_dict(torch_model)
  write_file(tensors, str(tmp_path / "plain.safetensors"))
  config = config_file(str(tmp_path), TINY)
  assert main(["from-torch", "--dit", str(tmp_path / "plain.safetensors"), "--config", config,
               "--out", str(tmp_path / "a"), "--no-progress"]) == 0
  out = capsys.readouterr().out
  assert re.search(r"missing\s+siglip_feat_mlp\s+6\s+random init", out), out
  tensors["img_emb.proj.0.weight"] = np.zeros((2, 2), np.float32)  # an image-to-video Wan's
  write_file(tensors, str(tmp_path / "i2v.safetensors"))
  assert main(["from-torch", "--dit", str(tmp_path / "i2v.safetensors"), "--config", config,
               "--out", str(tmp_path / "b"), "--no-progress"]) == 2
  captured = capsys.readouterr()
  assert re.search(r"unexpected\s+img_emb.proj.0.weight", captured.out)
  assert "img_emb.proj.0.weight" in captured.err


@pytest.mark.parametrize("case,message", [
    ("missing_dit", "--dit .* does not exist"),
    ("config_mismatch", "does not match the checkpoint"),
    ("existing_out", "already holds checkpoints"),
    ("bad_layout", "invalid choice: 'pytorch'"),
    ("not_a_workdir", "not a trainer workdir"),
    ("official_not_a_file", "ending in .safetensors"),
    ("no_ema", "no EMA parameters"),
])
def test_bad_input_is_one_line_and_exit_code_2(converted, tmp_path, capsys, case, message):
  _, folder, workdir = converted
  config = config_file(str(tmp_path), TINY)
  os.makedirs(tmp_path / "other")
  mismatch = config_file(str(tmp_path / "other"), {**TINY, "ffn_dim": 96})
  out = str(tmp_path / "out")
  args = {
      "missing_dit": ["from-torch", "--dit", str(tmp_path / "none"), "--config", config, "--out", out],
      "config_mismatch": ["from-torch", "--dit", folder, "--config", mismatch, "--out", out],
      "existing_out": ["from-torch", "--dit", folder, "--config", config, "--out", workdir],
      "bad_layout": ["to-torch", "--checkpoint", workdir, "--out", out, "--layout", "pytorch"],
      "not_a_workdir": ["to-torch", "--checkpoint", folder, "--out", out, "--layout", "diffusers"],
      "official_not_a_file": ["to-torch", "--checkpoint", workdir, "--out", out, "--layout", "official"],
      "no_ema": None,
  }[case]
  if case == "no_ema":
    run = tmp_path / "noema"
    os.makedirs(run)
    with open(run / "config.py", "w") as f:
      f.write(open(config).read().replace("learning_rate=1e-5", "learning_rate=1e-5, ema_decay=0.0"))
    assert main(["from-torch", "--dit", folder, "--config", str(run / "config.py"), "--out", str(run / "w"),
                 "--no-progress"]) == 0
    capsys.readouterr()
    args = ["to-torch", "--checkpoint", str(run / "w"), "--out", out, "--layout", "diffusers", "--ema"]
  assert main(args + (["--no-progress"] if args[0] == "from-torch" else [])) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and err.startswith("error:"), err
  assert re.search(message, err), err


def test_cli_process_exits_2_without_traceback(tmp_path):
  result = subprocess.run([sys.executable, "-m", "sama_jax.convert", "to-torch", "--checkpoint",
                           str(tmp_path / "none"), "--out", str(tmp_path / "o"), "--layout", "diffusers"],
                          capture_output=True, text=True, cwd=REPO)
  assert result.returncode == 2
  assert "Traceback" not in result.stderr and result.stderr.startswith("error:"), result.stderr
