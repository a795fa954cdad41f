"""``python -m benchmark weights``: fetch pretrained weights on a machine with internet; list a weights folder.

    python -m benchmark weights fetch resnet18 resnet50 --out weights/     # their ImageNet weights (timm's defaults)
    python -m benchmark weights fetch --suite all --out weights/           # every architecture the suite starts from
    python -m benchmark weights fetch hf-hub:timm/resnet50.a1_in1k --out weights/
    python -m benchmark weights list weights/                              # entries, sizes, each SHA-256 checked again

Copy the folder to the machine without internet and point ``AFF_BENCHMARK_WEIGHTS`` at it:
``pretrained: imagenet`` (and the ``hour`` profile) then read the weights from there, checked
against the SHA-256 that ``weights.json`` records. Without ``--out`` the weights go to the
harness's own folder (``<cache>/weights``), where runs on this machine find them too.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from benchmark.candidates import weights_store as store
from benchmark.candidates.weights import WEIGHTS_ENV, weights_folder
from benchmark.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    f = sub.add_parser("fetch", help="download weights from the hub into a folder (on a machine with internet)",
                       description="Download ImageNet weights of timm architectures, or hub models named "
                                   "hf-hub:ORG/NAME, into a weights folder with a weights.json record.")
    f.add_argument("names", nargs="*", metavar="NAME",
                   help="architectures (their ImageNet weights, e.g. resnet18) or hf-hub:ORG/NAME")
    f.add_argument("--suite", default=None, help="also every architecture the suite's networks start from "
                                                 "(its CNNs, embedding encoders and fusion backbones)")
    f.add_argument("--spaces", action="append", default=[], metavar="DIR", help="extra folder of candidate files")
    f.add_argument("--out", default=None, metavar="DIR",
                   help="the weights folder (default: the harness's own, <cache>/weights)")
    ls = sub.add_parser("list", help="list a weights folder, each file's SHA-256 checked against its record",
                        description="List a weights folder's entries and check each file against its recorded SHA-256 "
                                    "(exit status 2 when one changed or is missing).")
    ls.add_argument("folder", nargs="?", default=None, metavar="DIR",
                    help=f"the folder (default: {WEIGHTS_ENV} when set, else the harness's own)")


def suite_architectures(suite: str, spaces: list[str]) -> list[str]:
    """The architectures the networks of ``suite`` start from (ImageNet weights each), in suite order."""
    from benchmark.run.pretrained import candidate_arch
    from benchmark.search.spaces import load_candidates, load_suites, suite_members

    allc = load_candidates(spaces)
    names = suite_members(suite, allc, load_suites(spaces))
    return list(dict.fromkeys(a for n in names if (a := candidate_arch(allc[n])) is not None))


def fetch(names: list[str], out: Path) -> list[Path]:
    """Each name's weights in ``out`` (fetched unless ``out`` already holds them intact); one line each."""
    from benchmark.candidates.weights_hub import HUB_PREFIX, HubUnreachable, hub_id_of, imagenet_hub_id
    from benchmark.candidates.weights_hub import fetch as fetch_one

    paths = []
    for name in names:
        hub_id = hub_id_of(name) if name.startswith(HUB_PREFIX) else imagenet_hub_id(name)
        arch = None if name.startswith(HUB_PREFIX) else name
        path = store.lookup(out, hub_id)
        if path is not None and store.sha256_file(path) == store.read_record(out)[hub_id]["sha256"]:
            how = "already there"
        else:
            try:
                path = fetch_one(hub_id, arch, out)
            except HubUnreachable as exc:
                raise UserError(f"{name}: the hub cannot be reached ({exc}); run this on a machine with internet "
                                "(HF_ENDPOINT names a mirror)") from None
            how = "fetched"
        entry = store.read_record(out)[hub_id]
        print(f"{name}: {hub_id}, {entry['size'] / 1e6:.1f} MB, SHA-256 {entry['sha256'][:16]} {how} -> {path}",
              flush=True)
        paths.append(path)
    return paths


def list_folder(folder: Path) -> int:
    """Print ``folder``'s entries; 0 when every file is intact, 2 when one changed or is missing."""
    rows = store.entries(folder)
    if not rows:
        print(f"{folder}: no weights recorded (no {store.RECORD}); `python -m benchmark weights fetch NAME --out "
              f"{folder}` fetches some")
        return 0
    print(f"{folder}:")
    print(f"  {'weights':<40} {'architecture':<16} {'MB':>8}  {'SHA-256':<16}  state")
    for r in rows:
        print(f"  {r.key:<40} {r.architecture:<16} {r.size / 1e6:>8.1f}  {r.sha256[:16]:<16}  {r.state}")
    bad = [r for r in rows if r.state != "ok"]
    if bad:
        print(f"{len(bad)} of {len(rows)} entries changed or are missing: they are refused when loaded; fetch them "
              f"again with `python -m benchmark weights fetch {' '.join(b.key for b in bad)} --out {folder}`")
        return 2
    return 0


def command(args: argparse.Namespace) -> int:
    if args.action == "list":
        env = os.environ.get(WEIGHTS_ENV, "").strip()
        folder = Path(args.folder or env or weights_folder()).expanduser()
        if not folder.exists() and not (args.folder or env):   # nothing fetched on this machine yet
            return list_folder(folder)
        if not folder.is_dir():
            raise UserError(f"{folder} is not a folder; give a weights folder (`weights fetch --out` writes one)")
        return list_folder(folder)
    names = list(args.names) + (suite_architectures(args.suite, args.spaces) if args.suite else [])
    names = list(dict.fromkeys(names))
    if not names:
        raise UserError("weights fetch: name architectures (resnet18 ...) or hf-hub:ORG/NAME models, or give --suite")
    out = Path(args.out).expanduser() if args.out else weights_folder()
    fetch(names, out)
    print(f"weights in {out.resolve()}: copy the folder to the machine without internet and set "
          f"{WEIGHTS_ENV}=<the folder there>; `pretrained: imagenet` (or the hour profile) then reads them")
    return 0
