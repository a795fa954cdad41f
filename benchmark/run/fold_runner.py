"""One work unit: a candidate on one outer fold (search, bag, calibration, the part file).

    fr = FoldRunner(cohort, profile, rd, storage, progress, seed=0, metric="auc", calibration="platt",
                    ctx_base=ctx, candidates={c.name: c for c in cands})
    row = fr.run_unit(unit)      # a studies.csv row; parts/<candidate>__r<repeat>_f<fold>.parquet written

The search sees only the outer-train part (inner folds); the bag is the best trial's
inner-fold models; calibration is fitted on the inner out-of-fold predictions; fusion
candidates read consumed candidates' parts through the ``fusion_inputs`` contract.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.candidates.base import TrialContext, get_family
from benchmark.candidates.fusion_inputs import source_frame
from benchmark.data.cohort import Cohort
from benchmark.data.splits import Fold
from benchmark.errors import UserError
from benchmark.protocol import ROLES
from benchmark.run.bag import BagPredictions
from benchmark.run.explain_unit import ExplainUnit
from benchmark.run.folder import RunDir
from benchmark.run.progress import Progress
from benchmark.run.units import WorkUnit, inner_fold_list, named_warm_source, warm_start_role
from benchmark.search.pruning import for_search
from benchmark.search.profiles import Profile
from benchmark.search.spaces import Candidate
from benchmark.search.study import fit_context, run_study, stable_seed
from benchmark.search.trials import study_name

REUSED = "reused from an earlier run"   # the progress line of a unit --resume does not run again


# ---- one candidate x outer fold -------------------------------------------------------------

class FoldRunner(BagPredictions, ExplainUnit):
    """Runs work units in plan order, remembering each fold's best image / register candidate.

    Its bag's predictions, part file and learning curve come from ``bag.BagPredictions``; the
    explanations made while a unit's models exist from ``explain_unit.ExplainUnit``."""

    def __init__(self, cohort: Cohort, profile: Profile, rd: RunDir, storage: str, progress: Progress, *,
                 seed: int, metric: str, calibration: str, ctx_base: TrialContext,
                 candidates: dict[str, Candidate]) -> None:
        self.cohort, self.profile, self.rd, self.storage, self.progress = cohort, profile, rd, storage, progress
        self.seed, self.metric, self.calibration, self.ctx_base = seed, metric, calibration, ctx_base
        self.cands = candidates
        # (modality, repeat, fold) -> (inner-CV score, name) of the best image / register candidate so far
        self.best: dict = {}
        # (n_patients,) True for patients with at least one image (image inputs say nothing for the rest)
        self.has_images = np.zeros(cohort.n_patients, dtype=bool)
        if cohort.has_images:
            self.has_images[cohort.images["patient"].unique()] = True

    def inner(self, fold: Fold) -> list[Fold]:
        """The inner folds of an outer fold: the same for the search, the bag, embeddings and folds.csv."""
        return inner_fold_list(self.cohort.y, fold, self.profile, self.seed)

    def study_seed(self, name: str, fold: Fold) -> int:
        return stable_seed(self.seed, name, fold.repeat, fold.index)

    def _context(self, cand: Candidate, warm: dict | None = None) -> TrialContext:
        """The run's context with this candidate's epoch cap (image and register networks differ)
        and, for a family that starts from another candidate's weights, where they are (``warm``)."""
        fam = get_family(cand.family)
        ctx = replace(self.ctx_base, max_epochs=self.profile.epoch_cap(cand.modality, fam.uses_images))
        if warm is not None:
            ctx = replace(ctx, extra={**ctx.extra, "warm_start": warm})
        return ctx

    # ---- warm starts: a family with ``warm_start_role`` starts from that role's weights --------

    def _warm_roles(self) -> set[str]:
        """Roles and named candidates some candidate of the run starts from (their members' weights are kept)."""
        return {role for c in self.cands.values() if (role := warm_start_role(c))}

    def _named_sources(self) -> set[str]:
        return {s for c in self.cands.values() if (s := named_warm_source(c))}

    def _weights_path(self, name: str, fold: Fold, tag: str) -> Path:
        return self.rd.part(name, fold.repeat, fold.index, f"w{tag}.safetensors")

    def save_warm_weights(self, cand: Candidate, fold: Fold, models: list, full=None) -> None:
        """Keep the backbone weights of each member (and the refit) of a candidate a later one may start from."""
        wanted = {ROLES[r] for r in self._warm_roles() if r in ROLES}
        if (cand.modality not in wanted and cand.name not in self._named_sources()) \
                or not hasattr(models[0], "warm_start_state"):
            return
        from safetensors.torch import save_file

        meta = {"members": [], "full": None}
        for tag, model in [(str(k), m) for k, m in enumerate(models)] + ([("full", full)] if full is not None else []):
            arch, state = model.warm_start_state()
            path = self._weights_path(cand.name, fold, tag)
            self.rd.write_atomic(path, lambda q, st=state: save_file({k: v.detach().cpu().contiguous()
                                                                      for k, v in st.items()}, str(q)))
            meta["arch"] = arch
            if tag == "full":
                meta["full"] = path.name
            else:
                meta["members"].append(path.name)
        self.rd.write_atomic(self.rd.part(cand.name, fold.repeat, fold.index, "weights.json"),
                             lambda q: q.write_text(json.dumps(meta)))

    def warm_start_for(self, cand: Candidate, fold: Fold, source: str | None = None) -> dict | None:
        """Where ``cand`` starts from in this fold: ``{"arch", "members": [paths], "full": path}`` or None.

        ``source`` is the candidate playing the family's ``warm_start_role`` (default: the fold's
        choice, or the candidate ``warm_start`` names). Member k starts from the source's member k,
        trained on the same inner-train patients, so no network starts from weights that saw the
        patients that score it; the refit starts from the source's refit. Weights of the role's
        other candidates in this fold are deleted then (they are no longer needed), except a named
        source's.
        """
        role = warm_start_role(cand)
        if role is None:
            return None
        source = source or (self.best_name(role, fold) if role in ROLES else role)
        meta_path = None if source is None else self.rd.part(source, fold.repeat, fold.index, "weights.json")
        if meta_path is None or not meta_path.exists():
            return None
        meta = json.loads(meta_path.read_text())
        keep = self._named_sources() | {source}
        for other in self.cands.values():
            if role in ROLES and other.modality == ROLES[role] and other.name not in keep:
                for p in self.rd.parts.glob(f"{other.name}__r{fold.repeat}_f{fold.index}.w*.safetensors"):
                    p.unlink(missing_ok=True)
        return {"source": source, "arch": meta["arch"], "members": [str(self.rd.parts / m) for m in meta["members"]],
                "full": None if meta["full"] is None else str(self.rd.parts / meta["full"])}

    def _view_maker(self, cand: Candidate, upstream: pd.DataFrame | None):
        fam = get_family(cand.family)
        size = self.profile.image_size if fam.uses_images else None

        def make(positions: np.ndarray, labels: bool):
            up = None
            if upstream is not None:
                up = upstream.loc[np.asarray(positions)]
            return self.cohort.view(positions, labels=labels, image_size=size, upstream=up)

        return make

    def best_name(self, role: str, fold: Fold) -> str | None:
        """The candidate playing ``role`` (best_image / best_register) in this fold, by inner-CV score."""
        hit = self.best.get((ROLES[role], fold.repeat, fold.index))
        return None if hit is None else hit[1]

    def recall(self, rows: list[tuple[str, dict]]) -> None:
        """Take the studies.csv rows of finished units, in plan order, as the fold choices they make.

        A worker that runs a unit sees only what the unit waits for (``WorkUnit.needs``): the
        rows of every candidate of a consumed role in its fold, as the sequential runner has
        seen them by then, so both pick the same ``best_image`` / ``best_register``.
        """
        for name, row in rows:
            self._record_best(self.cands[name], row)

    def _record_best(self, cand: Candidate, row: dict) -> None:
        """Update the best image / register candidate of the row's fold (ties: the earlier one)."""
        if cand.modality not in ROLES.values() or row["status"] == "failed":
            return
        key = (cand.modality, row["repeat"], row["outer_fold"])
        if key in self.best and not row["best_value"] > self.best[key][0]:
            return
        self.best[key] = (row["best_value"], cand.name)

    def read_inputs(self, cand: Candidate, fold: Fold) -> list[tuple[str, str, pd.DataFrame]]:
        """(role or name, candidate, its part indexed by position) of every consumed input.

        A consumed role without a finished candidate in this fold raises ``MissingInput``.
        """
        out = []
        for up in cand.consumes:
            name = self.best_name(up, fold) if up in ROLES else up
            path = None if name is None else self.rd.part(name, fold.repeat, fold.index)
            if path is None or not path.exists():
                raise MissingInput(f"its input {up} has no finished candidate in repeat {fold.repeat} "
                                   f"fold {fold.index + 1}")
            out.append((up, name, pd.read_parquet(path).set_index("position")))
        return out

    def upstream_for(self, cand: Candidate, fold: Fold, member: int | None = None,
                     inputs: list | None = None) -> pd.DataFrame | None:
        """Predictions of consumed candidates, indexed by cohort position.

        Outer-train patients get the consumed bag's inner out-of-fold values (one member's
        prediction each), outer-test patients the value of the consumed bag's member ``member``,
        or, when None (what a fusion's refit reads), the bag's prediction mapped to one member's
        spread (``prob_bag``, ``calibration.bag_prediction``), never an input's refit: fusion
        member k combines member k of each input, so the inputs' disagreement carries through
        to the fusion's uncertainty, and every input at test is the kind the fusion trained on.
        Nothing comes from a model trained on the patient. ``inputs`` are ``read_inputs``' parts
        (read when not given); a part written before ``prob_bag`` existed gives its ``prob``.
        """
        if not cand.consumes:
            return None
        inputs = self.read_inputs(cand, fold) if inputs is None else inputs
        cols = []
        for up, name, df in inputs:
            prob, raw = df["prob"].copy(), df["prob_raw"].copy()
            test = (df["set"] == "test").to_numpy()
            if member is not None:
                prob[test] = _member(df.loc[test, "members"], member)
                raw[test] = _member(df.loc[test, "members_raw"] if "members_raw" in df else df.loc[test, "members"], member)
            elif "prob_bag" in df:
                prob[test], raw[test] = df.loc[test, "prob_bag"], df.loc[test, "prob_raw_bag"]
            elif self.profile.refits(self.cands[name].modality) and self.profile.refits(cand.modality):
                self.progress.say(f"[{cand.name}] {name}'s part has no prob_bag (written by an older version): "
                                  "the refit reads its refit's prediction at test")
            cols.append(source_frame(up, prob, raw, index=df.index,
                                     missing=self.no_image(name, df.index.to_numpy())))
        out = pd.concat(cols, axis=1)
        out.attrs["sources"] = {up: name for up, name, _ in inputs}
        return out

    def no_image(self, name: str, positions: np.ndarray) -> np.ndarray | None:
        """Where candidate ``name`` has nothing to say: an image candidate and patients without images."""
        return ~self.has_images[positions] if self.cands[name].modality == "image" else None

    def run_unit(self, unit: WorkUnit) -> dict:
        """Search, refit the bag, calibrate, write the part; returns the studies.csv row.

        NumPy's BLAS and OpenMP pools get the fits' thread count for the unit (a parallel
        worker's default differs): their sums, e.g. in logistic regression, depend on it.
        """
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=int(self.ctx_base.extra.get("n_threads") or 1)):
            return self._run_unit(unit)

    def _run_unit(self, unit: WorkUnit) -> dict:
        cand, fold = unit.candidate, unit.fold
        rd, profile = self.rd, self.profile
        info_path = rd.part(cand.name, fold.repeat, fold.index, "json")
        label = unit.label(profile)
        row = rd.finished_row(*unit.key)
        if row is not None:
            self.progress.unit_done(unit.steps(profile))
            self._record_best(cand, row)
            self.progress.say(f"{label}: {REUSED}")
            return row
        t0 = time.monotonic()
        y = self.cohort.y
        inner = self.inner(fold)
        try:
            inputs = self.read_inputs(cand, fold)   # each consumed part read once per unit
        except MissingInput as exc:   # a failed input fails this fusion candidate's fold, not the run
            self.progress.unit_done(unit.steps(profile))
            self.progress.say(f"{label} FAILED: {exc}")
            return failed_row(unit, f"input missing: {exc}")
        make_view = self._view_maker(cand, self.upstream_for(cand, fold, inputs=inputs))
        seed = self.study_seed(cand.name, fold)
        ctx_base = self._context(cand, self.warm_start_for(cand, fold))
        cand = for_search(cand, profile.pruner, ctx_base.max_epochs)   # successive halving fixes epochs
        state = {"best": None}

        def on_trial(number: int, value: float | None, st: str) -> None:
            self.progress.unit_done()
            if value is not None and (state["best"] is None or value > state["best"]):
                state["best"] = value
            shown = f"{self.metric}={value:.3f}" if value is not None else st.lower()
            best_s = f" (best {state['best']:.3f})" if state["best"] is not None else ""
            self.progress.say(f"{label} trial {number + 1}/{n_trials} {shown}{best_s}")

        n_trials = profile.trials_for(cand.modality)
        res = run_study(cand, make_view, y, inner, storage=self.storage,
                        study_name=study_name(rd.run_id, cand.name, fold.repeat, fold.index), n_trials=n_trials,
                        timeout_s=profile.study_timeout_s, seed=seed, ctx_base=ctx_base,
                        metric=self.metric, repeat=fold.repeat, outer_index=fold.index, on_trial=on_trial,
                        pruner=profile.pruner)
        row = _row(cand, fold, best_value=res.best_value, n_trials=res.n_trials, n_failed=res.n_failed,
                   n_pruned=res.n_pruned, best_params=json.dumps(res.best_params, default=str),
                   timed_out=bool(res.timed_out))
        if res.best_params is None:
            reasons = pd.Series(res.fail_reasons or ["no trial finished in the time budget"]).value_counts()
            row.update(status="failed", info=f"every trial failed: {reasons.index[0]} ({reasons.iloc[0]}x)")
            self.progress.unit_done()
            self.progress.say(f"{label} FAILED: {row['info']}")
        else:
            try:
                models = self._bag(cand, fold, inner, res.best_params, make_view, seed, res.best_models, ctx_base)
                full = (self._refit_full(cand, fold, inner, res.best_params, make_view, seed, ctx_base)
                        if profile.refits(cand.modality) else None)
                cal = self._predict_bag(cand, fold, inner, models, make_view, res.best_valid_preds, inputs, full=full)
                self.explain_unit(cand, fold, models, full, make_view, inputs, cal)
                self.save_warm_weights(cand, fold, models, full)
                row.update(self._curve(inner, models, make_view, res.best_valid_preds))
                row.update(self._half_budget(cand, fold, inner, res.best_params, make_view, seed, ctx_base, models,
                                             res.best_valid_preds))
                self._record_best(cand, row)
                res.best_models = res.best_valid_preds = None
                del models
                if res.n_failed:
                    row.update(status="partial", info=f"{res.n_failed} of {res.n_trials} trials failed: {res.fail_reasons[0]}")
            except (KeyboardInterrupt, UserError):
                raise
            except Exception as exc:
                row.update(status="failed", info=f"refit failed: {type(exc).__name__}: {str(exc)[:200]}")
            self.progress.unit_done()
            self.progress.say(f"{label} refit done, inner-CV {self.metric} {res.best_value:.3f}")
        row["wall_s"] = round(time.monotonic() - t0, 2)
        if row["status"] != "failed":
            rd.write_atomic(info_path, lambda q: q.write_text(json.dumps(row, default=str)))
        return row

    def _bag(self, cand: Candidate, fold: Fold, inner: list[Fold], params: dict, make_view, seed: int,
             trained: list | None, ctx_base: TrialContext) -> list:
        """The bag: the best params trained once per inner fold (or the search's own models).

        ``trained`` are the best trial's models from the search (same params, same seeds), used
        instead of training again when given.
        """
        if trained is not None:
            return list(trained)
        models = []
        for k, f in enumerate(inner):
            model = cand.build(params)
            ctx = fit_context(ctx_base, seed, fold.repeat, fold.index, k)
            models.append(model.fit(make_view(f.train, True), None, ctx))
        return models

    def _refit_full(self, cand: Candidate, fold: Fold, inner: list[Fold], params: dict, make_view, seed: int,
                    ctx_base: TrialContext):
        """The best params trained once more on the whole outer-train part (AutoGluon's ``refit_full``).

        Its own seed (inner index K), no validation part: iterative families stop early on a
        holdout of their own training part as in the bag; CNNs train the searched epochs.
        """
        ctx = fit_context(ctx_base, seed, fold.repeat, fold.index, len(inner))
        return cand.build(params).fit(make_view(fold.train, True), None, ctx)


def _row(cand: Candidate, fold: Fold, **fields) -> dict:
    """A studies.csv row of one unit: ``fields`` over the defaults of a unit that ran no trial."""
    return {"candidate": cand.name, "repeat": fold.repeat, "outer_fold": fold.index, "best_value": float("nan"),
            "n_trials": 0, "n_failed": 0, "n_pruned": 0, "status": "ok", "info": "", "wall_s": 0.0, **fields}


def failed_row(unit: WorkUnit, info: str) -> dict:
    """The studies.csv row of a unit that could not run (e.g. its worker died twice)."""
    return _row(unit.candidate, unit.fold, status="failed", info=info, best_params="null")


class MissingInput(RuntimeError):
    """A fusion candidate's consumed role has no finished candidate in a fold."""


def _member(cells: pd.Series, k: int) -> np.ndarray:
    """Member ``k`` of each row's member list (wrapping when an input has fewer members)."""
    return np.array([float(m[k % len(m)]) for m in cells], dtype=np.float64)
