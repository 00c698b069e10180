"""Precomputed training records: what `python -m sama_jax.precompute` stores for an edit
example (image_edit, video_edit), and the random-access source that reads it back.

On disk (one `records.encode_record` dict per ArrayRecord record):

  "latents":        float [T', h, w, C]   target latents (the codec's encode)
  "source_latents": float [Ts', h, w, C]  source latents (absent when the example has none)
  "text":           float [n, D]          umT5 embeddings of the n real tokens only
  "text_len":       int                   L, the padded length the encoder ran at
  "semantic":       float [N, D_sem]      SigLIP tokens of the anchor frame (absent
                                          without a semantic encoder)
  "task":           int32                 index into train.config.TASK_NAMES
  "instruction":    str                   the encoded prompt (prefix included)
  "id":             str                   where the example came from
  "float_dtype":    str                   "float32", "bfloat16" or "float16"

The text encoder's rows past the last real token are exact zeros (umt5.py), so they are
dropped on write and restored on read: with L = 512 and D = 4096 they would be most of
a record. NumPy's .npz has no bfloat16, so bfloat16 arrays are stored as their uint16
bit patterns and `float_dtype` says how to read them.

`from_record` returns one example of the model batch that `encoders.make_encode_fn`
produces: {"latents", "source"?, "text" [L, D], "semantic"?, "task"} as float32 / int32,
plus "instruction" and "id".
"""

from __future__ import annotations

import json
import os

import ml_dtypes
import numpy as np

from sama_jax.data.skips import Skipped
from sama_jax.data.sources import ArrayRecordSource

FLOAT_DTYPES = ("float32", "bfloat16", "float16")
_STORED = {"latents": "latents", "source": "source_latents", "semantic": "semantic"}  # batch key -> record key


def _check_dtype(dtype: str) -> None:
  if dtype not in FLOAT_DTYPES:
    raise ValueError(f"float dtype {dtype!r}; expected one of {FLOAT_DTYPES}")


def _pack(name: str, array, dtype: str) -> np.ndarray:
  array = np.asarray(array, np.float32)
  if dtype == "float32":
    return array
  if dtype == "float16":
    with np.errstate(over="ignore"):  # reported below, naming the field
      packed = array.astype(np.float16)
    if not np.isfinite(packed).all() and np.isfinite(array).all():
      raise ValueError(f"{name} overflows float16 (max |x| = {np.abs(array).max():.4g} > 65504); "
                       "store it as bfloat16 or float32")
    return packed
  return array.astype(ml_dtypes.bfloat16).view(np.uint16)


def _unpack(array: np.ndarray, dtype: str) -> np.ndarray:
  if dtype == "bfloat16":
    return array.view(ml_dtypes.bfloat16).astype(np.float32)
  return array.astype(np.float32)


def to_record(encoded: dict, *, text_tokens: int, instruction: str, example_id: str,
              dtype: str = "float32") -> dict:
  """One example of make_encode_fn's output (NumPy: "latents", "text" [L, D], "task",
  optional "source", "semantic") -> the record dict above. `text_tokens`: real tokens
  in the prompt (attention-mask ones, right-padded)."""
  _check_dtype(dtype)
  text = np.asarray(encoded["text"])
  if not 0 <= text_tokens <= text.shape[0]:
    raise ValueError(f"text_tokens={text_tokens}; expected 0..{text.shape[0]} (the text length)")
  if np.any(text[text_tokens:]):
    raise ValueError(f"text embeddings past token {text_tokens} are not zero; the text encoder must zero "
                     "padded positions (umt5.py) for them to be dropped")
  record = {"text": _pack("text", text[:text_tokens], dtype), "text_len": np.int32(text.shape[0]),
            "task": np.int32(encoded["task"]), "instruction": str(instruction), "id": str(example_id),
            "float_dtype": dtype}
  for key, stored in _STORED.items():
    if key in encoded:
      record[stored] = _pack(key, encoded[key], dtype)
  return record


def from_record(record):
  """The record dict above (decoded) -> one model-batch example (float32 arrays, text
  zero-padded back to text_len); a Skipped passes through, and a record that is not a
  precomputed one becomes Skipped("bad_record")."""
  if isinstance(record, Skipped):
    return record
  where = str(record.get("id", "?"))
  missing = [k for k in ("latents", "text", "text_len", "task", "float_dtype") if k not in record]
  if missing or record["float_dtype"] not in FLOAT_DTYPES:
    return Skipped(where, "bad_record", f"not a precomputed record: fields {sorted(record)}; expected latents, "
                   "text, text_len, task and float_dtype (one of " + ", ".join(FLOAT_DTYPES) + ")")
  dtype = record["float_dtype"]
  text = _unpack(record["text"], dtype)
  padded = np.zeros((int(record["text_len"]), text.shape[1]), np.float32)
  padded[:text.shape[0]] = text
  example = {"text": padded, "task": np.int32(record["task"]), "instruction": str(record.get("instruction", "")),
             "id": where}
  for key, stored in _STORED.items():
    if stored in record:
      example[key] = _unpack(record[stored], dtype)
  return example


class PrecomputedSource:
  """Random access (__len__ / __getitem__) to precomputed examples, from_record applied."""

  def __init__(self, records: ArrayRecordSource):
    self.records = records

  def __len__(self) -> int:
    return len(self.records)

  def __getitem__(self, index: int):
    return from_record(self.records[index])


def precomputed_source(paths) -> PrecomputedSource:
  """`paths`: a precompute output folder (every shard its finished run listed in
  summary.json), shard files, or a comma-separated string of paths / glob patterns."""
  if isinstance(paths, (str, os.PathLike)) and os.path.isdir(paths):
    summary = os.path.join(paths, "summary.json")
    if not os.path.isfile(summary):
      raise FileNotFoundError(f"{paths} has no summary.json, so its precompute did not finish (run it again "
                              "to resume), or pass shard paths / a glob such as DIR/video_edit-*.array_record")
    with open(summary, encoding="utf-8") as f:
      paths = [os.path.join(paths, name) for name in json.load(f)["shards"]]
  return PrecomputedSource(ArrayRecordSource(paths))
