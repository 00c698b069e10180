"""The JAX umT5 encoder and SigLIP vision tower equal transformers' `UMT5EncoderModel` and
`SiglipVisionModel` on the same random weights, loaded through our converters; plus the
prompt path (cleaning, tokenizer, zero padding), SigLIP preprocessing and SAMA's semantic
tokens.

Tolerance: max |ours - ref| / max |ref| <= 1e-4 in float32. Both sides run float32 with
full-precision matmuls; what differs is summation order (and, for SigLIP, a patch
convolution computed as a matmul), orders of magnitude below 1e-4 at these sizes.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from conftest import rel_error  # noqa: E402

from sama_jax.convert import load_torch_siglip, load_torch_umt5  # noqa: E402
from sama_jax.convert.safetensors_io import write_file  # noqa: E402
from sama_jax.models.siglip import adaptive_pool_matrix, preprocess, semantic_tokens  # noqa: E402
from sama_jax.models.text import clean_text, encode_text, load_tokenizer, tokenize  # noqa: E402
from sama_jax.models.umt5 import relative_position_buckets  # noqa: E402

TOL = 1e-4
UMT5_SHAPES = dict(vocab_size=100, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2,
                   relative_attention_num_buckets=32, relative_attention_max_distance=128,
                   feed_forward_proj="gated-gelu")
SIGLIP_SHAPES = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                     patch_size=4, image_size=32)


def randomise(model, seed):
  """Every parameter random, norm weights around 1, so no tensor can be silently dropped."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=gen)
      if "norm" in name and name.endswith("weight"):
        p.copy_(1.0 + 0.2 * noise)
      elif name.endswith("shared.weight"):
        p.copy_(noise)
      else:
        p.copy_(noise * (0.5 / max(1, p.shape[-1]) ** 0.5 if p.ndim > 1 else 0.1))
  return model.eval()


def padded_ids(lengths, total, vocab=100, seed=0):
  """Batch of token ids [B, total] with right padding to the given true lengths."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(2, vocab, size=(len(lengths), total))
  mask = (np.arange(total)[None] < np.array(lengths)[:, None]).astype(np.int32)
  return np.where(mask == 1, ids, 0), mask


def umt5_reference(model, ids, mask):
  """transformers' encoder output, zeroed past each row's length as Wan does."""
  with torch.no_grad():
    out = model.encoder(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
  return out.last_hidden_state.numpy() * mask[..., None]


@pytest.fixture(scope="module")
def umt5_folder(tmp_path_factory):
  model = randomise(transformers.UMT5EncoderModel(transformers.UMT5Config(**UMT5_SHAPES)), seed=0)
  folder = tmp_path_factory.mktemp("umt5_encoder")
  model.save_pretrained(folder)
  return model, str(folder)


def test_relative_position_buckets_match_transformers():
  attn = transformers.models.umt5.modeling_umt5.UMT5Attention(
      transformers.UMT5Config(**UMT5_SHAPES), has_relative_attention_bias=True)
  rel = torch.arange(600)[None, :] - torch.arange(600)[:, None]  # past max_distance both ways
  ref = attn._relative_position_bucket(rel).numpy()
  np.testing.assert_array_equal(relative_position_buckets(600, 600, 32, 128), ref)


def test_umt5_encoder_matches_transformers_with_padding(umt5_folder):
  torch_model, folder = umt5_folder
  model, config = load_torch_umt5(folder)
  assert (config.d_model, config.num_layers, config.num_heads, config.d_kv) == (32, 2, 4, 8)
  ids, mask = padded_ids([40, 13], 40)  # 40 tokens reach the logarithmic buckets
  ref = umt5_reference(torch_model, ids, mask)
  ours = jax.jit(lambda i, m: model(i, m))(ids, mask)
  assert ours.shape == ref.shape == (2, 40, 32) and ours.dtype == jnp.float32
  assert rel_error(ours, ref) <= TOL
  assert not np.asarray(ours)[1, 13:].any()


def test_umt5_loop_execution_and_bfloat16(umt5_folder):
  """Layers as a Python loop give the same result; bf16 compute stays within bf16 error."""
  torch_model, folder = umt5_folder
  ids, mask = padded_ids([9, 16], 16, seed=1)
  ref = umt5_reference(torch_model, ids, mask)
  looped, _ = load_torch_umt5(folder, scan_layers=False)
  assert rel_error(looped(ids, mask), ref) <= TOL
  bf16, _ = load_torch_umt5(folder, dtype="bfloat16")
  assert rel_error(bf16(ids, mask), ref) <= 5e-2  # 8-bit mantissa through two layers


def test_full_umt5_model_sharded_ignores_decoder(tmp_path):
  """A full UMT5Model saved in shards (model.safetensors.index.json): decoder ignored."""
  torch_model = randomise(transformers.UMT5Model(transformers.UMT5Config(**UMT5_SHAPES)), seed=1)
  torch_model.save_pretrained(tmp_path, max_shard_size="40KB")
  assert (tmp_path / "model.safetensors.index.json").is_file()
  model, _ = load_torch_umt5(str(tmp_path))
  ids, mask = padded_ids([11, 20], 20, seed=2)
  assert rel_error(model(ids, mask), umt5_reference(torch_model, ids, mask)) <= TOL


def test_umt5_reads_tied_embedding_name_and_rejects_unknown_tensors(umt5_folder, tmp_path):
  _, folder = umt5_folder
  file = f"{folder}/model.safetensors"
  from safetensors import safe_open
  with safe_open(file, framework="numpy") as f:
    tensors = {name: f.get_tensor(name) for name in f.keys()}
  (tmp_path / "config.json").write_text(open(f"{folder}/config.json").read())
  renamed = dict(tensors)
  renamed["encoder.embed_tokens.weight"] = renamed.pop("shared.weight")
  write_file(renamed, str(tmp_path / "model.safetensors"))
  model, _ = load_torch_umt5(str(tmp_path))
  np.testing.assert_array_equal(np.asarray(model.embedding[...]), tensors["shared.weight"])

  write_file({**tensors, "encoder.adapter.weight": np.zeros((2, 2), np.float32)},
             str(tmp_path / "model.safetensors"))
  with pytest.raises(ValueError, match="encoder.adapter.weight"):
    load_torch_umt5(str(tmp_path))


def test_umt5_rejects_plain_t5_config(umt5_folder, tmp_path):
  _, folder = umt5_folder
  config = json.load(open(f"{folder}/config.json"))
  (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "t5"}))
  with pytest.raises(ValueError, match="expected 'umt5'"):
    load_torch_umt5(str(tmp_path))


# --- prompts -------------------------------------------------------------------------------

def tiny_tokenizer_folder(path):
  """A word-level tokenizer with umT5's conventions (pad 0, EOS 1 appended), saved locally."""
  from tokenizers import Tokenizer, models, pre_tokenizers, processors
  words = ["<pad>", "</s>", "<unk>", "a", "b", "c", "&", "snow", "[", "]", "video", "edit"]
  tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
  fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                              unk_token="<unk>")
  fast.save_pretrained(path)
  return str(path)


def test_clean_text_unescapes_twice_and_collapses_whitespace():
  assert clean_text("  a&amp;amp;b \n\t c  ") == "a&b c"


def test_tokenize_appends_eos_pads_and_truncates(tmp_path):
  tokenizer = load_tokenizer(tiny_tokenizer_folder(tmp_path))
  ids, mask = tokenize(tokenizer, ["a  b&amp;amp;c", "snow " * 20], text_len=8)
  np.testing.assert_array_equal(ids, [[3, 4, 6, 5, 1, 0, 0, 0], [7, 7, 7, 7, 7, 7, 7, 1]])
  np.testing.assert_array_equal(mask, [[1, 1, 1, 1, 1, 0, 0, 0], [1] * 8])


def test_encode_text_is_zero_past_each_prompt(tmp_path, umt5_folder):
  torch_model, folder = umt5_folder
  tokenizer = load_tokenizer(tiny_tokenizer_folder(tmp_path))
  model, _ = load_torch_umt5(folder, text_len=12)
  text = encode_text(tokenizer, model, ["[video edit] a snow", "b"])
  assert text.shape == (2, 12, 32)
  ids, mask = tokenize(tokenizer, ["[video edit] a snow", "b"], text_len=12)
  assert mask.sum(1).tolist() == [7, 2]
  assert rel_error(text, umt5_reference(torch_model, ids, mask)) <= TOL
  assert not np.asarray(text)[0, 7:].any() and not np.asarray(text)[1, 2:].any()


def test_missing_tokenizer_folder_or_files_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    load_tokenizer(str(tmp_path / "umt5-xxl"))
  (tmp_path / "config.json").write_text("{}")
  with pytest.raises(FileNotFoundError, match="tokenizer.json or spiece.model"):
    load_tokenizer(str(tmp_path))


# --- SigLIP --------------------------------------------------------------------------------

def siglip_reference(model, pixels):
  with torch.no_grad():
    out = model(pixel_values=torch.from_numpy(np.moveaxis(pixels, -1, 1)))
  pooled = None if out.pooler_output is None else out.pooler_output.numpy()
  return out.last_hidden_state.numpy(), pooled


def random_pixels(batch, size, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)


@pytest.mark.parametrize("use_head,image_size", [(True, 32), (False, 30)])  # 30: the conv drops 2 px
def test_siglip_vision_model_matches_transformers(tmp_path, use_head, image_size):
  torch_model = randomise(transformers.SiglipVisionModel(transformers.SiglipVisionConfig(
      **{**SIGLIP_SHAPES, "image_size": image_size, "vision_use_head": use_head})), seed=2)
  torch_model.save_pretrained(tmp_path)
  model, config = load_torch_siglip(str(tmp_path))
  assert config.use_head == use_head and config.image_size == image_size
  pixels = random_pixels(2, image_size)
  ref_hidden, ref_pooled = siglip_reference(torch_model, pixels)
  hidden, pooled = jax.jit(lambda x: model(x))(pixels)
  assert hidden.shape == ref_hidden.shape == (2, 49 if image_size == 30 else 64, 32)
  assert rel_error(hidden, ref_hidden) <= TOL
  if use_head:
    assert pooled.shape == (2, 32) and rel_error(pooled, ref_pooled) <= TOL
  else:
    assert pooled is None


def test_full_siglip_model_ignores_text_tower(tmp_path):
  vision = {**SIGLIP_SHAPES, "image_size": 28}
  text = dict(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
              max_position_embeddings=8, bos_token_id=None, eos_token_id=None, pad_token_id=1)
  torch_model = randomise(transformers.SiglipModel(transformers.SiglipConfig(vision_config=vision,
                                                                             text_config=text)), seed=3)
  torch_model.save_pretrained(tmp_path)
  model, config = load_torch_siglip(str(tmp_path), semantic_grid=3, global_token="pooler")
  pixels = random_pixels(2, 28, seed=1)
  ref_hidden, ref_pooled = siglip_reference(torch_model.vision_model, pixels)
  hidden, pooled = model(pixels)
  assert rel_error(hidden, ref_hidden) <= TOL and rel_error(pooled, ref_pooled) <= TOL
  tokens = model.semantic(pixels)
  assert tokens.shape == (2, 3 * 3 + 1, 32)
  np.testing.assert_allclose(tokens[:, -1], ref_pooled, rtol=1e-4, atol=1e-5)
  without_head, _ = load_torch_siglip(str(tmp_path), use_head=False)  # the head is dropped on request
  assert without_head.head is None


def test_siglip_rejects_wrong_pixel_shape(tmp_path):
  transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**SIGLIP_SHAPES)).save_pretrained(tmp_path)
  model, _ = load_torch_siglip(str(tmp_path))
  with pytest.raises(ValueError, match=r"pixels \[B, 32, 32, 3\]"):
    model(np.zeros((1, 3, 32, 32), np.float32))


def test_semantic_tokens_pool_row_major_then_global_mean_last():
  """27 x 27 patches (so400m at 384 px) -> 8 x 8 local tokens, row-major, then the mean."""
  rng = np.random.default_rng(0)
  hidden = rng.standard_normal((2, 27 * 27, 5)).astype(np.float32)
  cells = hidden.reshape(2, 27, 27, 5)
  want = []
  for i in range(8):
    for j in range(8):  # torch adaptive_avg_pool2d bins: [floor(i n / g), ceil((i + 1) n / g))
      rows = slice(i * 27 // 8, -(-(i + 1) * 27 // 8))
      cols = slice(j * 27 // 8, -(-(j + 1) * 27 // 8))
      want.append(cells[:, rows, cols].mean(axis=(1, 2)))
  want.append(hidden.mean(axis=1))
  want = np.stack(want, axis=1)
  tokens = np.asarray(semantic_tokens(jnp.asarray(hidden), grid=8))
  assert tokens.shape == (2, 65, 5)
  np.testing.assert_allclose(tokens, want, rtol=1e-5, atol=1e-6)
  pooled = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(cells).permute(0, 3, 1, 2), 8)
  np.testing.assert_allclose(tokens[:, :64], pooled.flatten(2).transpose(1, 2).numpy(), rtol=1e-5, atol=1e-6)
  assert np.allclose(adaptive_pool_matrix(27, 8).sum(1), 1.0)


def test_semantic_tokens_errors():
  with pytest.raises(ValueError, match="not a square"):
    semantic_tokens(jnp.zeros((1, 10, 4)))
  with pytest.raises(ValueError, match="pooled"):
    semantic_tokens(jnp.zeros((1, 16, 4)), grid=2, global_token="pooler")


@pytest.mark.parametrize("height,width,size", [(50, 70, 24), (20, 20, 32), (96, 160, 48)])
def test_preprocess_matches_hf_pil_processor(height, width, size):
  """Ours vs the HF SigLIP processor (PIL bicubic; no torchvision here) on random noise,
  the hardest input for an interpolator: at most one 8-bit level apart (2/255 in [-1, 1]
  units), on under 1% of pixels (measured: 0 to 0.2% here, <= 0.05% from 200x300 ..
  720x1280 to 384; PIL's fixed-point weights round some ties the other way). A single
  float bicubic pass without PIL's 8-bit intermediate image would be up to ~20 levels off
  where the cubic overshoots."""
  frames = np.random.default_rng(0).integers(0, 256, (2, height, width, 3), dtype=np.uint8)
  # transformers 5 names the PIL processor ...Pil; in 4.x SiglipImageProcessor is PIL-based.
  processor_class = (getattr(transformers, "SiglipImageProcessorPil", None)
                     or transformers.SiglipImageProcessor)
  processor = processor_class(size={"height": size, "width": size})
  ref = np.moveaxis(processor(list(frames), return_tensors="np")["pixel_values"], 1, -1)
  ours = np.asarray(preprocess(jnp.asarray(frames), size=size))
  assert ours.shape == ref.shape == (2, size, size, 3)
  levels = np.abs(ours - ref) * 255 / 2
  assert levels.max() <= 1 + 1e-3
  assert (levels > 0.5).mean() <= 1e-2
  with pytest.raises(ValueError, match="uint8"):
    preprocess(jnp.zeros((1, 8, 8, 3)), size=4)
