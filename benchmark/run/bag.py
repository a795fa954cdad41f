"""The bag's predictions of one unit: out-of-fold and outer-test, calibrated, written as its part.

``BagPredictions`` is mixed into ``fold_runner.FoldRunner`` and uses its run state (``cohort``,
``profile``, ``rd``, ``calibration``, ``metric``) and its views of a fold (``_view_maker``,
``upstream_for``)::

    fr._predict_bag(cand, fold, inner, models, make_view)     # parts/<candidate>__r<repeat>_f<fold>.parquet
    fr.oof_predictions(inner, models, make_view)              # (P(AFF), inner fold) per patient
    fr._curve(inner, models, make_view, None)                  # curve_25/50/100, at_budget (studies.csv)
    fr._half_budget(cand, fold, inner, params, make_view, seed, ctx_base, models, None)   # half/full_budget_score
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.candidates.base import Family
from benchmark.candidates.calibration import Calibrator, bag_prediction, order_preserving
from benchmark.data.splits import Fold
from benchmark.search.spaces import Candidate
from benchmark.search.study import fit_context, score

CURVE_SHARES = (0.25, 0.5, 1.0)   # shares of the training budget on the learning curve (studies.csv)
HALF_BUDGET = 0.5                 # the budget share of the extra fit that says what the rest of the budget added


class BagPredictions:
    """The bag's outer-test and out-of-fold predictions, its part file and its learning curve."""

    def _predict_bag(self, cand: Candidate, fold: Fold, inner: list[Fold], models: list, make_view,
                     oof_preds: list | None = None, inputs: list | None = None, full=None) -> Calibrator:
        """OOF + outer-test predictions of the bag, calibrated on the OOF part; written as a part.

        Every candidate's members are its K inner-fold models (one deterministic prediction
        each; a fusion member k reads member k of its inputs), so uncertainty compares like
        with like. The calibrator is fitted on the OOF predictions (one member each) and
        applied to each member and to the single-member-equivalent mean
        (``calibration.bag_prediction``). MC-dropout passes, when the profile asks, are kept
        apart in ``mc_members`` (calibrated), not mixed into the members.
        ``oof_preds`` are the members' predictions on their inner-validation folds when the
        search already made them (not computed twice); ``inputs`` are the consumed parts
        (``read_inputs``), read once per unit.

        ``full`` (profile ``refit_full``): a model refitted on the whole outer-train part. It
        then predicts the outer-test patients (``prob`` = the calibrator applied to its
        prediction, ``prob_raw`` its prediction); the bag still gives the out-of-fold
        predictions, the calibrator and the members (uncertainty). ``prob_bag`` and
        ``prob_raw_bag`` keep the bag's own prediction of the test rows (the same kind as a
        single member's: ``calibration.bag_prediction``), which a fusion's refit reads, as it
        was trained on its inputs' single-member out-of-fold predictions. ``prob_rank``: the
        prediction on an order-preserving map of the raw score (``calibration.order_preserving``;
        ``prob`` itself unless the calibration is isotonic), on which AUC, AP and DeLong are computed.
        """
        y = self.cohort.y
        oof_prob, oof_fold = self.oof_predictions(inner, models, make_view, oof_preds)
        raw_members, mc = [], []
        for k, model in enumerate(models):
            view = self._member_view(cand, fold, k, make_view, inputs)
            raw_members.append(np.asarray(model.predict_proba(view), dtype=np.float64))
            if self.profile.mc_passes and type(model).predict_members is not Family.predict_members:
                mc.append(np.asarray(model.predict_members(view), dtype=np.float64))
        raw = np.stack(raw_members)                                   # (K, n_test)
        tr = fold.train
        cal = Calibrator(self.calibration).fit(oof_prob[tr], y[tr])
        test_prob, test_raw, cal_members = bag_prediction(cal, raw)
        bag_prob, bag_raw = test_prob, test_raw
        ranker = order_preserving(cal, oof_prob[tr], y[tr])
        test_rank = test_prob if ranker is cal else bag_prediction(ranker, raw)[0]
        if full is not None:
            test_raw = np.asarray(full.predict_proba(make_view(fold.test, False)), dtype=np.float64)
            test_prob, test_rank = cal.transform(test_raw), ranker.transform(test_raw)
        keys, fam = self.cohort.keys, cand.family
        oof_cal = cal.transform(oof_prob[tr])
        rows = pd.DataFrame({
            "candidate": cand.name, "family": fam, "modality": cand.modality, "repeat": fold.repeat,
            "outer_fold": fold.index,
            "set": ["oof"] * len(tr) + ["test"] * len(fold.test),
            "inner_fold": np.concatenate([oof_fold[tr], np.full(len(fold.test), -1)]),
            "position": np.concatenate([tr, fold.test]),
            "patient": np.concatenate([keys[tr], keys[fold.test]]),
            "y": np.concatenate([y[tr], y[fold.test]]).astype(np.int64),
            "prob": np.concatenate([oof_cal, test_prob]),
            "prob_raw": np.concatenate([oof_prob[tr], test_raw]),
            "prob_bag": np.concatenate([oof_cal, bag_prob]),
            "prob_raw_bag": np.concatenate([oof_prob[tr], bag_raw]),
            "prob_rank": np.concatenate([ranker.transform(oof_prob[tr]), test_rank]),
        })
        rows["members"] = [[float(v)] for v in oof_cal] + [list(map(float, col)) for col in cal_members.T]
        rows["members_raw"] = [[float(v)] for v in oof_prob[tr]] + [list(map(float, col)) for col in raw.T]
        if mc:
            passes = cal.transform(np.concatenate(mc, axis=0))
            rows["mc_members"] = [[] for _ in tr] + [list(map(float, col)) for col in passes.T]
        self.rd.write_atomic(self.rd.part(cand.name, fold.repeat, fold.index), lambda q: rows.to_parquet(q, index=False))
        return cal

    def oof_predictions(self, inner: list[Fold], models: list, make_view,
                        oof_preds: list | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(P(AFF), inner fold) of every patient an inner fold scores, by the member that did not
        train on it (NaN / -1 elsewhere); ``oof_preds``: the search's own, when it kept them."""
        n = self.cohort.n_patients
        prob, which = np.full(n, np.nan), np.full(n, -1)
        for k, (f, model) in enumerate(zip(inner, models)):
            prob[f.test] = oof_preds[k] if oof_preds is not None else model.predict_proba(make_view(f.test, False))
            which[f.test] = k
        return prob, which

    def _curve(self, inner: list[Fold], models: list, make_view, oof_preds: list | None) -> dict:
        """The bag's learning curve: its inner-CV score at 25 / 50 / 100 % of each member's budget.

        Each member scores its own inner-validation fold as it stood after that share of its
        training (epochs, boosting rounds); ``at_budget`` is the share of members still
        improving when their budget ended. NaN for families that do not iterate.
        """
        y = self.cohort.y
        out = {f"curve_{int(100 * s)}": float("nan") for s in CURVE_SHARES}
        out["at_budget"] = float("nan")
        if type(models[0]).predict_at is Family.predict_at:
            return out
        scores = np.full((len(CURVE_SHARES), len(inner)), np.nan)
        for k, (f, model) in enumerate(zip(inner, models)):
            view = make_view(f.test, False)   # built once per fold, for every share
            for j, share in enumerate(CURVE_SHARES):
                p = oof_preds[k] if share >= 1 and oof_preds is not None else model.predict_at(view, share)
                if p is not None:
                    scores[j, k] = score(self.metric, y[f.test], p)
        for j, share in enumerate(CURVE_SHARES):
            row = scores[j]
            out[f"curve_{int(100 * share)}"] = float(np.nanmean(row)) if np.isfinite(row).any() else float("nan")
        flags = [m.still_improving() for m in models]
        if all(f is not None for f in flags):
            out["at_budget"] = float(np.mean(flags))
        return out

    def _member_view(self, cand: Candidate, fold: Fold, k: int, make_view, inputs: list | None):
        """The outer-test part as bag member ``k`` sees it (its inputs' member ``k`` for fusion)."""
        if not cand.consumes:
            return make_view(fold.test, False)
        return self._view_maker(cand, self.upstream_for(cand, fold, member=k, inputs=inputs))(fold.test, False)

    def _half_budget(self, cand: Candidate, fold: Fold, inner: list[Fold], params: dict, make_view, seed: int,
                     ctx_base, models: list, oof_preds: list | None) -> dict:
        """``half_budget_score`` and ``full_budget_score`` (studies.csv): what the second half of the
        budget added, for a network whose snapshots cannot say it (``Family.half_budget_tells``).

        One more fit of the best params on inner fold 0 (its seed and, for a warm start, its
        source member, as bag member 0) with its own complete schedule over half the step budget
        (half the epochs, or half the samples when the profile's sample budget caps them), scored
        on inner fold 0's validation part, against member 0's score there: a paired, same-fold
        comparison of two complete schedules. NaN for every other model, and when the fit fails.
        """
        out = {"half_budget_score": float("nan"), "full_budget_score": float("nan")}
        if not models or not models[0].half_budget_tells():
            return out
        f = inner[0]
        view = make_view(f.test, False)
        y = self.cohort.y[f.test]
        full = oof_preds[0] if oof_preds is not None else models[0].predict_proba(view)
        ctx = fit_context(ctx_base, seed, fold.repeat, fold.index, 0)
        ctx.extra["budget_share"] = HALF_BUDGET
        try:
            half = cand.build(params).fit(make_view(f.train, True), None, ctx)
            if getattr(half, "total_steps_", 0) >= getattr(models[0], "total_steps_", 0):
                return out   # a budget too short to halve (e.g. one step)
            out["half_budget_score"] = float(score(self.metric, y, half.predict_proba(view)))
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:   # the curve is a diagnosis: its failure does not fail the unit
            self.progress.say(f"[{cand.name}] half-budget fit failed: {type(exc).__name__}: {str(exc)[:120]}")
            return out
        out["full_budget_score"] = float(score(self.metric, y, full))
        return out
