"""One training record as bytes, for ArrayRecord shards: `encode_record` / `decode_record`.

A record is a flat dict of str -> NumPy array, str, or number (e.g. the raw items of
`sources.py`: {"target": uint8 [T, H, W, 3], "source": ..., "text": str, "id": str}).
The bytes are an `.npz` archive (NumPy's own format, no pickling), so a shard written
by the precompute command reads back anywhere NumPy does, bit for bit.
"""

from __future__ import annotations

import io
import numbers

import numpy as np


def _as_array(key: str, value) -> np.ndarray:
  if isinstance(value, str):
    return np.asarray(value, dtype=np.str_)
  if isinstance(value, (numbers.Number, np.generic)) and not isinstance(value, complex):
    return np.asarray(value)
  if isinstance(value, np.ndarray) and value.dtype != object:
    return value
  raise ValueError(f"record field {key!r} is a {type(value).__name__}"
                   f"{' of dtype object' if isinstance(value, np.ndarray) else ''}; expected a NumPy "
                   "array (not dtype object), a str, or a real number")


def encode_record(record: dict, *, compress: bool = False) -> bytes:
  """Serialises {name: array | str | number} to bytes (an .npz archive; zip-deflated
  when `compress`). Raises ValueError naming a field that has no lossless encoding."""
  if not isinstance(record, dict) or not record:
    raise ValueError(f"record must be a non-empty dict of name -> array/str/number; got {record!r:.80}")
  arrays = {}
  for key, value in record.items():
    if not isinstance(key, str) or not key or "/" in key:
      raise ValueError(f"record key {key!r}; expected a non-empty str without '/'")
    arrays[key] = _as_array(key, value)
  buffer = io.BytesIO()
  (np.savez_compressed if compress else np.savez)(buffer, **arrays)
  return buffer.getvalue()


def decode_record(data: bytes) -> dict:
  """Inverse of encode_record: 0-d text comes back as str, 0-d numbers as NumPy scalars,
  everything else as arrays. Raises ValueError when `data` is not such a record."""
  try:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
      arrays = {key: archive[key] for key in archive.files}
  except Exception as e:  # zipfile, numpy format and pickle refusals all mean "not a record"
    raise ValueError(f"{len(data)} bytes are not an encoded record ({type(e).__name__}: {e})") from e
  record = {}
  for key, array in arrays.items():
    if array.ndim == 0:
      record[key] = str(array) if array.dtype.kind == "U" else array[()]
    else:
      record[key] = array
  return record
