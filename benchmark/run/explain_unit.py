"""A unit's explanations, made while its models exist: mixed into ``fold_runner.FoldRunner``.

After a unit's bag (and refit) predicted its outer-test part, ``explain_unit`` writes, beside
the part (``parts/<candidate>__r<repeat>_f<fold>.<what>``):

- ``importance.csv`` for a candidate that reads register data (register and fusion
  candidates): per register column, the AUC drop of the unit's predictor when the column is
  shuffled among the test patients, its bootstrap interval, the direction of the effect, and
  for tree families TreeSHAP's mean |contribution| and direction (``explain.permutation``,
  ``explain.shap``). Aggregates only: nothing per patient.
- ``permuted.npz`` for a register candidate when a fusion candidate of the run consumes
  register predictions: the unit's calibrated outer-test predictions with each column
  shuffled (per member, and its ``prob``), which a late fusion's importance reads in place
  of its register input's predictions (the fusion reads predictions, not the register).
  Removed when the run finishes.
- ``missing.csv`` for a fusion candidate that reads images: its predictor's calibrated
  outer-test P(AFF) with the images withheld from every test patient (``prob_all``) and from a
  seeded random half (``prob_half``, ``withheld_half``), beside the plain one (``prob``)
  (``explain.missing``); ``gather`` turns them into ``missing_modality.csv``.
- ``localisation.csv`` and the saliency maps of an image candidate when the run was asked to
  explain (``run --explain``): ``explain.gradcam``.

The predictor is the model that gave the part's ``prob``: the refit when there is one, else
the bag's members (each on its own view, their mean logit). The settings come in
``ctx_base.extra["explain"]`` (``importance``: default on; ``saliency``: ``--explain``). An
explanation that fails is one progress line; the unit's predictions stand.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import expit

from benchmark.candidates.base import get_family
from benchmark.candidates.calibration import Calibrator, bag_prediction, member_scale_ratio
from benchmark.candidates.fusion_inputs import UpstreamColumn
from benchmark.data.splits import Fold
from benchmark.search.spaces import Candidate

PERMUTED = "permuted.npz"


class ExplainUnit:
    """The explanations of a unit (module docstring); uses the fold runner's state and views."""

    def explain_settings(self) -> dict:
        """``importance``: auto | all | tables | none (True / False as all / none); ``saliency``: bool."""
        s = {"importance": "auto", "saliency": False, **(self.ctx_base.extra.get("explain") or {})}
        s["importance"] = {True: "all", False: "none"}.get(s["importance"], s["importance"])
        return s

    def explain_unit(self, cand: Candidate, fold: Fold, models: list, full, make_view, inputs: list | None,
                     cal: Calibrator) -> None:
        settings = self.explain_settings()
        label = f"{cand.name} r{fold.repeat} f{fold.index + 1}"
        steps = []
        if settings["importance"] != "none" and self._reads_register(cand, inputs):
            steps.append(("importance", lambda: self._importance(cand, fold, models, full, make_view, inputs, cal)))
        if cand.modality == "fusion" and self._reads_images(cand, inputs) and self.cohort.has_images:
            steps.append(("missing images", lambda: self._missing(cand, fold, models, full, make_view, inputs, cal)))
        if settings["saliency"] and cand.modality == "image" and self.cohort.has_images:
            steps.append(("saliency", lambda: self._saliency(cand, fold, models, full, make_view)))
        for what, step in steps:
            try:
                step()
            except (KeyboardInterrupt, MemoryError):
                raise
            except Exception as exc:   # an explanation never fails the unit
                self.progress.say(f"{label}: {what} not made ({type(exc).__name__}: {str(exc)[:160]})")

    # ---- what a candidate reads

    def _reads_register(self, cand: Candidate, inputs: list | None) -> bool:
        if not self.cohort.has_register or cand.modality == "image":
            return False
        if cand.modality == "register" or not cand.consumes:
            return True
        return bool(self._register_sources(inputs))

    def _reads_images(self, cand: Candidate, inputs: list | None) -> bool:
        return get_family(cand.family).uses_images or bool(self._image_sources(inputs))

    def _image_sources(self, inputs: list | None) -> list[str]:
        return [up for up, name, _ in inputs or [] if self.cands[name].modality == "image"]

    def _register_sources(self, inputs: list | None) -> list[tuple[str, str]]:
        return [(up, name) for up, name, _ in inputs or [] if self.cands[name].modality == "register"]

    def _permuted_needed(self) -> bool:
        """A fusion candidate of the run reads register predictions (a register role or candidate)."""
        return any(up == "best_register" or (up in self.cands and self.cands[up].modality == "register")
                   for c in self.cands.values() if c.modality == "fusion" for up in c.consumes)

    def predictor(self, cand: Candidate, fold: Fold, models: list, full, make_view, inputs) -> list:
        """(model, its outer-test view, member index or None for the refit) of the unit's predictor."""
        if full is not None:
            return [(full, make_view(fold.test, False), None)]
        return [(m, self._member_view(cand, fold, k, make_view, inputs), k) for k, m in enumerate(models)]

    # ---- register importance

    def _importance(self, cand, fold, models, full, make_view, inputs, cal: Calibrator) -> None:
        from benchmark.explain.permutation import importance_rows, permuted_scores, shuffles
        from benchmark.explain.scorers import Scorer, costly_to_shuffle
        from benchmark.explain.shap import mean_summary, shap_summary, tree_contributions

        pairs = self.predictor(cand, fold, models, full, make_view, inputs)
        why = costly_to_shuffle(pairs[0][0], self.ctx_base.device, self.explain_settings()["importance"])
        if why:
            path = self.rd.part(cand.name, fold.repeat, fold.index, "importance_skipped.txt")
            self.rd.write_atomic(path, lambda q: q.write_text(why, encoding="utf-8"))
            return
        register = pairs[0][1].register
        perms = shuffles(len(fold.test), self.fold_seed(fold))
        scorers = [Scorer(m, view, *self._substitution(fold, view, k, inputs)) for m, view, k in pairs]
        res = permuted_scores(scorers, register, perms)
        keys = self.cohort.keys[fold.test]
        table = importance_rows(res, register, self.cohort.y[fold.test], keys, self.fold_seed(fold))
        shap = [s for m, view, _ in pairs if (c := tree_contributions(m, view)) is not None
                for s in [shap_summary(c, register)]]
        if shap:
            table = table.merge(mean_summary(shap), on="column", how="outer")
        head = {"candidate": cand.name, "family": cand.family, "modality": cand.modality,
                "repeat": fold.repeat, "outer_fold": fold.index,
                "predictor": "refit" if full is not None else f"bag of {len(models)}"}
        table = pd.concat([pd.DataFrame([head] * len(table)), table.reset_index(drop=True)], axis=1)
        path = self.rd.part(cand.name, fold.repeat, fold.index, "importance.csv")
        self.rd.write_atomic(path, lambda q: table.to_csv(q, index=False))
        if cand.modality == "register" and self._permuted_needed():
            self._write_permuted(cand, fold, res, full is not None, cal)

    def fold_seed(self, fold: Fold) -> int:
        """The seed of a fold's shuffles and resamples: the same for every candidate of the fold."""
        return int(self.seed) * 1000 + fold.repeat * 100 + fold.index

    def _write_permuted(self, cand, fold, res, refit: bool, cal: Calibrator) -> None:
        cols = list(res.scores)
        k, n = res.perms.shape
        if refit:
            prob = cal.transform(expit(np.stack([res.scores[c] for c in cols]))) if cols else np.zeros((0, k, n))
            members = np.zeros((0,))
        else:
            z0 = np.stack(res.member_base)                                  # (K, n) unshuffled member logits
            r, mu = member_scale_ratio(z0), float(np.mean(z0))
            members = np.zeros((len(cols), k, len(res.members), n))
            prob = np.zeros((len(cols), k, n))
            for i, c in enumerate(cols):
                for j in range(k):
                    raw = expit(np.stack([m[c][j] for m in res.members]))
                    prob[i, j], _, members[i, j] = bag_prediction(cal, raw, r=r, mu=mu)
        path = self.rd.part(cand.name, fold.repeat, fold.index, PERMUTED)
        arrays = {"columns": np.array(cols, dtype=str), "positions": np.asarray(fold.test, dtype=np.int64),
                  "prob": prob.astype(np.float32), "members": members.astype(np.float32)}
        self.rd.write_atomic(path, lambda q: _save_npz(q, arrays))

    def _substitution(self, fold: Fold, view, member: int | None, inputs) -> tuple:
        """(substitute(column, shuffle) -> upstream, the columns it changes) for a view whose upstream
        carries register predictions; (None, ()) otherwise."""
        sources = []
        for up, name in self._register_sources(inputs):
            path = self.rd.part(name, fold.repeat, fold.index, PERMUTED)
            if not path.exists():
                continue
            with np.load(path, allow_pickle=False) as f:
                data = {key: f[key] for key in f.files}
            if not np.array_equal(data["positions"], np.asarray(view.patients)):
                continue
            sources.append((up, data, {c: i for i, c in enumerate(data["columns"].tolist())}))
        if not sources or view.upstream is None:
            return None, ()

        def substitute(column: str, shuffle: int) -> pd.DataFrame:
            up = view.upstream.copy()
            for role, data, index in sources:
                if column not in index:
                    continue
                i = index[column]
                if member is None or data["members"].size == 0:
                    values = data["prob"][i, shuffle]
                else:
                    values = data["members"][i, shuffle, member % data["members"].shape[2]]
                for field in ("prob", "prob_raw"):
                    up[UpstreamColumn(role, field).name] = values.astype(np.float64)
            return up

        return substitute, {c for _, _, index in sources for c in index}

    # ---- missing images

    def _missing(self, cand, fold, models, full, make_view, inputs, cal: Calibrator) -> None:
        from benchmark.explain.missing import missing_probs

        pairs = self.predictor(cand, fold, models, full, make_view, inputs)
        table = missing_probs(pairs, self._image_sources(inputs), cal, seed=self.fold_seed(fold))
        table.insert(0, "position", np.asarray(fold.test, dtype=np.int64))
        table.insert(1, "patient", self.cohort.keys[fold.test])
        table.insert(2, "y", self.cohort.y[fold.test].astype(np.int64))
        path = self.rd.part(cand.name, fold.repeat, fold.index, "missing.csv")
        self.rd.write_atomic(path, lambda q: table.to_csv(q, index=False))

    # ---- saliency (run --explain)

    def _saliency(self, cand, fold, models, full, make_view) -> None:
        from benchmark.explain.gradcam import unit_saliency

        pairs = self.predictor(cand, fold, models, full, make_view, None)
        table = unit_saliency(pairs, self.cohort, fold, self.rd.path, cand.name, seed=self.fold_seed(fold))
        head = {"candidate": cand.name, "repeat": fold.repeat, "outer_fold": fold.index}
        table = pd.concat([pd.DataFrame([head] * len(table)), table], axis=1)
        path = self.rd.part(cand.name, fold.repeat, fold.index, "localisation.csv")
        self.rd.write_atomic(path, lambda q: table.to_csv(q, index=False))


def _save_npz(path, arrays: dict) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
