"""Starting weights: what each image and embedding network started from, as the run's manifest records it.

    lines = weights_section(manifest)     # '## Starting weights' and a line per network ([] without a record)

A network trained from random initialisation, and above all an embedding candidate whose
frozen encoder never learned anything, answers a narrower question than an ImageNet-initialised
one: the section says so in the manifest's own words (``run.pretrained`` records them).
"""

from __future__ import annotations

from benchmark.candidates.weights import RANDOM_LABEL
from benchmark.report.run_files import safe_text

RANDOM_WEIGHTS = RANDOM_LABEL   # what a leaderboard ``weights`` cell of a randomly initialised network says
WHAT_IT_LIMITS = {
    "encoder": "its result is what the register variables and random image features give, not what pretrained "
               "embeddings would",
    "network": "its numbers say what it learns from these images alone, not what an ImageNet-initialised "
               "network reaches",
}


def random_note(cell: object) -> str:
    """The hover text of a leaderboard row's ``random init`` badge: its ``weights`` cell."""
    return safe_text(cell) or RANDOM_WEIGHTS


def _line(name: str, rec: dict) -> str:
    arch = safe_text(rec.get("architecture"))
    who = f"**{name}**" + (f" ({arch})" if arch and arch != name else "")
    if rec.get("source") == "random":
        kind = rec.get("kind") if rec.get("kind") in WHAT_IT_LIMITS else "network"
        text = f"- {who}: {safe_text(rec.get('meaning')) or RANDOM_WEIGHTS}; {WHAT_IT_LIMITS[kind]}"
        note = safe_text(rec.get("note"))
        return text + (f" ({note})." if note else ".")
    sha = safe_text(rec.get("sha256"))
    digest = f", SHA-256 {sha[:16]}" if sha else ""
    return f"- {who} started from {safe_text(rec.get('label')) or safe_text(rec.get('name'))}{digest}."


def weights_section(manifest: dict) -> list[str]:
    """The findings' section on starting weights ([] for a run without a ``weights`` record)."""
    records = manifest.get("weights") if isinstance(manifest, dict) else None
    if not isinstance(records, dict) or not records:
        return []
    lines = ["## Starting weights", ""]
    lines += [_line(str(name), rec) for name, rec in records.items() if isinstance(rec, dict)]
    if any(isinstance(r, dict) and r.get("source") == "random" for r in records.values()):
        lines += ["", "ImageNet weights: `pretrained: imagenet` in a candidate file, or the `hour` profile; on a "
                      "machine without internet, `python -m benchmark weights fetch` elsewhere and "
                      "`AFF_BENCHMARK_WEIGHTS` here (docs/candidates.md)."]
    return lines
