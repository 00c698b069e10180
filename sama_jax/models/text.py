"""Prompts to umT5 embeddings, as Wan2.1 and SAMA prepare them (SAMA_METHOD.md §6.4).

    tokenizer = load_tokenizer("umt5-xxl")          # a local google/umt5-xxl tokenizer folder
    text = encode_text(tokenizer, umt5, ["[Video edit] make it snow"])   # [1, 512, 4096]

Each prompt is cleaned (ftfy's fix when ftfy is installed, HTML-unescaped twice,
whitespace collapsed and stripped), tokenized with EOS, truncated and padded to
`text_len`, encoded, and zeroed past its true length. Tokenization runs on the host.
"""

from __future__ import annotations

import html
import importlib.util
import os
import re

import jax
import jax.numpy as jnp
import numpy as np

# A transformers tokenizer folder has a vocabulary in one of these forms ...
TOKENIZER_VOCAB_FILES = ("tokenizer.json", "spiece.model")
# ... and tokenizer_config.json naming the tokenizer class and special tokens.
TOKENIZER_CONFIG = "tokenizer_config.json"


def load_tokenizer(path: str):
  """A transformers tokenizer from a local folder (e.g. google/umt5-xxl downloaded).

  Raises FileNotFoundError naming what is missing: the folder, or its tokenizer files
  (tokenizer.json or spiece.model, plus tokenizer_config.json).
  """
  needed = f"{' or '.join(TOKENIZER_VOCAB_FILES)}, plus {TOKENIZER_CONFIG}"
  if not os.path.isdir(path):
    raise FileNotFoundError(f"tokenizer folder {path!r} does not exist; expected a local folder "
                            f"holding {needed} (e.g. the google/umt5-xxl tokenizer)")
  present = set(os.listdir(path))
  if not present & set(TOKENIZER_VOCAB_FILES) or TOKENIZER_CONFIG not in present:
    raise FileNotFoundError(f"tokenizer folder {path!r} lacks tokenizer files: it needs {needed}; "
                            f"it holds {sorted(present)[:10]}")
  from transformers import AutoTokenizer
  return AutoTokenizer.from_pretrained(path)


def clean_text(text: str) -> str:
  """Wan's prompt cleaning: ftfy.fix_text (skipped if ftfy is not installed), HTML-unescape
  twice (prompts scraped from the web are often escaped twice), collapse whitespace, strip."""
  if importlib.util.find_spec("ftfy") is not None:
    import ftfy
    text = ftfy.fix_text(text)
  text = html.unescape(html.unescape(text))
  return re.sub(r"\s+", " ", text).strip()


def tokenize(tokenizer, prompts, text_len: int = 512) -> tuple[np.ndarray, np.ndarray]:
  """Cleaned prompts -> (input_ids [B, text_len] int32, attention_mask [B, text_len] int32),
  with EOS appended, truncated and padded to exactly text_len."""
  if isinstance(prompts, str):
    prompts = [prompts]
  if not prompts or not all(isinstance(p, str) for p in prompts):
    raise ValueError(f"prompts must be a string or a non-empty list of strings; got {prompts!r:.200}")
  batch = tokenizer([clean_text(p) for p in prompts], padding="max_length", truncation=True,
                    max_length=text_len, add_special_tokens=True, return_attention_mask=True,
                    return_tensors="np")
  return batch["input_ids"].astype(np.int32), batch["attention_mask"].astype(np.int32)


def encode_text(tokenizer, umt5, prompts, text_len: int | None = None) -> jax.Array:
  """prompts (a string or list of B strings) -> umT5 embeddings [B, text_len, D] float32,
  exact zeros past each prompt's length. text_len defaults to umt5.config.text_len (512)."""
  ids, mask = tokenize(tokenizer, prompts, text_len or umt5.config.text_len)
  return umt5(jnp.asarray(ids), jnp.asarray(mask))


def word_tokenizer(words, folder: str):
  """A word-level tokenizer (lower-cased; words and punctuation split apart) over `words`,
  saved to `folder` as a transformers tokenizer and loaded back. Ids: 0 <pad>, 1 </s>,
  2 <unk>, then the words. The synthetic world's stand-in for the umT5 tokenizer."""
  from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
  from transformers import PreTrainedTokenizerFast

  vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
  for word in sorted({w.lower() for text in words for w in re.findall(r"\w+|[^\w\s]+", text)}):
    vocab.setdefault(word, len(vocab))
  tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  tok.normalizer = normalizers.Lowercase()
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
  PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                          unk_token="<unk>").save_pretrained(folder)
  return load_tokenizer(folder)
