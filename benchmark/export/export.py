"""``python -m benchmark export RUN [--candidate NAME] [--out DIR]``: the winner, trained on everyone.

Without ``--candidate`` the model the run's evidence supports (``export_choice``): the best
fusion by inner-CV score when the findings answer Q3 "Yes" (it beats both the best image and
the best register model), else the best single-modality model by inner-CV score; the model
card says why.

The run's nested cross-validation estimated how well a *procedure* does: search the
candidate's space on inner folds, bag the best trial's inner-fold models, calibrate on
their out-of-fold predictions. Export applies that same procedure (the run's profile,
seed, calibration and metric) once more, to the whole cohort:

1. the inner folds are folds of all patients; the Optuna study searches on them;
2. the bag is the best trial's K inner-fold models (and, when the profile says
   ``refit_full``, one more model of the best params on every patient, which then gives the
   prediction while the bag gives the uncertainty, as in the run);
3. the calibrator is fitted on their out-of-fold predictions (every patient once);
4. conformal thresholds (90 %, 95 %, per class) and the decision threshold (90 %
   specificity) come from the calibrated out-of-fold predictions;
5. a fusion candidate exports its inputs with it (each through 1-4, in the run's order);
   a consumed role (best_image, best_register) is the candidate the run chose for it in
   most outer folds (ties: the higher mean inner score); the choice is not searched again.
   A warm-started fusion network's source (the same role choice, or the candidate the
   profile's ``warm_start_source`` names) is trained first for its weights, as in the run;
   the bundle keeps it only when the fusion also consumes it.

Categorical levels seen in fewer than 5 patients are pooled into ``other`` first
(``schema.pool_rare_levels``), so that no rare level reaches the bundle. The run's nested-CV
figures are the performance claim for this procedure; the bundle's model card says so. The bundle is written by ``benchmark.export.bundle``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import logit

from benchmark.candidates.base import get_family
from benchmark.candidates.calibration import Calibrator, member_scale_ratio
from benchmark.candidates.fusion_inputs import source_frame
from benchmark.data.splits import Fold
from benchmark.errors import UserError
from benchmark.evaluate.conformal import fit_thresholds
from benchmark.evaluate.metrics import threshold_at_spec
from benchmark.export.model import LEVELS, Component, ExportedModel
from benchmark.export.schema import pool_rare_levels, schema_of
from benchmark.protocol import ROLES
from benchmark.run.folder import RunConfig, RunDir, versions
from benchmark.run.pretrained import bundle_weights, pin_weights, scrub_weight_paths
from benchmark.run.units import warm_start_role
from benchmark.search.profiles import get_profile
from benchmark.search.spaces import Candidate
from benchmark.search.pruning import for_search
from benchmark.search.study import run_study, stable_seed

SPECIFICITY = 0.90   # the exported decision threshold's specificity on the out-of-fold predictions
_EPS = 1e-6


def default_candidate(run_dir: Path) -> str:
    """The candidate the run's evidence supports (``export_choice``)."""
    return export_choice(run_dir)[0]


def export_choice(run_dir: Path) -> tuple[str, str]:
    """(candidate, why): the best fusion by inner-CV score when the run's findings answer Q3 "Yes" (it
    discriminates better than the best image and the best register model, Holm-adjusted), else the best
    single-modality candidate by mean inner-CV score; ``why`` is the sentence the model card states."""
    from benchmark.report.findings import combining_answer

    st = _studies(run_dir)
    ok = st[st["status"] != "failed"]
    if ok.empty:
        raise UserError(f"{run_dir}: no candidate finished in this run; nothing to export")
    score = ok.groupby("candidate").agg(best=("best_value", "mean"), modality=("modality", "first"))
    kind, fusion = combining_answer(run_dir) if (run_dir / "leaderboard.csv").exists() else ("cannot", None)
    if kind == "yes" and fusion in score.index:
        return fusion, (f"the run's findings answer Q3 'Yes': {fusion}, the best fusion by inner-CV score, "
                        "discriminates better than both the best image and the best register model (paired DeLong "
                        "tests, Holm-adjusted, comparisons.csv)")
    single = score[score["modality"].isin(list(ROLES.values()))]
    pick = single if len(single) else score
    name = str(pick["best"].idxmax())
    said = {"no": "'No' (it does not discriminate better than a single modality by more than the margin)",
            "worse": "'Worse'", "not_shown": "'Not shown' (no gain over both single modalities was shown)",
            "cannot": "no answer"}.get(kind, kind)
    return name, (f"the run's findings give Q3 {said}, so the best single-modality model by mean inner-CV score, "
                  f"{name} ({score.loc[name, 'modality']}, {score.loc[name, 'best']:.3f}), is exported rather than "
                  "a fusion")


def _studies(run_dir: Path) -> pd.DataFrame:
    path = run_dir / "studies.csv"
    if not path.exists():
        raise UserError(f"{run_dir}: no studies.csv; export needs a finished run (run it to the end or --resume it)")
    return pd.read_csv(path)


def role_choice(run_dir: Path, role: str, modality_of: dict[str, str]) -> str:
    """The candidate a run chose for ``role`` in most outer folds (ties: higher mean inner score)."""
    st = _studies(run_dir)
    st = st[(st["status"] != "failed") & st["candidate"].map(lambda c: modality_of.get(c) == ROLES[role])]
    if st.empty:
        raise UserError(f"{run_dir}: no {ROLES[role]} candidate finished, so {role} cannot be exported")
    winners = st.loc[st.groupby(["repeat", "outer_fold"])["best_value"].idxmax(), "candidate"]
    counts = winners.value_counts()
    mean = st.groupby("candidate")["best_value"].mean()
    top = [c for c in counts.index if counts[c] == counts.max()]
    return max(top, key=lambda c: mean[c])


def _order(name: str, cands: dict[str, Candidate], run_dir: Path) -> list[tuple[str, dict[str, str], str | None]]:
    """(candidate, {consumed role/name: candidate}, warm-start source or None) in computing order,
    ``name`` last. A role the run could not fill for a warm start (no image candidate finished)
    leaves the network to start from its own weights, as in the run."""
    modality_of = {c.name: c.modality for c in cands.values()}
    out: list[tuple[str, dict[str, str], str | None]] = []

    def visit(n: str, path: tuple) -> None:
        if n in path:
            raise UserError(f"candidate {n!r} consumes itself through {' -> '.join(path)}")
        if any(n == done for done, _, _ in out):
            return
        cand = cands[n]
        sources = {}
        for up in cand.consumes:
            src = role_choice(run_dir, up, modality_of) if up in ROLES else up
            visit(src, path + (n,))
            sources[up] = src
        warm = warm_start_role(cand)
        if warm in ROLES:
            try:
                warm = role_choice(run_dir, warm, modality_of)
            except UserError:
                warm = None
        if warm is not None:
            visit(warm, path + (n,))
        out.append((n, sources, warm))

    visit(name, ())
    return out


def _kept(name: str, order: list[tuple[str, dict[str, str], str | None]]) -> set[str]:
    """The components the bundle keeps: ``name`` and what it consumes, recursively (not warm-start sources)."""
    sources = {n: src for n, src, _ in order}
    keep, todo = set(), [name]
    while todo:
        n = todo.pop()
        if n not in keep:
            keep.add(n)
            todo += list(sources[n].values())
    return keep


@dataclass
class Exported:
    """What ``build_export`` made: the model (in memory), the cohort it was trained on, the final
    component's out-of-fold predictions (calibrated, raw) over every patient."""

    model: ExportedModel
    cohort: object
    oof: tuple[np.ndarray, np.ndarray]
    run_dir: Path


def _run_settings(run_dir: Path, candidate: str | None):
    """(manifest, run config, candidate name, every candidate, why that candidate) of a complete run
    (UserError otherwise)."""
    from benchmark.run.units import resolve_candidates

    man_path = run_dir / "manifest.json"
    if not man_path.exists():
        raise UserError(f"{run_dir}: not a run folder (no manifest.json); give a folder under results/")
    man = json.loads(man_path.read_text())
    if man.get("status") != "complete":
        raise UserError(f"{run_dir}: the run is {man.get('status', 'unfinished')}; export needs a complete run "
                        "(continue it with run --resume)")
    cfg = RunConfig(**{**man["config"], "resume": False})
    name, why = (candidate, "chosen with --candidate") if candidate else export_choice(run_dir)
    profile = get_profile(man["profile_name"], cfg.spaces)
    _, allc = resolve_candidates(cfg, profile)
    allc = pin_weights(allc, man, profile)   # each network starts from the weights it started from in the run
    if name not in allc or name not in set(_studies(run_dir)["candidate"]):
        raise UserError(f"--candidate {name!r} is not a candidate of this run; the run has "
                        f"{', '.join(man.get('candidates', []))}")
    return man, cfg, name, allc, why


def build_export(run_dir: Path, candidate: str | None = None, device: str = "auto") -> Exported:
    """Train ``candidate``'s procedure (default: ``default_candidate``) on the run's whole cohort."""
    from benchmark.run.units import load_run_cohort, pick_device
    from benchmark.run.runner import base_context

    run_dir = Path(run_dir)
    man, cfg, name, allc, why = _run_settings(run_dir, candidate)
    device = pick_device(device)
    profile = get_profile(man["profile_name"], cfg.spaces)
    cohort, _ = load_run_cohort(cfg, profile)
    if cohort.fingerprint != man["dataset"]["fingerprint"]:
        raise UserError(f"{cfg.data}: the dataset changed since run {run_dir.name} (fingerprint differs); "
                        "export needs the run's data")
    cohort = pool_rare_levels(cohort)   # no level of fewer than 5 patients goes into the bundle
    order = _order(name, allc, run_dir)
    kept = _kept(name, order)
    warm_only = [n for n, _, _ in order if n not in kept]
    print(f"export {name} from run {run_dir.name}: profile {profile.name}, seed {cfg.seed}, {cohort.n_patients} "
          f"patients ({int(cohort.y.sum())} AFF); components: {', '.join(n for n, _, _ in order if n in kept)}"
          + (f"; trained for warm starts only: {', '.join(warm_only)}" if warm_only else ""), flush=True)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="aff-export-") as tmp:
        trainer = _Trainer(cohort, profile, cfg, Path(tmp), base_context(device, profile, cfg.seed, cfg.deterministic),
                           {n: allc[n] for n, _, _ in order})
        comps = [trainer.component(allc[n], sources, run_dir, warm=warm) for n, sources, warm in order]
        comps = [c for c in comps if c.name in kept]
    scrub_weight_paths(comps)
    y, oof = cohort.y, trainer.oof[name][0]
    conformal = {lv: [float(q) for q in fit_thresholds(y, oof, alpha=1 - int(lv) / 100)] for lv in LEVELS}
    threshold = float(threshold_at_spec(y, oof, SPECIFICITY))
    reads_register = any(_reads_register(c) for c in comps)
    image_size = max((c.image_size for c in comps if c.image_size is not None), default=None)
    meta = {
        "candidate": name, "family": allc[name].family, "modality": allc[name].modality, "why": why,
        "run": run_dir.name, "run_id": man.get("run_id"), "profile": profile.name, "seed": cfg.seed,
        "calibration": cfg.calibration, "metric": cfg.metric, "created": dt.datetime.now().isoformat(timespec="seconds"),
        "versions": versions(), "device": device, "export_wall_s": round(time.monotonic() - t0, 1),
        "synthetic": bool(man["dataset"].get("synthetic")), "dataset_name": cohort.name,
        "components": [{"name": c.name, "family": c.family, "modality": c.modality, "members": len(c.members),
                        "sources": c.sources, "best_params": trainer.params[c.name], "r": c.r} for c in comps],
        "threshold_text": f"{threshold:.4f}: {int(SPECIFICITY * 100)} % specificity on the calibrated out-of-fold "
                          "predictions of the whole cohort",
        # patients each bag member trained on: in the run's nested CV, and here (the whole cohort)
        "member_patients_run": int(round(cohort.n_patients * (1 - 1 / profile.outer_folds) * (1 - 1 / profile.inner_folds))),
        "member_patients_export": int(round(cohort.n_patients * (1 - 1 / profile.inner_folds))),
        "weights": bundle_weights(man.get("weights"), [c.name for c in comps]),   # source, name, SHA-256
    }
    schema = schema_of(cohort, reads_register=reads_register, image_size=image_size)
    return Exported(ExportedModel(comps, conformal, threshold, schema, meta), cohort, trainer.oof[name], run_dir)


def export(run_dir: Path, candidate: str | None = None, out: Path | None = None, device: str = "auto",
           sign: Path | None = None) -> Path:
    """Train ``candidate``'s procedure on the run's whole cohort and write the bundle (signed with the private
    key ``sign`` when given); returns its folder."""
    from benchmark.export.bundle import write_bundle

    run_dir = Path(run_dir)
    t0 = time.monotonic()
    name = _run_settings(run_dir, candidate)[2]
    out = Path(out) if out else run_dir / "bundles" / name
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} exists and is not empty; choose another --out or remove it")
    ex = build_export(run_dir, name, device)
    path = write_bundle(ex.model, out, cohort=ex.cohort, run_dir=run_dir, oof=ex.oof, sign=sign)
    print(f"bundle: {path}  ({time.monotonic() - t0:.0f} s)", flush=True)
    return path


def _reads_register(comp: Component) -> bool:
    fam = get_family(comp.family)
    return comp.modality == "register" or (comp.modality == "fusion" and fam.uses_images)


class _Trainer:
    """Runs each component's procedure on the whole cohort and keeps its out-of-fold predictions."""

    def __init__(self, cohort, profile, cfg: RunConfig, tmp: Path, ctx_base, candidates: dict[str, Candidate]) -> None:
        """``candidates``: every component, known up front so that warm-start sources keep their weights."""
        from benchmark.run.fold_runner import FoldRunner
        from benchmark.run.progress import Progress

        self.cohort, self.profile, self.cfg = cohort, profile, cfg
        n = cohort.n_patients
        self.fold = Fold(repeat=0, index=0, train=np.arange(n), test=np.zeros(0, dtype=np.int64))
        self.storage = f"sqlite:///{(tmp / 'export.db').resolve()}"
        (tmp / "parts").mkdir(exist_ok=True)   # warm-start weights of the components, while they train
        self.fr = FoldRunner(cohort, profile, RunDir(tmp, run_id="export"), self.storage, Progress(1), seed=cfg.seed,
                             metric=cfg.metric, calibration=cfg.calibration, ctx_base=ctx_base,
                             candidates=dict(candidates))
        self.oof: dict[str, tuple[np.ndarray, np.ndarray]] = {}     # name -> (calibrated, raw) for every patient
        self.params: dict[str, dict] = {}

    def upstream(self, sources: dict[str, str]) -> pd.DataFrame | None:
        """The consumed components' out-of-fold predictions, as the run hands them to a fusion."""
        if not sources:
            return None
        idx = np.arange(self.cohort.n_patients)
        return pd.concat([source_frame(role, *self.oof[name], index=idx, missing=self.fr.no_image(name, idx))
                          for role, name in sources.items()], axis=1)

    def component(self, cand: Candidate, sources: dict[str, str], run_dir: Path, warm: str | None = None) -> Component:
        """``cand``'s procedure on the whole cohort, reading ``sources``' predictions and, when it is
        warm-started, starting from candidate ``warm``'s members."""
        t0 = time.monotonic()
        ctx_base = self.fr._context(cand, self.fr.warm_start_for(cand, self.fold, source=warm) if warm else None)
        cand = for_search(cand, self.profile.pruner, ctx_base.max_epochs)   # as the run searched it
        fam = get_family(cand.family)
        make_view = self.fr._view_maker(cand, self.upstream(sources))
        inner = self.fr.inner(self.fold)
        seed = stable_seed(self.cfg.seed, cand.name, "export")
        n_trials = self.profile.trials_for(cand.modality)

        def on_trial(number: int, value: float | None, st: str) -> None:
            shown = f"{self.cfg.metric}={value:.3f}" if value is not None else st.lower()
            print(f"[{cand.name}] whole cohort: trial {number + 1}/{n_trials} {shown}", flush=True)

        res = run_study(cand, make_view, self.cohort.y, inner, storage=self.storage, study_name=f"export:{cand.name}",
                        n_trials=n_trials, timeout_s=self.profile.study_timeout_s, seed=seed,
                        ctx_base=ctx_base, metric=self.cfg.metric, on_trial=on_trial, pruner=self.profile.pruner)
        if res.best_params is None:
            raise UserError(f"export of {cand.name}: every trial failed on the whole cohort "
                            f"({(res.fail_reasons or ['no trial finished'])[0]})")
        models = self.fr._bag(cand, self.fold, inner, res.best_params, make_view, seed, res.best_models, ctx_base)
        y = self.cohort.y
        oof, _ = self.fr.oof_predictions(inner, models, make_view, res.best_valid_preds)
        full = (self.fr._refit_full(cand, self.fold, inner, res.best_params, make_view, seed, ctx_base)
                if self.profile.refits(cand.modality) else None)
        self.fr.save_warm_weights(cand, self.fold, models, full)   # for a later component that starts from it
        cal = Calibrator(self.cfg.calibration).fit(oof, y)
        self.oof[cand.name] = (cal.transform(oof), oof)
        self.params[cand.name] = res.best_params
        z = logit(np.clip(oof, _EPS, 1 - _EPS))
        mu = float(np.mean(z[np.isfinite(z)]))
        image_size = self.profile.image_size if fam.uses_images else None
        print(f"[{cand.name}] whole cohort: inner-CV {self.cfg.metric} {res.best_value:.3f}, "
              f"{len(models)} members, {time.monotonic() - t0:.0f} s", flush=True)
        return Component(cand.name, cand.family, cand.modality, list(models), cal, run_scale_ratio(run_dir, cand.name),
                         mu, dict(sources), image_size, full)


def run_scale_ratio(run_dir: Path, name: str) -> float:
    """The median over the run's outer folds of the bag's ``r`` on its outer-test patients (1 when unknown)."""
    rs = []
    for part in sorted((run_dir / "parts").glob(f"{name}__r*_f*.parquet")):
        df = pd.read_parquet(part, columns=["set", "members_raw"] if _has_col(part, "members_raw") else ["set", "members"])
        cells = df.loc[df["set"] == "test"].iloc[:, 1]
        if cells.empty:
            continue
        k = min(len(m) for m in cells)
        raw = np.array([[float(m[j]) for m in cells] for j in range(k)])
        rs.append(member_scale_ratio(logit(np.clip(raw, _EPS, 1 - _EPS))))
    return float(np.median(rs)) if rs else 1.0


def _has_col(path: Path, col: str) -> bool:
    import pyarrow.parquet as pq

    return col in pq.read_schema(path).names


# ---- CLI ------------------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder (or its name under results/)")
    p.add_argument("--candidate", default=None, help="candidate to export (default: the best fusion by inner-CV "
                                                      "score when the findings say it beats both single modalities, "
                                                      "else the best single-modality model by inner-CV score)")
    p.add_argument("--out", default=None, metavar="DIR", help="bundle folder (default: RUN/bundles/<candidate>)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--results", default=None, metavar="DIR", help="where run folders are (default: results/)")
    p.add_argument("--sign", default=None, metavar="KEY", help="sign the bundle with this private key "
                                                               "(python -m benchmark keys new DIR makes one)")


def command(args: argparse.Namespace) -> int:
    from benchmark.report.html import resolve_run

    run_dir = resolve_run(args.run, Path(args.results) if args.results else None)
    export(run_dir, args.candidate, Path(args.out) if args.out else None, device=args.device,
           sign=Path(args.sign) if args.sign else None)
    return 0
