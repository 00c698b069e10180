"""The world's stand-in encoders: the tiny umT5 must encode word order."""

import numpy as np
import pytest

from sama_jax.encoders import build_encoders, encoders_config, host_arrays, local_bias, make_encode_fn
from sama_jax.models.umt5 import relative_position_buckets, umt5_config

PROMPTS = ["make the red circle blue", "make the blue circle red"]


def features(local):
  enc = build_encoders(encoders_config(text_len=8, world_text_local_bias=local, semantic="none"))
  blank = np.zeros((2, 1, 32, 32, 3), np.uint8)
  text = make_encode_fn(enc)(host_arrays(enc, {"instruction": PROMPTS, "target": blank}, ""))["text"]
  return np.asarray(text)


def cosine(a, b):
  return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize("local", [8.0, 0.0])
def test_world_text_features_tell_the_old_colour_from_the_new(local):
  text = features(local)
  # "red" is the old colour (position 2) in the first prompt and the new one (position 4)
  # in the second; the same for "blue" the other way round.
  same_word = [cosine(text[0, 2], text[1, 4]), cosine(text[0, 4], text[1, 2])]
  if local:
    assert max(same_word) < 0.8, same_word
  else:  # the plain random init averages the prompt: the two prompts are one set of features
    assert min(same_word) > 0.99, same_word


def test_local_bias_puts_each_heads_strength_on_its_neighbour():
  c = umt5_config(vocab_size=10, d_model=8, d_kv=2, num_heads=4, d_ff=8, num_layers=2, text_len=8)
  bias = local_bias(c, 5.0)
  assert bias.shape == (2, c.num_buckets, 4)
  buckets = relative_position_buckets(8, 8, c.num_buckets, c.max_distance)
  for head, offset in enumerate((-1, 1, -2, 2)):
    logits = bias[0][buckets[3], head]  # query at position 3, keys 0..7
    assert logits[3 + offset] == 5.0 and np.count_nonzero(logits) == 1
