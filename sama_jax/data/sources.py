"""Random-access data sources (grain's RandomAccessDataSource protocol: __len__ and
__getitem__) for the three kinds of training data (SAMA_METHOD.md §5.3):

- "image_edit": Semantic Anchoring pairs (source image, instruction, edited image);
- "clip": raw videos with a caption, for the Motion Alignment pretext tasks;
- "video_edit": paired video edits (source video, instruction, edited video).

Every source yields *raw items*, resolved into frames later by `examples.load_example`:

  {"target": path str | uint8 [T, H, W, 3] or [H, W, 3],
   "source": the same (edits only), "text": instruction or caption,
   "id": where the record came from (for logs), "size": optional (w, h) of the source
   (of the clip for "clip"), when the manifest gives it (used for bucketing)}

or a `skips.Skipped` marker for a record already known to be bad (a malformed manifest
row, an undecodable ArrayRecord record). Sources never raise for one bad record; they
raise only when the whole source is unusable (no manifest file, not a list, ...).
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import json
import os

import grain

from sama_jax.data import synthetic
from sama_jax.data.records import decode_record
from sama_jax.data.skips import Skipped

KINDS = ("image_edit", "clip", "video_edit")
# The official column names (§5.3): target, source, text; "" = the kind has no source.
DEFAULT_COLUMNS = {
    "image_edit": ("image", "source_image", "prompt"),
    "clip": ("video", "", "prompt"),
    "video_edit": ("video", "source_video", "prompt"),
}
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".ts")


def _check_kind(kind: str) -> None:
  if kind not in KINDS:
    raise ValueError(f"data kind {kind!r}; expected one of {KINDS}")


# ---------------------------------------------------------------------------------------
# Manifests: CSV, JSON (a list of objects) or JSONL (one object per line).


def manifest_format(path: str) -> str:
  ext = os.path.splitext(path)[1].lower()
  formats = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}
  if ext not in formats:
    raise ValueError(f"manifest {path} has extension {ext!r}; expected .csv, .json or .jsonl")
  return formats[ext]


def read_manifest(path: str) -> list:
  """The rows of a manifest: a dict per row, or Skipped("path:line", "malformed_row")
  for a row that does not parse. Raises when the file itself is missing or unusable."""
  kind = manifest_format(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"manifest {path} does not exist (expected a .csv, .json or .jsonl file)")
  with open(path, newline="" if kind == "csv" else None, encoding="utf-8") as f:
    if kind == "csv":
      reader = csv.DictReader(f)
      rows = []
      for row in reader:
        if None in row:  # DictReader files surplus fields under the key None
          rows.append(Skipped(f"{path}:{reader.line_num}", "malformed_row",
                              f"{len(reader.fieldnames) + len(row[None])} fields, header has {len(reader.fieldnames)}"))
        else:
          rows.append(row)
      return rows
    if kind == "json":
      try:
        rows = json.load(f)
      except json.JSONDecodeError as e:
        raise ValueError(f"manifest {path} is not valid JSON ({e}); expected a list of objects") from e
      if not isinstance(rows, list):
        raise ValueError(f"manifest {path} holds a {type(rows).__name__}; expected a JSON list of objects")
      return [r if isinstance(r, dict) else Skipped(f"{path}:item {i}", "malformed_row", f"not an object: {r!r:.60}")
              for i, r in enumerate(rows)]
    rows = []
    for number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        rows.append(Skipped(f"{path}:{number}", "malformed_row", f"not JSON ({e})"))
        continue
      rows.append(row if isinstance(row, dict) else
                  Skipped(f"{path}:{number}", "malformed_row", f"not an object: {row!r:.60}"))
    return rows


def _size(row: dict):
  try:
    width, height = int(row["width"]), int(row["height"])
  except (KeyError, TypeError, ValueError):
    return None
  return (width, height) if width > 0 and height > 0 else None


class ManifestSource:
  """One record per manifest row. Paths are relative to `base_path` ("" = the manifest's
  folder; absolute paths stay as they are). columns = (target, source, text) column
  names, DEFAULT_COLUMNS[kind] by default; optional integer `width`/`height` columns
  (the source's displayed size) let the pipeline bucket without opening the files."""

  def __init__(self, path: str, kind: str, base_path: str = "", columns=None):
    _check_kind(kind)
    self.path, self.kind = os.fspath(path), kind
    self.base_path = base_path or os.path.dirname(os.path.abspath(self.path))
    self.columns = tuple(columns or DEFAULT_COLUMNS[kind])
    if len(self.columns) != 3:
      raise ValueError(f"columns={columns!r}; expected (target, source, text) column names")
    self._rows = read_manifest(self.path)

  def __len__(self) -> int:
    return len(self._rows)

  def __getitem__(self, index: int):
    row = self._rows[index]
    if isinstance(row, Skipped):
      return row
    where = f"{self.path}:row {index}"
    target_col, source_col, text_col = self.columns
    needed = [target_col] + ([source_col] if source_col else [])
    for column in needed:
      value = row.get(column)
      if not isinstance(value, str) or not value.strip():
        return Skipped(where, "malformed_row", f"column {column!r} is {value!r}; expected a file path")
    text = row.get(text_col)
    if not isinstance(text, str) or (self.kind != "clip" and not text.strip()):
      return Skipped(where, "malformed_row", f"column {text_col!r} is {text!r}; expected "
                     + ("a caption" if self.kind == "clip" else "a non-empty instruction"))
    item = {"target": os.path.join(self.base_path, row[target_col]), "text": text, "id": where}
    if source_col:
      item["source"] = os.path.join(self.base_path, row[source_col])
    if (size := _size(row)) is not None:
      item["size"] = size
    return item


class VideoFolderSource:
  """Raw clips: every video file under `folder` (recursively, sorted), captioned by a
  sidecar text file of the same stem (`clip.mp4` + `clip.txt`) or "" without one."""

  def __init__(self, folder: str):
    if not os.path.isdir(folder):
      raise FileNotFoundError(f"video folder {folder} does not exist")
    self.folder = folder
    self._paths = sorted(os.path.join(root, name) for root, _, names in os.walk(folder) for name in names
                         if os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS)

  def __len__(self) -> int:
    return len(self._paths)

  def __getitem__(self, index: int) -> dict:
    path = self._paths[index]
    caption_path = os.path.splitext(path)[0] + ".txt"
    caption = ""
    if os.path.isfile(caption_path):
      with open(caption_path, encoding="utf-8", errors="replace") as f:
        caption = f.read().strip()
    return {"target": path, "text": caption, "id": path}


# ---------------------------------------------------------------------------------------
# In-memory records: the synthetic world and ArrayRecord shards.


@dataclasses.dataclass(frozen=True)
class WorldItemSource:
  """The synthetic world's examples of one kind as raw items (world_example underneath);
  `options` are world_case keywords as a tuple of pairs (e.g. frames, height, width)."""
  kind: str
  length: int
  seed: int = 0
  options: tuple = ()

  def __post_init__(self):
    _check_kind(self.kind)

  def __len__(self) -> int:
    return self.length

  def __getitem__(self, index: int) -> dict:
    example = synthetic.WorldSource(self.kind, self.length, self.seed, self.options)[index]
    item = {"id": f"world/{self.kind}/seed{self.seed}/{int(index)}"}
    if self.kind == "clip":
      return {**item, "target": example["video"], "text": example["caption"]}
    return {**item, "target": example["target"], "source": example["source"], "text": example["instruction"]}


class ArrayRecordSource:
  """Raw items stored with records.encode_record in ArrayRecord shards (the precompute
  command's output): `paths` is a list of shard files, or one string of comma-separated
  paths or glob patterns. A record that does not decode is Skipped("bad_record")."""

  def __init__(self, paths):
    if isinstance(paths, str):
      patterns = [p.strip() for p in paths.split(",") if p.strip()]
      paths = [f for p in patterns for f in (sorted(glob.glob(p)) if glob.has_magic(p) else [p])]
    self.paths = [os.fspath(p) for p in paths]
    missing = [p for p in self.paths if not os.path.isfile(p)]
    if not self.paths or missing:
      raise FileNotFoundError(f"ArrayRecord shards {missing or paths!r} do not exist; expected shard files "
                              "or glob patterns such as /data/clips-*.array_record")
    self._source = None  # opened lazily, so the source pickles cheaply into workers

  def _reader(self):
    if self._source is None:
      self._source = grain.sources.ArrayRecordDataSource(self.paths)
    return self._source

  def __getstate__(self):
    return {"paths": self.paths, "_source": None}

  def __len__(self) -> int:
    return len(self._reader())

  def __getitem__(self, index: int):
    data = self._reader()[index]
    try:
      record = decode_record(data)
    except ValueError as e:
      return Skipped(f"array_record[{index}]", "bad_record", str(e))
    record.setdefault("id", f"array_record[{index}]")
    return record


@dataclasses.dataclass(frozen=True)
class SubsetSource:
  """The records `indices` of `source`, in that order (one resolution bucket of it)."""
  source: object
  indices: tuple

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index: int):
    return self.source[self.indices[index]]


def source_from_config(sc, kind: str, world_options: tuple = ()):
  """The source a `data_config()` source block describes (sc.format is one of
  "manifest", "folder", "world", "array_record", "precomputed"), or None for "none"."""
  _check_kind(kind)
  if sc.format == "none":
    return None
  if sc.format == "manifest":
    return ManifestSource(sc.path, kind, sc.base_path, (sc.target_column, sc.source_column, sc.text_column))
  if sc.format == "folder":
    if kind != "clip":
      raise ValueError(f"format 'folder' holds raw clips; the {kind} source needs a manifest")
    return VideoFolderSource(sc.path)
  if sc.format == "world":
    return WorldItemSource(kind, sc.world_size, sc.world_seed, world_options)
  if sc.format == "array_record":
    return ArrayRecordSource(sc.path)
  if sc.format == "precomputed":
    from sama_jax.data.precomputed import precomputed_source  # pylint: disable=g-import-not-at-top
    return precomputed_source(sc.path)
  raise ValueError(f"source format {sc.format!r}; expected none, manifest, folder, world, array_record "
                   "or precomputed")
