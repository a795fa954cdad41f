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

import numpy as np
import pandas as pd

from benchmark.candidates.base import TrialContext, get_family
from benchmark.candidates.calibration import Calibrator
from benchmark.candidates.fusion_inputs import source_frame
from benchmark.data.cohort import Cohort
from benchmark.data.splits import Fold
from benchmark.errors import UserError
from benchmark.protocol import ORACLE_COLUMNS, ROLES
from benchmark.run_folder import RunDir
from benchmark.run_plan import WorkUnit, inner_fold_list
from benchmark.search.spaces import Candidate, Profile
from benchmark.search.study import fit_context, run_study, stable_seed


class Progress:
    """One line per trial: candidate, fold, trial, elapsed and an estimate of the time left."""

    def __init__(self, total_units: int) -> None:
        self.total, self.done, self.start = max(total_units, 1), 0, time.monotonic()

    def unit_done(self, n: int = 1) -> None:
        self.done += n

    def eta(self) -> str:
        el = time.monotonic() - self.start
        if self.done == 0:
            return f"{_fmt(el)} elapsed"
        left = el / self.done * (self.total - self.done)
        return f"{_fmt(el)} elapsed, ~{_fmt(left)} left"

    def say(self, msg: str) -> None:
        print(f"{msg}  [{self.eta()}]", flush=True)


def _fmt(s: float) -> str:
    s = int(s)
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


# ---- one candidate x outer fold -------------------------------------------------------------

class FoldRunner:
    """Runs work units in plan order, remembering each fold's best image / register candidate."""

    def __init__(self, cohort: Cohort, profile: Profile, rd: RunDir, storage: str, progress: Progress, *,
                 seed: int, metric: str, calibration: str, ctx_base: TrialContext,
                 candidates: dict[str, Candidate]) -> None:
        self.cohort, self.profile, self.rd, self.storage, self.progress = cohort, profile, rd, storage, progress
        self.seed, self.metric, self.calibration, self.ctx_base = seed, metric, calibration, ctx_base
        self.cands = candidates
        # a candidate reads image embeddings: hold the best image candidate's bag for it
        self.need_embeddings = any(get_family(c.family).consumes_embeddings for c in candidates.values())
        # (modality, repeat, fold) -> (inner-CV score, name) of the best image / register candidate so far
        self.best: dict = {}
        self.image_bags: dict = {}      # (repeat, fold) -> (name, bag) of that best image candidate

    def inner(self, fold: Fold) -> list[Fold]:
        """The inner folds of an outer fold: the same for the search, the bag, embeddings and folds.csv."""
        return inner_fold_list(self.cohort.y, fold, self.profile, self.seed)

    def study_seed(self, name: str, fold: Fold) -> int:
        return stable_seed(self.seed, name, fold.repeat, fold.index)

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

    def _record_best(self, cand: Candidate, row: dict, models: list | None) -> None:
        """Update the best image / register candidate of the row's fold (ties: the earlier one).

        For the best image candidate the bag is held when a fusion candidate will read its
        embeddings; without a bag (reused after --resume) ``ensure_embeddings`` trains it again.
        """
        if cand.modality not in ROLES.values() or row["status"] == "failed":
            return
        key = (cand.modality, row["repeat"], row["outer_fold"])
        if key in self.best and not row["best_value"] > self.best[key][0]:
            return
        self.best[key] = (row["best_value"], cand.name)
        if cand.modality == "image" and self.need_embeddings:
            if models and hasattr(models[0], "embed"):
                self.image_bags[key[1:]] = (cand.name, models)
            else:
                self.image_bags.pop(key[1:], None)

    def upstream_for(self, cand: Candidate, fold: Fold) -> pd.DataFrame | None:
        """Predictions (and embeddings) of consumed candidates, indexed by cohort position.

        Outer-train patients get the consumed bag's inner out-of-fold values, outer-test
        patients its outer-test values: nothing comes from a model trained on the patient.
        """
        if not cand.consumes:
            return None
        cols = []
        for up in cand.consumes:
            name = self.best_name(up, fold) if up in ROLES else up
            if name is None:
                raise RuntimeError(f"no finished {up} candidate for repeat {fold.repeat} fold {fold.index}")
            df = pd.read_parquet(self.rd.part(name, fold.repeat, fold.index))
            df = df.set_index("position")
            emb_path = self.rd.part(name, fold.repeat, fold.index, "emb.npz")
            if get_family(cand.family).consumes_embeddings and self.cands[name].modality == "image":
                self.ensure_embeddings(name, fold)
            emb = np.load(emb_path) if emb_path.exists() else None
            cols.append(source_frame(up, df["prob"], df["prob_raw"], index=df.index,
                                     embeddings=None if emb is None else emb["emb"].astype(np.float32),
                                     embedding_index=None if emb is None else emb["position"]))
        out = pd.concat(cols, axis=1)
        out.attrs["sources"] = {up: (self.best_name(up, fold) if up in ROLES else up) for up in cand.consumes}
        return out

    def run_unit(self, unit: WorkUnit) -> dict:
        """Search, refit the bag, calibrate, write the part; returns the studies.csv row."""
        cand, fold = unit.candidate, unit.fold
        rd, profile = self.rd, self.profile
        part = rd.part(cand.name, fold.repeat, fold.index)
        info_path = rd.part(cand.name, fold.repeat, fold.index, "json")
        if part.exists() and info_path.exists():
            self.progress.unit_done(profile.n_trials + 1)
            row = json.loads(info_path.read_text())
            self._record_best(cand, row, None)
            self.progress.say(f"[{cand.name}] repeat {fold.repeat} fold {fold.index + 1}/{profile.outer_folds}: reused from an earlier run")
            return row
        t0 = time.monotonic()
        y = self.cohort.y
        inner = self.inner(fold)
        upstream = self.upstream_for(cand, fold)
        make_view = self._view_maker(cand, upstream)
        seed = self.study_seed(cand.name, fold)
        label = f"[{cand.name}] repeat {fold.repeat} fold {fold.index + 1}/{profile.outer_folds}"
        state = {"best": None}

        def on_trial(number: int, value: float | None, st: str) -> None:
            self.progress.unit_done()
            if value is not None and (state["best"] is None or value > state["best"]):
                state["best"] = value
            shown = f"{self.metric}={value:.3f}" if value is not None else st.lower()
            best_s = f" (best {state['best']:.3f})" if state["best"] is not None else ""
            self.progress.say(f"{label} trial {number + 1}/{profile.n_trials} {shown}{best_s}")

        res = run_study(cand, make_view, y, inner, storage=self.storage,
                        study_name=f"{cand.name}:r{fold.repeat}:f{fold.index}", n_trials=profile.n_trials,
                        timeout_s=profile.study_timeout_s, seed=seed, ctx_base=self.ctx_base, metric=self.metric,
                        repeat=fold.repeat, outer_index=fold.index, on_trial=on_trial)
        row = {"candidate": cand.name, "repeat": fold.repeat, "outer_fold": fold.index,
               "best_value": res.best_value, "n_trials": res.n_trials, "n_failed": res.n_failed,
               "n_pruned": res.n_pruned, "status": "ok", "info": "", "wall_s": 0.0,
               "best_params": json.dumps(res.best_params, default=str)}
        if res.best_params is None:
            reasons = pd.Series(res.fail_reasons or ["no trial finished in the time budget"]).value_counts()
            row.update(status="failed", info=f"every trial failed: {reasons.index[0]} ({reasons.iloc[0]}x)")
            self.progress.unit_done()
            self.progress.say(f"{label} FAILED: {row['info']}")
        else:
            try:
                models = self._bag(cand, fold, inner, res.best_params, make_view, seed, res.best_models)
                self._predict_bag(cand, fold, inner, models, make_view, res.best_valid_preds)
                self._record_best(cand, row, models)
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
             trained: list | None = None) -> list:
        """The bag: the best params trained once per inner fold (or the search's own models).

        ``trained`` are the best trial's models from the search (same params, same seeds), used
        instead of training again when given.
        """
        if trained is not None:
            return list(trained)
        models = []
        for k, f in enumerate(inner):
            model = cand.build(params)
            ctx = fit_context(self.ctx_base, seed, fold.repeat, fold.index, k)
            models.append(model.fit(make_view(f.train, True), make_view(f.test, True), ctx))
        return models

    def _predict_bag(self, cand: Candidate, fold: Fold, inner: list[Fold], models: list, make_view,
                     oof_preds: list | None = None) -> None:
        """OOF + outer-test predictions of the bag, calibrated on the OOF part; written as a part.

        ``oof_preds`` are the members' predictions on their inner-validation folds when the
        search already made them (not computed twice).
        """
        y = self.cohort.y
        test_view = make_view(fold.test, False)
        oof_prob = np.full(len(y), np.nan)
        oof_fold = np.full(len(y), -1)
        test_members = []
        for k, (f, model) in enumerate(zip(inner, models)):
            oof_prob[f.test] = oof_preds[k] if oof_preds is not None else model.predict_proba(make_view(f.test, False))
            oof_fold[f.test] = k
            if self.profile.mc_passes and hasattr(model, "predict_members"):
                test_members.append(np.asarray(model.predict_members(test_view)))
            else:
                test_members.append(np.asarray(model.predict_proba(test_view))[None, :])
        members = np.concatenate(test_members, axis=0)             # (n_members, n_test)
        tr = fold.train
        cal = Calibrator(self.calibration).fit(oof_prob[tr], y[tr])
        test_raw = members.mean(axis=0)
        keys, fam = self.cohort.keys, cand.family
        rows = pd.DataFrame({
            "candidate": cand.name, "family": fam, "modality": cand.modality, "repeat": fold.repeat,
            "outer_fold": fold.index,
            "set": ["oof"] * len(tr) + ["test"] * len(fold.test),
            "inner_fold": np.concatenate([oof_fold[tr], np.full(len(fold.test), -1)]),
            "position": np.concatenate([tr, fold.test]),
            "patient": np.concatenate([keys[tr], keys[fold.test]]),
            "y": np.concatenate([y[tr], y[fold.test]]).astype(np.int64),
            "prob": np.concatenate([cal.transform(oof_prob[tr]), cal.transform(test_raw)]),
            "prob_raw": np.concatenate([oof_prob[tr], test_raw]),
        })
        cal_members = cal.transform(members)
        rows["members"] = [[float(v)] for v in rows["prob"].iloc[: len(tr)]] + [list(map(float, col)) for col in cal_members.T]
        self.rd.write_atomic(self.rd.part(cand.name, fold.repeat, fold.index), lambda q: rows.to_parquet(q, index=False))

    def ensure_embeddings(self, name: str, fold: Fold) -> None:
        """Embeddings of image candidate ``name`` for one outer fold, computed once, when consumed.

        Outer-train patients get the embedding from the bag member that did not train on them,
        outer-test patients the members' mean. The bag is the one held from this process, or is
        trained again from the stored best params (after --resume).
        """
        path = self.rd.part(name, fold.repeat, fold.index, "emb.npz")
        if path.exists():
            return
        cand = self.cands[name]
        inner = self.inner(fold)
        make_view = self._view_maker(cand, None)
        held = self.image_bags.get((fold.repeat, fold.index))
        if held is not None and held[0] == name:
            models = held[1]
        else:
            info = json.loads(self.rd.part(name, fold.repeat, fold.index, "json").read_text())
            models = self._bag(cand, fold, inner, json.loads(info["best_params"]), make_view,
                               self.study_seed(name, fold))
        if not hasattr(models[0], "embed"):
            return
        test_view = make_view(fold.test, False)
        oof = {}
        test_emb = []
        for f, model in zip(inner, models):
            e = np.asarray(model.embed(make_view(f.test, False)), dtype=np.float32)
            oof.update(zip(f.test.tolist(), e))
            test_emb.append(np.asarray(model.embed(test_view), dtype=np.float32))
        pos = np.concatenate([fold.train, fold.test])
        emb = np.stack([oof[i] for i in fold.train.tolist()] + list(np.mean(test_emb, axis=0)))
        self.rd.write_atomic(path, lambda q: np.savez(open(q, "wb"), position=pos, emb=emb.astype(np.float16)))



def oracle_rows(cohort: Cohort, folds: list[Fold]) -> pd.DataFrame:
    if cohort.oracle is None:
        return pd.DataFrame()
    out = []
    for f in folds:
        for col in ORACLE_COLUMNS:
            if col not in cohort.oracle:
                continue
            p = cohort.oracle[col].to_numpy(dtype=float)[f.test]
            out.append(pd.DataFrame({
                "candidate": col, "family": "oracle", "modality": "oracle", "repeat": f.repeat,
                "outer_fold": f.index, "set": "test", "inner_fold": -1, "position": f.test,
                "patient": cohort.keys[f.test], "y": cohort.y[f.test].astype(np.int64),
                "prob": p, "prob_raw": p, "members": [[float(v)] for v in p]}))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()

