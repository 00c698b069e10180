"""What a PyTorch DiT checkpoint holds against what the SAMA DiT needs: the tensors that
find a place, the modules it lacks (SAMA's start fresh) and the tensors nothing takes.

    report = key_report(io.index_files(path), "diffusers", num_layers=30)
    print(format_report(report))
"""

from __future__ import annotations

import dataclasses

from sama_jax.convert import names as N

# How `load_torch_dit` fills a SAMA module a plain Wan checkpoint lacks (SAMA_METHOD.md §2.1).
FRESH = {"segment_embedding": "zeros: the DiT starts as plain Wan", "siglip_feat_mlp": "random init",
         "semantic_head": "random init"}


@dataclasses.dataclass(frozen=True)
class KeyReport:
  layout: str
  used: int  # tensors of the checkpoint that find a place
  missing: dict  # module -> its absent tensor names (optional modules: freshly initialised)
  required: tuple  # absent tensors no checkpoint may lack
  unexpected: tuple  # tensors of the checkpoint with no place

  @property
  def ok(self) -> bool:
    return not self.required and not self.unexpected


def key_report(names, layout: str, num_layers: int) -> KeyReport:
  """names: the checkpoint's tensor names; num_layers: the config's block count."""
  expected = {}
  for rule in N.DIT_RULES:
    torch_name = rule.torch_name(layout)
    for name in ([torch_name.format(i=i) for i in range(num_layers)] if rule.stacked else [torch_name]):
      expected[name] = rule
  missing, required = {}, []
  for name, rule in expected.items():
    if name not in names:
      if rule.optional:
        missing.setdefault(rule.ours.split(".")[0], []).append(name)
      else:
        required.append(name)
  unexpected = tuple(sorted(set(names) - set(expected)))
  return KeyReport(layout, len(set(names) & set(expected)), missing, tuple(required), unexpected)


def format_report(r: KeyReport, limit: int = 5) -> str:
  """A table: one row per freshly initialised module, then missing and unexpected tensors."""
  lines = [f"checkpoint ({r.layout} naming): {r.used} tensors used, "
           f"{sum(map(len, r.missing.values()))} missing, {len(r.unexpected)} unexpected"]
  rows = [("missing", module, len(names), FRESH[module]) for module, names in r.missing.items()]
  rows += [("missing", name, 1, "required: cannot be made up") for name in r.required[:limit]]
  rows += [("unexpected", name, 1, "no place in the SAMA DiT") for name in r.unexpected[:limit]]
  for kind, shown in (("missing", r.required), ("unexpected", r.unexpected)):
    if len(shown) > limit:
      rows.append((kind, f"... {len(shown) - limit} more", len(shown) - limit, ""))
  if not rows:
    return lines[0] + "\n  every tensor found its place; nothing is missing"
  width = max(len(row[1]) for row in rows)
  lines.append(f"  {'kind':<10}  {'module / tensor':<{width}}  {'tensors':>7}  action")
  lines += [f"  {kind:<10}  {name:<{width}}  {n:>7}  {action}" for kind, name, n, action in rows]
  return "\n".join(lines)
