"""A fabricated but realistic run folder for the report tests (no model is trained).

``write_fake_run(tmp_path / "run")`` writes manifest.json, predictions.parquet,
leaderboard.csv, fold_metrics.csv, trials.csv, studies.csv and comparisons.csv with the
columns of the shared formats: register, image and fusion candidates, oracle ceiling rows
and one failed image candidate. Patient keys start with ``PATKEY`` and the manifest
carries a dataset path under ``/secret-site/``, so tests can check neither leaks.

``comparisons.csv`` has the current format: fusion candidates against the best image and
best register model (``Q3``), the MLP against the best trees (``Q2``, role ``best_tree``),
the other fusion candidates against the best fusion (role ``best_fusion``); Holm within
the ``primary`` (AUC) and ``secondary`` families; a margin per metric, ``noninferior`` and
a verdict that agrees with ``p_holm < 0.05`` (``equivalent`` when the interval lies within
the margin). ``schema="old"`` writes a run of the earlier format instead: no ``question``,
``holm_family``, ``margin`` or ``noninferior``, verdict ``no_difference``, no Q2 or
best-fusion rows, no learning curves in ``studies.csv`` and no ``*_oof`` leaderboard columns.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from benchmark.evaluate.compare import TEST_OF
from benchmark.evaluate.paired_tests import HIGHER_IS_BETTER, holm
from benchmark.evaluate.leaderboard import METRICS as LEADERBOARD_METRICS
from benchmark.evaluate.uncertainty import add_uncertainty, binary_entropy
from benchmark.protocol import ORACLE_OF

SECRET_PATH = "/secret-site/aff/dataset.yaml"
PATIENT_PREFIX = "PATKEY"

# name -> (family, modality, signal strength from register, from image)
CANDIDATES = {
    "logistic": ("logistic", "register", 1.2, 0.0),
    "xgboost": ("xgboost", "register", 1.5, 0.0),
    "lightgbm": ("lightgbm", "register", 1.4, 0.0),
    "mlp": ("mlp", "register", 1.3, 0.0),
    "resnet18": ("timm_cnn", "image", 0.0, 2.2),
    "efficientnet_b0": ("timm_cnn", "image", 0.0, 2.0),
    "convnext_tiny": ("timm_cnn", "image", 0.0, 0.0),  # fails
    "late_average": ("late_average", "fusion", 1.3, 2.0),
    "late_stacking": ("late_stacking", "fusion", 1.4, 2.1),
    "embed_xgboost": ("embed_trees", "fusion", 1.2, 1.8),
    "film": ("film", "fusion", 1.0, 1.9),
}
FAILED = "convnext_tiny"
FAILED_INFO = f"CUDA out of memory (tried 2 smaller batches) while reading {SECRET_PATH}"
ORACLES = {"oracle_register": (2.0, 0.0), "oracle_image": (0.0, 3.0), "oracle_both": (2.0, 3.0)}
METRICS = list(LEADERBOARD_METRICS) + [m for m in ("sens_at_spec90_oof", "spec_at_spec90_oof", "sens_at_spec95_oof",
                                                     "spec_at_spec95_oof") if m not in LEADERBOARD_METRICS]
OOF_METRICS = ("sens_at_spec90_oof", "spec_at_spec90_oof", "sens_at_spec95_oof", "spec_at_spec95_oof")
COMPARED = TEST_OF  # the metrics (and tests) of comparisons.csv
LOWER_IS_BETTER = {m for m, up in HIGHER_IS_BETTER.items() if not up}
MARGIN = {"auc": 0.05, "ap": 0.05, "brier": 0.01, "log_loss": 0.05, "ece": 0.02, "entropy_mean": 0.05,
          "mutual_info_mean": 0.01}
ITERATIVE = {"xgboost", "lightgbm", "mlp", "timm_cnn", "film", "embed_trees"}  # families with a learning curve
COMPARISON_COLUMNS = ["candidate", "reference", "reference_role", "question", "metric", "value_candidate",
                      "value_reference", "diff", "lo", "hi", "p_value", "test", "holm_family", "p_holm", "margin",
                      "noninferior", "verdict", "n_patients"]
OLD_COMPARISON_COLUMNS = ["candidate", "reference", "reference_role", "metric", "value_candidate", "value_reference",
                          "diff", "lo", "hi", "p_value", "test", "p_holm", "verdict", "n_patients"]


def _pred_rows(rng, name, family, modality, probs, y, keys, folds, n_members):
    rows = []
    for i, (p, yy, key, f) in enumerate(zip(probs, y, keys, folds)):
        members = np.clip(p + rng.normal(0, 0.03, n_members), 0.001, 0.999).tolist() if n_members > 1 else [float(p)]
        rows.append(dict(candidate=name, family=family, modality=modality, repeat=0, outer_fold=int(f), set="test",
                         inner_fold=-1, patient=key, y=int(yy), prob=float(p), prob_raw=float(p), members=members))
    return rows


def _metrics(rng, y, p, members_std, oof: bool) -> dict:
    auc, ap, brier = roc_auc_score(y, p), average_precision_score(y, p), brier_score_loss(y, p)
    pred = (p >= 0.5).astype(int)
    sens = float((pred[y == 1] == 1).mean())
    spec = float((pred[y == 0] == 0).mean())
    ent = binary_entropy(p)
    s90, s95 = rng.uniform(0.4, 0.8), rng.uniform(0.3, 0.6)
    values = dict(
        auc=auc, ap=ap, accuracy=float((pred == y).mean()), balanced_accuracy=(sens + spec) / 2, sensitivity=sens,
        specificity=spec, sensitivity_thr=min(1.0, sens + 0.3), specificity_thr=max(0.0, spec - 0.1),
        mcc=rng.uniform(0.2, 0.5), brier=brier, log_loss=brier * 4, ece=rng.uniform(0.01, 0.06),
        cal_intercept=rng.normal(0, 0.2), cal_slope=rng.uniform(0.7, 1.2), sens_at_spec90=s90, sens_at_spec95=s95,
        sens_at_spec90_oof=s90 - rng.uniform(0.02, 0.1), spec_at_spec90_oof=rng.uniform(0.85, 0.92),
        sens_at_spec95_oof=s95 - rng.uniform(0.02, 0.1), spec_at_spec95_oof=rng.uniform(0.91, 0.96),
        entropy_mean=float(ent.mean()), mutual_info_mean=float(members_std.mean() / 5),
        member_std_mean=float(members_std.mean()), aurc=rng.uniform(0.005, 0.03), error_auroc=rng.uniform(0.6, 0.85),
        conformal90_coverage_pos=rng.uniform(0.8, 0.95), conformal90_coverage_neg=rng.uniform(0.85, 0.95),
        conformal90_singleton=rng.uniform(0.5, 0.9), conformal95_coverage_pos=rng.uniform(0.9, 0.99),
        conformal95_coverage_neg=rng.uniform(0.9, 0.99), conformal95_singleton=rng.uniform(0.4, 0.8),
    )
    out = {}
    for m in METRICS:
        v = values[m] if m in values else rng.uniform(0.3, 0.8)
        if not oof and (m in OOF_METRICS or m.endswith("_thr") or m.startswith("conformal")):
            v = np.nan  # oracle rows have no out-of-fold data
        w = rng.uniform(0.02, 0.08)
        lo, hi = v - w, v + w * rng.uniform(0.6, 1.0)
        if m not in ("cal_intercept", "cal_slope", "log_loss"):
            lo, hi = max(lo, 0.0), min(hi, 1.0)
        out[m], out[f"{m}_lo"], out[f"{m}_hi"] = v, lo, hi
    return out


def _study_rows(rng, name, family, modality, outer_folds, still_improving: bool, schema: str) -> list[dict]:
    rows = []
    for f in range(outer_folds):
        failed = name == FAILED
        row = dict(candidate=name, family=family, modality=modality, repeat=0, outer_fold=f,
                   best_value=np.nan if failed else 0.85, n_trials=6, n_failed=6 if failed else 0, wall_s=60.0,
                   status="failed" if failed else "ok", info=FAILED_INFO if failed else "")
        if schema != "old":
            if family in ITERATIVE and not failed:
                top = float(rng.uniform(0.8, 0.9))
                if still_improving:  # the score still rising at the end of the budget
                    c25, c50, c100, share = top - 0.12, top - 0.06, top, float(rng.uniform(0.6, 1.0))
                else:                # flat from half the budget on
                    c25, c50, c100, share = top - 0.05, top - 0.004, top, float(rng.uniform(0.0, 0.3))
                row.update(curve_25=c25, curve_50=c50, curve_100=c100, at_budget=share)
            else:
                row.update(curve_25=np.nan, curve_50=np.nan, curve_100=np.nan, at_budget=np.nan)
            row["timed_out"] = False
        rows.append(row)
    return rows


def write_fake_run(
    run_dir: Path,
    *,
    n_patients: int = 240,
    n_pos: int = 24,
    outer_folds: int = 3,
    modalities: tuple[str, ...] = ("register", "image", "fusion"),
    oracle: bool = True,
    fusion_verdict: str = "candidate_better",
    fusion_p_holm: float = 0.004,
    q2_verdict: str = "not_shown",
    still_improving: tuple[str, ...] = (),
    schema: str = "current",
    profile: str = "quick",
    seed: int = 0,
) -> Path:
    """Write a fake run folder at ``run_dir`` and return it.

    ``fusion_verdict``/``fusion_p_holm`` set the AUC comparison of every fusion candidate
    against the best single-modality reference, ``q2_verdict`` the MLP's AUC comparison
    with the best trees; the candidates named in ``still_improving`` have learning curves
    that still rise at the end of their budget. ``schema="old"``: the earlier format.
    """
    rng = np.random.default_rng(seed)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    reg_sig, img_sig = rng.normal(0, 1, n_patients), rng.normal(0, 1, n_patients)  # true latent evidence
    risk = 1.2 * reg_sig + 1.6 * img_sig + rng.normal(0, 0.8, n_patients)
    y = np.zeros(n_patients, dtype=int)
    y[np.argsort(-risk)[:n_pos]] = 1
    keys = [f"{PATIENT_PREFIX}{i:05d}" for i in range(n_patients)]
    folds = rng.permutation(np.arange(n_patients) % outer_folds)

    chosen = {k: v for k, v in CANDIDATES.items() if v[1] in modalities}
    preds, lb_rows, trials, studies, fold_metrics = [], [], [], [], []
    for ci, (name, (family, modality, a, b)) in enumerate(chosen.items()):
        base = dict(candidate=name, family=family, modality=modality, n_patients=n_patients, n_pos=n_pos)
        n_trials, n_failed = 6 * outer_folds, 0
        for f in range(outer_folds):
            for t in range(6):
                state = "FAIL" if name == FAILED else ("PRUNED" if t % 4 == 3 else "COMPLETE")
                value = np.nan if state == "FAIL" else 0.7 + 0.2 * (1 - np.exp(-t / 2)) + rng.normal(0, 0.02)
                trials.append(dict(candidate=name, repeat=0, outer_fold=f, trial=t, state=state, value=value,
                                   duration_s=rng.uniform(1, 20), params=json.dumps({"lr": float(rng.uniform(1e-4, 1e-2))}),
                                   info=FAILED_INFO if state == "FAIL" else ""))
                n_failed += state == "FAIL"
        studies += _study_rows(rng, name, family, modality, outer_folds, name in still_improving, schema)
        if name == FAILED:
            lb_rows.append(dict(base, status="failed", info=FAILED_INFO, inner_score=np.nan, is_ceiling=False,
                                wall_s=180.0, n_trials=n_trials, n_failed_trials=n_failed))
            continue
        logit = -3.8 + a * (reg_sig + rng.normal(0, 0.5, n_patients)) + b * (img_sig + rng.normal(0, 0.5, n_patients))
        p = 1 / (1 + np.exp(-logit))
        rows = _pred_rows(rng, name, family, modality, p, y, keys, folds, 3)
        preds += rows
        stds = np.array([np.std(r["members"]) for r in rows])
        m = _metrics(rng, y, p, stds, oof=True)
        inner = float(m["auc"] - rng.uniform(0.0, 0.03))
        lb_rows.append(dict(base, status="ok", info="", inner_score=inner, is_ceiling=False, wall_s=100.0 + 10 * ci,
                            n_trials=n_trials, n_failed_trials=n_failed, **m))
        for f in range(outer_folds):
            for metric in ("auc", "brier"):
                fold_metrics.append(dict(candidate=name, repeat=0, outer_fold=f, metric=metric,
                                         value=m[metric] + rng.normal(0, 0.02)))
    if oracle:
        for name, (a, b) in ORACLES.items():
            logit = -4.0 + a * reg_sig + b * img_sig
            p = 1 / (1 + np.exp(-logit))
            preds += _pred_rows(rng, name, name, "oracle", p, y, keys, folds, 1)
            m = _metrics(rng, y, p, np.zeros(n_patients), oof=False)
            lb_rows.append(dict(candidate=name, family="oracle", modality="oracle", n_patients=n_patients, n_pos=n_pos,
                                status="ok", info="", inner_score=np.nan, is_ceiling=True, wall_s=0.0, n_trials=0,
                                n_failed_trials=0, **m))
    lb = pd.DataFrame(lb_rows)
    lb["auc_gap"] = np.nan
    if oracle:
        auc_of = lb.set_index("candidate")["auc"]
        for i, r in lb.iterrows():
            if r["modality"] in ORACLE_OF and r["status"] == "ok":
                lb.loc[i, "auc_gap"] = auc_of[ORACLE_OF[r["modality"]]] - r["auc"]
    metrics = [m for m in METRICS if schema != "old" or m not in OOF_METRICS]
    cols = ["candidate", "family", "modality", "status", "info", "n_patients", "n_pos", "inner_score", "is_ceiling",
            "wall_s", "n_trials", "n_failed_trials"] + [c for m in metrics for c in (m, f"{m}_lo", f"{m}_hi")] + ["auc_gap"]
    lb[cols].to_csv(run_dir / "leaderboard.csv", index=False)

    pred = add_uncertainty(pd.DataFrame(preds))  # as the runner stores them
    pred.to_parquet(run_dir / "predictions.parquet", index=False)
    pd.DataFrame(trials).to_csv(run_dir / "trials.csv", index=False)
    pd.DataFrame(studies).to_csv(run_dir / "studies.csv", index=False)
    pd.DataFrame(fold_metrics, columns=["candidate", "repeat", "outer_fold", "metric", "value"]).to_csv(
        run_dir / "fold_metrics.csv", index=False)
    _write_comparisons(run_dir, lb, rng, fusion_verdict, fusion_p_holm, q2_verdict, schema)
    _write_manifest(run_dir, n_patients, n_pos, list(chosen), seed, profile)
    return run_dir


# ---------------------------------------------------------------- comparisons.csv


def _best(rows: pd.DataFrame) -> pd.Series | None:
    return None if rows.empty else rows.loc[rows["inner_score"].idxmax()]


def _row(rng, cand, ref, role, metric) -> dict:
    diff = float(cand[metric] - ref[metric])
    half = abs(diff) * rng.uniform(0.3, 1.5) + 0.01
    p = float(2 * norm.sf(abs(diff) / (half / 1.96)))  # a Wald test whose 95 % interval is diff -/+ half
    return dict(candidate=cand["candidate"], reference=ref["candidate"], reference_role=role,
                question="Q2" if role == "best_tree" else "Q3", metric=metric, value_candidate=cand[metric],
                value_reference=ref[metric], diff=diff, lo=diff - half, hi=diff + half,
                p_value=p, test=COMPARED[metric],
                holm_family="primary" if metric == "auc" else "secondary", margin=MARGIN[metric],
                n_patients=int(cand["n_patients"]))


def _force(row: dict, verdict: str, p_holm: float) -> None:
    """Set a row's verdict and a difference, interval and p-value that agree with it."""
    up = row["metric"] not in LOWER_IS_BETTER
    margin, d = row["margin"], abs(row["diff"]) + 0.02
    if verdict in ("candidate_better", "reference_better"):
        sign = 1 if (verdict == "candidate_better") == up else -1
        row.update(diff=sign * d, lo=sign * d - d / 2, hi=sign * d + d / 2)
    elif verdict == "equivalent":
        row.update(diff=margin / 5, lo=-margin / 2, hi=margin / 2)
    else:  # not shown: an interval that reaches beyond the margin
        row.update(diff=-margin / 4, lo=-1.5 * margin, hi=margin / 2)
    row.update(p_holm=p_holm, p_value=min(row["p_value"], p_holm), verdict=verdict)


def _verdict(row: dict) -> str:
    up = row["metric"] not in LOWER_IS_BETTER
    if row["p_holm"] < 0.05:
        return "candidate_better" if (row["diff"] > 0) == up else "reference_better"
    return "equivalent" if -row["margin"] < row["lo"] and row["hi"] < row["margin"] else "not_shown"


def _noninferior(row: dict) -> bool:
    return bool(row["lo"] > -row["margin"]) if row["metric"] not in LOWER_IS_BETTER else bool(row["hi"] < row["margin"])


def _write_comparisons(run_dir, lb, rng, fusion_verdict, fusion_p_holm, q2_verdict, schema) -> None:
    ok = lb[(lb["status"] == "ok") & ~lb["is_ceiling"]]
    refs = {role: _best(ok[ok["modality"] == modality])
            for modality, role in (("image", "best_image"), ("register", "best_register"))}
    refs = {role: r for role, r in refs.items() if r is not None}
    best_single = max(refs.values(), key=lambda r: r["inner_score"])["candidate"] if refs else None
    fusion = ok[ok["modality"] == "fusion"]
    pairs = [(cand, ref, role) for _, cand in fusion.iterrows() for role, ref in refs.items()]
    if schema != "old":
        tree = _best(ok[ok["family"].isin(["xgboost", "lightgbm"])])
        if tree is not None:
            pairs += [(cand, tree, "best_tree") for _, cand in ok[ok["family"] == "mlp"].iterrows()]
        top = _best(fusion)
        if top is not None:
            pairs += [(cand, top, "best_fusion") for _, cand in fusion.iterrows() if cand["candidate"] != top["candidate"]]
    out = [_row(rng, cand, ref, role, metric) for cand, ref, role in pairs for metric in COMPARED]
    if not out:
        return
    for family in ("primary", "secondary"):
        idx = [i for i, r in enumerate(out) if r["holm_family"] == family]
        for i, p in zip(idx, holm([out[i]["p_value"] for i in idx])):
            out[i]["p_holm"] = float(p)
    for r in out:
        r["verdict"] = _verdict(r)
        if r["metric"] == "auc" and r["reference"] == best_single and r["question"] == "Q3":
            _force(r, "not_shown" if fusion_verdict == "no_difference" else fusion_verdict, fusion_p_holm)
        if r["metric"] == "auc" and r["reference_role"] == "best_tree":
            _force(r, q2_verdict, 0.004 if q2_verdict.endswith("_better") else 0.4)
        r["noninferior"] = _noninferior(r)
    table = pd.DataFrame(out, columns=COMPARISON_COLUMNS)
    if schema == "old":
        table = table[OLD_COMPARISON_COLUMNS].assign(verdict=table["verdict"].replace(
            {"equivalent": "no_difference", "not_shown": "no_difference"}))
    table.to_csv(run_dir / "comparisons.csv", index=False)


def _write_manifest(run_dir, n_patients, n_pos, candidates, seed, profile) -> None:
    settings = {"name": profile, "outer_folds": 3, "inner_folds": 2, "repeats": 1, "n_trials": 6,
                "study_timeout_s": 15, "max_epochs": 8, "image_size": 32, "bootstrap": 200,
                "description": "a CPU laptop: coarse search, small images"}
    if profile not in ("quick", "smoke"):
        settings.update(outer_folds=5, inner_folds=3, n_trials=30, max_epochs=30, image_size=224, description="one GPU")
    manifest = {
        "run": run_dir.name,
        "command": f"python -m benchmark run --suite all --data {SECRET_PATH} --profile {profile}",
        "profile": settings,
        "profile_name": profile,
        "seed": seed,
        "versions": {"python": "3.11.9", "torch": "2.14.1", "optuna": "5.0.0", "xgboost": "3.2.0", "benchmark": "0.1.0"},
        "hardware": {"cpu": "x86_64, 2 cores", "gpu": None, "dataset_root": "/secret-site/aff/images"},
        "dataset": {"name": "fake-aff", "fingerprint": "3f2a9c0d1e", "n_patients": n_patients, "n_pos": n_pos,
                    "synthetic": True, "path": SECRET_PATH},
        "candidates": candidates,
        "started": "2025-01-01T10:00:00",
        "finished": "2025-01-01T11:02:03",
        "wall_s": 3723.0,
        "status": "finished",
    }
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
