"""Synthetic AFF/NFF cohort with a known oracle: ``python -m benchmark synth OUT``.

Writes, in the on-disk format users give for real data (the dataset file, see README "Bring your own data")::

    OUT/dataset.yaml    name, register, id_column, label, images, categorical, oracle
    OUT/register.csv    patient_id, group (AFF/NFF), 300+ register columns
    OUT/images/         uncompressed DICOM, one to several views per patient
    OUT/images.csv      path (relative to images/), patient_id
    OUT/oracle.csv      patient_id, oracle_register, oracle_image, oracle_both
    OUT/truth.json      the risk columns (signal, weak, proxies, noise) and each image's sign regions
    OUT/preview.png     a labelled grid of AFF and NFF images
    OUT/synth.json      the settings and the list of files written (marks OUT as ours)

The generative model (features first, then the label, then the image evidence, so that
the exact posterior is known) is documented in ``benchmark.data.synth_model``; register
variables in ``synth_register``, image latents in ``synth_latents``, rendering in
``synth_images``. In short:

- register x from realistic marginals; risk logit f(x) = register_strength * g(x), with
  steps in years of bisphosphonate use and a glucocorticoid interaction;
- label y ~ Bernoulli(sigmoid(f + b)) in a large pool, then case-control sampling of
  exactly ``n_aff`` AFF and ``n_patients - n_aff`` NFF: ``oracle_register =
  sigmoid(f + b + log(s1/s0))``;
- image latents z | y (fracture angle, comminution, medial spike, lateral beaking),
  overlapping, scaled by image_strength, independent of x given y:
  ``oracle_image`` by Bayes with the sample prevalence, ``oracle_both =
  sigmoid(f + b + log(s1/s0) + LLR(z))``;
- ``relation='redundant'``: the image also shows f(x) (cortical thickness), so
  ``oracle_image == oracle_both``; ``label_noise`` eps flips labels and is folded into
  all three oracles.

A second hospital (``synth_site``): ``--shift COLUMN=+D|*F`` records a numeric register column
shifted or scaled (after the label and oracle are drawn), ``--exposure F`` scales every view's
exposure, ``--site-name`` names the cohort; all three are recorded in ``synth.json`` and the
dataset file's description, and leave a first site's settings as they were.

Python use::

    from benchmark.data.synth import SynthConfig, write_cohort, simulate
    register, latents, oracle = simulate(SynthConfig())         # no images, well under 1 s
    yaml_path = write_cohort("data/synth", SynthConfig(n_patients=400, n_aff=40, image_size=64))
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from benchmark.data import synth_images, synth_site
from benchmark.data.synth_model import simulate
from benchmark.errors import UserError

MARKER = "synth.json"
VERSION = 3   # bump when the generated cohort changes: the cached default is regenerated (3: truth.json)
GENERATOR = f"benchmark.synth/{VERSION}"
CATEGORICAL = ["sex", "site", "smoking", "living"]

__all__ = ["SynthConfig", "simulate", "write_cohort", "add_arguments", "command"]


@dataclass
class SynthConfig:
    """Settings of a synthetic cohort. ``n_aff=None`` keeps the default 172/4172 share."""

    n_patients: int = 4172
    n_aff: int | None = None
    seed: int = 0
    image_size: int = 256
    images_per_patient: float = 2.5
    register_strength: float = 1.0
    image_strength: float = 1.0
    relation: str = "complementary"
    label_noise: float = 0.0
    sparse_columns: int = 270
    risk_seed: int | None = None     # None: the default risk; a number draws other risk columns (synth_risk)
    workers: int | None = field(default=None, compare=False)
    # a second site (synth_site): shifted register recording, image exposure, a name
    shifts: tuple[str, ...] = ()
    exposure: float = 1.0
    site_name: str | None = None

    def __post_init__(self) -> None:
        if self.n_aff is None:
            self.n_aff = max(1, round(self.n_patients * 172 / 4172))

    def validate(self) -> None:
        """Raise ``UserError`` naming the first setting that cannot be used."""
        checks = [
            (self.n_patients >= 2, "--patients must be at least 2"),
            (1 <= self.n_aff < self.n_patients, "--aff must be at least 1 and below --patients"),
            (8 <= self.image_size <= 4096, "--image-size must be between 8 and 4096 pixels"),
            (1.0 <= self.images_per_patient <= 8, "--images-per-patient must be between 1 and 8"),
            (self.register_strength >= 0, "--register-strength must be 0 or more"),
            (self.image_strength >= 0, "--image-strength must be 0 or more"),
            (self.relation in ("complementary", "redundant"), "--relation must be complementary or redundant"),
            (0 <= self.label_noise < 0.5, "--label-noise must be in [0, 0.5)"),
            (self.sparse_columns >= 0, "--sparse-columns must be 0 or more"),
            (self.risk_seed is None or self.risk_seed >= 0, "--risk-seed must be 0 or more"),
            (self.workers is None or self.workers >= 1, "--workers must be at least 1"),
        ] + synth_site.check(tuple(self.shifts), self.exposure, self.site_name)
        for ok, message in checks:
            if not ok:
                raise UserError(f"synth settings: {message}.")

    def settings(self) -> dict:
        """The settings that determine the output (the worker count does not)."""
        d = asdict(self)
        d.pop("workers")
        d["shifts"] = list(self.shifts)
        for key, default in (("shifts", []), ("exposure", 1.0), ("site_name", None)):
            if d[key] == default:   # a first site's settings (and its cached copy) stay as they were
                d.pop(key)
        return d


# ---------------------------------------------------------------- writing

def _check_target(out: Path) -> dict | None:
    """The previous marker if OUT holds an earlier synth output; error if OUT is foreign."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; give a folder for the synthetic cohort.")
    if not out.exists() or not any(out.iterdir()):
        return None
    marker = out / MARKER
    if not marker.is_file():
        raise UserError(f"{out} is not empty and holds no {MARKER} from an earlier synth run; "
                        "give an empty or new folder.")
    try:
        previous = json.loads(marker.read_text())
        assert previous.get("generator", "").startswith("benchmark.synth/")
    except (ValueError, AssertionError, AttributeError) as exc:
        raise UserError(f"{marker} is not a synth marker file; give an empty or new folder.") from exc
    return previous


def _remove_previous(out: Path, previous: dict) -> None:
    """Delete only the files an earlier synth run listed as its own (never other files)."""
    for rel in previous.get("files", []):
        p = (out / rel).resolve()
        if out.resolve() in p.parents and p.is_file():
            p.unlink()
    img_root = out / "images"
    if img_root.is_dir():
        for d in sorted(img_root.rglob("*"), key=lambda q: len(q.parts), reverse=True):
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        if not any(img_root.iterdir()):
            img_root.rmdir()


def _render_chunk(task: tuple) -> list[tuple[str, list[int], dict]]:
    """Render and write a chunk's images; (path, [rows, cols], sign regions) of each."""
    rows, root, size, seed = task
    out = []
    for row in rows:
        for k, rel in enumerate(row["_paths"]):
            view = synth_images.render(row, view=k, size=size, seed=seed)
            synth_images.write_dicom(Path(root) / rel, view, row["patient_id"], row["side"],
                                     seed, row["_index"], k)
            out.append((rel, list(view.display.shape), view.regions))
    return out


def _render_all(latents: pd.DataFrame, paths: list[list[str]], root: Path,
                config: SynthConfig) -> list[tuple[str, list[int], dict]]:
    rows = latents.to_dict("records")
    for i, (row, p) in enumerate(zip(rows, paths)):
        row["_paths"], row["_index"] = p, i
    workers = config.workers or os.cpu_count() or 1
    n_chunks = max(1, min(len(rows), workers * 8))
    tasks = [(rows[i::n_chunks], str(root), config.image_size, config.seed) for i in range(n_chunks)]
    if workers == 1 or len(rows) < 50:
        return [v for t in tasks for v in _render_chunk(t)]
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with mp.get_context(method).Pool(workers) as pool:
        return [v for chunk in pool.imap_unordered(_render_chunk, tasks) for v in chunk]


def _preview(latents: pd.DataFrame, config: SynthConfig, path: Path, tile: int = 192) -> None:
    """A 4x4 grid: two rows of AFF, two rows of NFF (first view of the first patients)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=max(10, tile // 9))
    grid = Image.new("L", (4 * tile, 4 * tile), 0)
    draw = ImageDraw.Draw(grid)
    for r, (label, cls) in enumerate([("AFF", 1), ("AFF", 1), ("NFF", 0), ("NFF", 0)]):
        rows = latents[latents["y"] == cls].iloc[(r % 2) * 4:(r % 2) * 4 + 4]
        for c, (_, row) in enumerate(rows.iterrows()):
            view = synth_images.render(row.to_dict(), view=0, size=config.image_size, seed=config.seed)
            im = Image.fromarray(np.round(view.display * 255).astype(np.uint8)).resize((tile, tile), Image.BILINEAR)
            grid.paste(im, (c * tile, r * tile))
            x0, y0 = c * tile + 4, r * tile + tile - tile // 7 - 4
            draw.rectangle([x0, y0, x0 + tile // 3, y0 + tile // 7], fill=0)
            draw.text((x0 + 3, y0), label, fill=255, font=font)
    grid.save(path, optimize=False)


def _write_truth(path: Path, config: SynthConfig, register: pd.DataFrame, oracle: pd.DataFrame,
                 views: list) -> None:
    """truth.json: the risk columns (``synth_truth.register_truth``) and each image's sign regions."""
    from benchmark.data import synth_register, synth_risk, synth_truth

    pool_columns = list(synth_register.draw_pool(np.random.default_rng(0), 2).columns)
    truth = {"format": synth_truth.FORMAT,
             "register": synth_truth.register_truth(synth_risk.risk_model(config.risk_seed), register,
                                                    oracle["oracle_register"].to_numpy(), pool_columns, config.seed),
             "images": synth_truth.image_truth(views)}
    path.write_text(json.dumps(truth, separators=(",", ":")))


def write_cohort(out_dir: str | Path, config: SynthConfig, *, reuse: bool = True) -> Path:
    """Write the cohort into ``out_dir`` and return the path of its ``dataset.yaml``.

    With ``reuse`` and a complete earlier output of the same settings there, nothing is
    rewritten. An earlier synth output with other settings is replaced (only the files it
    listed are deleted); a non-empty folder not written by synth is refused (``UserError``).
    """
    config.validate()
    out = Path(out_dir)
    previous = _check_target(out)
    settings = config.settings()
    yaml_path = out / "dataset.yaml"
    if (reuse and previous and previous.get("complete") and previous.get("settings") == settings
            and previous.get("generator") == GENERATOR
            and all((out / f).is_file() for f in previous.get("files", []))):
        return yaml_path

    register, latents, oracle = simulate(config)
    if config.exposure != 1.0:
        latents = latents.assign(exposure=float(config.exposure))
    ids = latents["patient_id"].tolist()
    paths = [[f"{pid}/{pid}_{k + 1}.dcm" for k in range(int(n))] for pid, n in zip(ids, latents["n_images"])]
    files = ["dataset.yaml", "register.csv", "images.csv", "oracle.csv", "truth.json", "preview.png"]
    files += [f"images/{p}" for ps in paths for p in ps]

    if previous:
        _remove_previous(out, previous)
    out.mkdir(parents=True, exist_ok=True)
    marker = {"generator": GENERATOR, "settings": settings, "complete": False, "files": files}
    (out / MARKER).write_text(json.dumps(marker, indent=1))

    register.to_csv(out / "register.csv", index=False, float_format="%.6g")
    pd.DataFrame({"path": [p for ps in paths for p in ps],
                  "patient_id": [pid for pid, ps in zip(ids, paths) for _ in ps]}).to_csv(out / "images.csv", index=False)
    oracle.to_csv(out / "oracle.csv", index=False, float_format="%.10g")
    dataset = {
        "name": config.site_name or f"synthetic-aff-seed{config.seed}",
        "register": "register.csv",
        "id_column": "patient_id",
        "label": {"column": "group", "positive": "AFF", "negative": "NFF"},
        "images": {"root": "images/", "manifest": "images.csv"},
        "categorical": [c for c in CATEGORICAL if c in register.columns],
        "drop_columns": [],
        "oracle": "oracle.csv",
        "truth": "truth.json",
    }
    site = synth_site.description(tuple(config.shifts), config.exposure, config.site_name)
    if site:
        dataset["description"] = site
    yaml_path.write_text(yaml.safe_dump(dataset, sort_keys=False))
    views = _render_all(latents, paths, out / "images", config)
    _write_truth(out / "truth.json", config, register, oracle, views)
    _preview(latents, config, out / "preview.png")
    marker["complete"] = True
    (out / MARKER).write_text(json.dumps(marker, indent=1))
    return yaml_path


# ---------------------------------------------------------------- command line

def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = SynthConfig()
    parser.add_argument("out", type=Path, help="folder to write (new, empty, or an earlier synth output)")
    parser.add_argument("--patients", type=int, default=d.n_patients, help="number of patients (%(default)s)")
    parser.add_argument("--aff", type=int, default=None, help="number of AFF patients (172 of 4172; same share if --patients changes)")
    parser.add_argument("--seed", type=int, default=d.seed, help="random seed (%(default)s)")
    parser.add_argument("--image-size", type=int, default=d.image_size, help="image side in pixels (%(default)s)")
    parser.add_argument("--images-per-patient", type=float, default=d.images_per_patient,
                        help="mean number of views per patient, at least 1 (%(default)s)")
    parser.add_argument("--register-strength", type=float, default=d.register_strength,
                        help="scale of the register risk; 0 makes the register uninformative (%(default)s)")
    parser.add_argument("--image-strength", type=float, default=d.image_strength,
                        help="separation of the image signs; 0 makes images uninformative (%(default)s)")
    parser.add_argument("--relation", choices=["complementary", "redundant"], default=d.relation,
                        help="redundant: images also show the register risk (%(default)s)")
    parser.add_argument("--label-noise", type=float, default=d.label_noise, help="label flip probability (%(default)s)")
    parser.add_argument("--sparse-columns", type=int, default=d.sparse_columns,
                        help="number of sparse indicator columns without signal (%(default)s)")
    parser.add_argument("--workers", type=int, default=None, help="processes for rendering (all cores)")
    synth_site.add_arguments(parser)
    # explanations: which columns carry the risk (truth.json says which, whatever the seed)
    parser.add_argument("--risk-seed", type=int, default=None, metavar="N",
                        help="draw another set of risk columns with this seed (default: the default risk)")


def command(args: argparse.Namespace) -> int:
    config = SynthConfig(n_patients=args.patients, n_aff=args.aff, seed=args.seed, image_size=args.image_size,
                         images_per_patient=args.images_per_patient, register_strength=args.register_strength,
                         image_strength=args.image_strength, relation=args.relation, label_noise=args.label_noise,
                         sparse_columns=args.sparse_columns, workers=args.workers,
                         shifts=tuple(args.shift), exposure=args.exposure, site_name=args.site_name)
    config.risk_seed = args.risk_seed
    start = time.time()
    path = write_cohort(args.out, config)
    oracle = pd.read_csv(path.parent / "oracle.csv")
    n_img = len(pd.read_csv(path.parent / "images.csv"))
    from sklearn.metrics import roc_auc_score
    y = (pd.read_csv(path.parent / "register.csv", usecols=["group"])["group"] == "AFF").to_numpy()
    aucs = ", ".join(f"{c.split('_')[1]} {roc_auc_score(y, oracle[c]):.3f}"
                     for c in ("oracle_register", "oracle_image", "oracle_both"))
    print(f"wrote {path} ({config.n_patients} patients, {config.n_aff} AFF, {n_img} images, "
          f"{time.time() - start:.0f} s); oracle AUC: {aucs}")
    return 0
