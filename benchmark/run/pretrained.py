"""Which weights each network of a run starts from: chosen once when the run starts, recorded, and kept.

    cands, records = start_weights(cands, profile, previous=None)
    manifest["weights"] = records     # candidate -> source, name, label, sha256, size, file, pretrained

- A candidate whose family takes ``pretrained`` (``timm_cnn``, the ``embed_*`` encoders, the fusion
  networks) and whose own file does not set it gets the profile's ``pretrained`` (``hour``:
  ``imagenet``). Where the profile's weights cannot be had (the hub unreachable and nothing
  fetched), one line says so and those candidates start from random initialisation, which the
  manifest, the leaderboard and the findings then say. A candidate's own ``pretrained`` is never
  replaced: without its weights the run stops with the one-line reason.
- A fusion network warm-started from an image candidate starts from that candidate's trained
  weights (``fusion_nets``): recorded as such; nothing is fetched for it.
- ``previous`` (the record of a run being resumed or exported): every candidate keeps the setting
  it started with, and its weights must still have the recorded SHA-256.

Every choice goes through ``candidates.weights.choose_weights``, the one place that decides
where weights come from; downloads, if any, happen here, before anything trains.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from benchmark.candidates.base import get_family
from benchmark.candidates.weights import WeightsChoice, WeightsUnavailable, choose_weights
from benchmark.errors import UserError
from benchmark.run.units import warm_start_role
from benchmark.search.profiles import Profile
from benchmark.search.spaces import Candidate

WARM = "warm start"
RANDOM_MEANS = {   # what random starting weights mean, by the kind of network (recorded; the findings and leaderboard say it)
    "encoder": "embeddings from an untrained encoder carry no learned features",
    "network": "trained from random initialisation",
}


def candidate_arch(cand: Candidate) -> str | None:
    """The timm architecture whose starting weights ``cand`` chooses (``arch``, or an embedding family's
    ``encoder``), or None when its family takes no ``pretrained`` or the search chooses the architecture."""
    defaults = getattr(get_family(cand.family), "defaults", None) or {}
    if "pretrained" not in defaults or {"arch", "encoder", "pretrained"} & set(cand.space or {}):
        return None
    for key in ("arch", "encoder"):
        value = cand.fixed.get(key, defaults.get(key))
        if value:
            return str(value)
    return None


def is_encoder(cand: Candidate) -> bool:
    """Whether ``cand``'s network is a frozen encoder (its weights are never trained: ``embed_*``)."""
    return "encoder" in (getattr(get_family(cand.family), "defaults", None) or {})


def recorded_weights(run_path: Path) -> dict | None:
    """The ``weights`` record of an earlier run's manifest (None: no manifest, or a run from before it)."""
    path = Path(run_path) / "manifest.json"
    if not path.exists():
        return None
    return json.loads(path.read_text()).get("weights")


def start_weights(cands: list[Candidate], profile: Profile, previous: dict | None = None,
                  log: Callable[[str], None] = print) -> tuple[list[Candidate], dict]:
    """(the candidates with the ``pretrained`` each starts from, the record per candidate): see the module."""
    out, records, unavailable = [], {}, {}   # (architecture, what was asked) -> why it cannot be had
    for cand in cands:
        arch = candidate_arch(cand)
        if arch is None:
            out.append(cand)
            continue
        role = warm_start_role(cand)
        if role is not None:
            records[cand.name] = {"source": WARM, "name": role, "label": f"the trained weights of {role} (warm start)",
                                  "architecture": arch}
            out.append(cand)
            continue
        own = "pretrained" in cand.fixed
        before = (previous or {}).get(cand.name)
        asked: Any = cand.fixed.get("pretrained") if own else profile.pretrained
        if isinstance(before, dict) and "pretrained" in before:
            asked = before["pretrained"]
        key, note = (arch, str(asked)), None
        try:
            if key in unavailable:
                raise unavailable[key]
            choice = choose_weights(arch, asked)
        except WeightsUnavailable as exc:
            if own or before is not None:
                raise
            if key not in unavailable:   # one line per architecture
                log(f"weights: {exc}; {arch} networks start from random initialisation")
                unavailable[key] = exc
            choice, asked = WeightsChoice("random"), False
            note = f"the profile's {profile.pretrained} weights were not available"
        kind = "encoder" if is_encoder(cand) else "network"
        rec = {**choice.record(), "architecture": arch, "pretrained": asked, "kind": kind}
        if choice.source == "random":
            rec["meaning"] = RANDOM_MEANS[kind]
        if note:
            rec["note"] = note
        _same_as_before(cand.name, rec, before)
        records[cand.name] = rec
        if asked is not None and cand.fixed.get("pretrained") != asked:
            cand = replace(cand, fixed={**cand.fixed, "pretrained": asked})
        out.append(cand)
    return out, records


def _same_as_before(name: str, rec: dict, before: dict | None) -> None:
    """UserError when a resumed or exported run's candidate would start from other weights than it did."""
    if not isinstance(before, dict) or before.get("sha256") == rec.get("sha256"):
        return
    was, now = before.get("sha256") or "random initialisation", rec.get("sha256") or "random initialisation"
    raise UserError(f"{name}: its starting weights changed since the run started ({before.get('label', '?')}, "
                    f"SHA-256 {str(was)[:12]}, now {rec.get('label', '?')}, {str(now)[:12]}); restore them "
                    "(python -m benchmark weights list shows a folder's) or start a new run")


def weights_column(records: dict | None, names: list[str]) -> list[str]:
    """Per candidate name, the leaderboard's ``weights`` cell: the record's label, or for random
    initialisation what it means (``trained from random initialisation``; ``random initialisation:
    embeddings from an untrained encoder carry no learned features``); '' for a candidate that takes
    no starting weights."""
    out = []
    for n in names:
        rec = (records or {}).get(n)
        rec = rec if isinstance(rec, dict) else {}
        label, meaning = str(rec.get("label") or ""), str(rec.get("meaning") or "")
        out.append(meaning if label and label in meaning else ": ".join(t for t in (label, meaning) if t))
    return out


def bundle_weights(records: dict | None, names: list[str]) -> dict:
    """What a bundle records of its components' starting weights: source, name and SHA-256, never a path."""
    out = {}
    for n in names:
        rec = (records or {}).get(n)
        if isinstance(rec, dict):
            out[n] = {k: rec[k] for k in ("source", "name", "label", "sha256", "architecture") if rec.get(k) is not None}
    return out


def pin_weights(allc: dict[str, Candidate], manifest: dict, profile: Profile) -> dict[str, Candidate]:
    """``allc`` with the run's candidates set to start as they did in the run (its manifest's record);
    what ``export`` trains. UserError when a candidate's weights changed since."""
    ran = [c for n, c in allc.items() if n in set(manifest.get("candidates", []))]
    pinned, _ = start_weights(ran, profile, previous=manifest.get("weights") or {})
    return {**allc, **{c.name: c for c in pinned}}


def scrub_weight_paths(components: list) -> None:
    """A ``pretrained`` parameter that names a file, in every model of ``components``, replaced by the
    file's name: a bundle names no path (``bundle_weights`` records the weights' SHA-256)."""
    for comp in components:
        for model in [*comp.members, comp.full]:
            params = getattr(model, "params", None)
            value = params.get("pretrained") if isinstance(params, dict) else None
            if isinstance(value, str) and value != "imagenet" and not value.startswith("hf-hub:") and \
                    ("/" in value or "\\" in value):
                model.params = {**params, "pretrained": Path(value).name}
