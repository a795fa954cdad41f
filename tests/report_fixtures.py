"""A fabricated but realistic run folder for the report tests (no model is trained).

``write_fake_run(tmp_path / "run")`` writes manifest.json, predictions.parquet,
leaderboard.csv, fold_metrics.csv, trials.csv, studies.csv and comparisons.csv with the
columns of the shared formats: register, image and fusion candidates, oracle ceiling rows
and one failed image candidate. Patient keys start with ``PATKEY`` and the manifest
carries a dataset path under ``/secret-site/``, so tests can check neither leaks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from benchmark.evaluate.compare import HIGHER_IS_BETTER, TEST_OF
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
METRICS = list(LEADERBOARD_METRICS)
COMPARED = TEST_OF  # the metrics and tests benchmark.evaluate.compare writes
LOWER_IS_BETTER = {m for m, up in HIGHER_IS_BETTER.items() if not up}


def _pred_rows(rng, name, family, modality, probs, y, keys, folds, n_members):
    rows = []
    for i, (p, yy, key, f) in enumerate(zip(probs, y, keys, folds)):
        members = np.clip(p + rng.normal(0, 0.03, n_members), 0.001, 0.999).tolist() if n_members > 1 else [float(p)]
        rows.append(dict(candidate=name, family=family, modality=modality, repeat=0, outer_fold=int(f), set="test",
                         inner_fold=-1, patient=key, y=int(yy), prob=float(p), prob_raw=float(p), members=members))
    return rows


def _metrics(rng, y, p, members_std) -> dict:
    auc, ap, brier = roc_auc_score(y, p), average_precision_score(y, p), brier_score_loss(y, p)
    pred = (p >= 0.5).astype(int)
    sens = float((pred[y == 1] == 1).mean())
    spec = float((pred[y == 0] == 0).mean())
    ent = binary_entropy(p)
    values = dict(
        auc=auc, ap=ap, accuracy=float((pred == y).mean()), balanced_accuracy=(sens + spec) / 2, sensitivity=sens,
        specificity=spec, sensitivity_thr=min(1.0, sens + 0.3), specificity_thr=max(0.0, spec - 0.1),
        mcc=rng.uniform(0.2, 0.5), brier=brier, log_loss=brier * 4, ece=rng.uniform(0.01, 0.06),
        cal_intercept=rng.normal(0, 0.2), cal_slope=rng.uniform(0.7, 1.2), sens_at_spec90=rng.uniform(0.4, 0.8),
        sens_at_spec95=rng.uniform(0.3, 0.6), entropy_mean=float(ent.mean()), mutual_info_mean=float(members_std.mean() / 5),
        member_std_mean=float(members_std.mean()), aurc=rng.uniform(0.005, 0.03), error_auroc=rng.uniform(0.6, 0.85),
        conformal90_coverage_pos=rng.uniform(0.8, 0.95), conformal90_coverage_neg=rng.uniform(0.85, 0.95),
        conformal90_singleton=rng.uniform(0.5, 0.9), conformal95_coverage_pos=rng.uniform(0.9, 0.99),
        conformal95_coverage_neg=rng.uniform(0.9, 0.99), conformal95_singleton=rng.uniform(0.4, 0.8),
    )
    out = {}
    for m, v in values.items():
        w = rng.uniform(0.02, 0.08)
        lo, hi = v - w, v + w * rng.uniform(0.6, 1.0)
        if m not in ("cal_intercept", "cal_slope", "log_loss"):
            lo, hi = max(lo, 0.0), min(hi, 1.0)
        out[m], out[f"{m}_lo"], out[f"{m}_hi"] = v, lo, hi
    return out


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
    seed: int = 0,
) -> Path:
    """Write a fake run folder at ``run_dir`` and return it.

    ``fusion_verdict``/``fusion_p_holm`` set the AUC comparison of every fusion candidate
    against the best single-modality reference, to test both directions of the findings.
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
            studies.append(dict(candidate=name, repeat=0, outer_fold=f, best_value=np.nan if name == FAILED else 0.85,
                                n_trials=6, n_failed=6 if name == FAILED else 0, wall_s=60.0,
                                status="failed" if name == FAILED else "ok", info=FAILED_INFO if name == FAILED else ""))
        if name == FAILED:
            lb_rows.append(dict(base, status="failed", info=FAILED_INFO, inner_score=np.nan, is_ceiling=False,
                                wall_s=180.0, n_trials=n_trials, n_failed_trials=n_failed))
            continue
        logit = -3.8 + a * (reg_sig + rng.normal(0, 0.5, n_patients)) + b * (img_sig + rng.normal(0, 0.5, n_patients))
        p = 1 / (1 + np.exp(-logit))
        n_members = 3 if modality != "register" or family == "mlp" else 3
        rows = _pred_rows(rng, name, family, modality, p, y, keys, folds, n_members)
        preds += rows
        stds = np.array([np.std(r["members"]) for r in rows])
        m = _metrics(rng, y, p, stds)
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
            m = _metrics(rng, y, p, np.zeros(n_patients))
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
    cols = ["candidate", "family", "modality", "status", "info", "n_patients", "n_pos", "inner_score", "is_ceiling",
            "wall_s", "n_trials", "n_failed_trials"] + [c for m in METRICS for c in (m, f"{m}_lo", f"{m}_hi")] + ["auc_gap"]
    lb[cols].to_csv(run_dir / "leaderboard.csv", index=False)

    pred = add_uncertainty(pd.DataFrame(preds))  # as the runner stores them
    pred.to_parquet(run_dir / "predictions.parquet", index=False)
    pd.DataFrame(trials).to_csv(run_dir / "trials.csv", index=False)
    pd.DataFrame(studies).to_csv(run_dir / "studies.csv", index=False)
    pd.DataFrame(fold_metrics, columns=["candidate", "repeat", "outer_fold", "metric", "value"]).to_csv(
        run_dir / "fold_metrics.csv", index=False)
    _write_comparisons(run_dir, lb, rng, fusion_verdict, fusion_p_holm)
    _write_manifest(run_dir, n_patients, n_pos, list(chosen), seed)
    return run_dir


def _write_comparisons(run_dir, lb, rng, fusion_verdict, fusion_p_holm) -> None:
    ok = lb[(lb["status"] == "ok") & ~lb["is_ceiling"]]
    refs = {}
    for modality, role in (("image", "best_image"), ("register", "best_register")):
        rows = ok[ok["modality"] == modality]
        if not rows.empty:
            refs[role] = rows.loc[rows["inner_score"].idxmax()]
    best_single = max(refs.values(), key=lambda r: r["inner_score"])["candidate"] if refs else None
    out = []
    for _, cand in ok[ok["modality"] == "fusion"].iterrows():
        for role, ref in refs.items():
            for metric in COMPARED:
                diff = cand[metric] - ref[metric]
                half = abs(diff) * rng.uniform(0.3, 1.5) + 0.01
                p = float(rng.uniform(0.0005, 0.4))
                p_holm = min(1.0, p * len(COMPARED))
                better = diff < 0 if metric in LOWER_IS_BETTER else diff > 0
                verdict = ("candidate_better" if better else "reference_better") if p_holm < 0.05 else "no_difference"
                if metric == "auc" and ref["candidate"] == best_single:
                    verdict, p_holm = fusion_verdict, fusion_p_holm
                    p = min(p, p_holm)
                    if verdict == "candidate_better":  # keep the fake interval consistent with the verdict
                        diff = abs(diff) + 0.02
                        half = diff / 2
                out.append(dict(candidate=cand["candidate"], reference=ref["candidate"], reference_role=role, metric=metric,
                                value_candidate=cand[metric], value_reference=ref[metric], diff=diff, lo=diff - half,
                                hi=diff + half, p_value=p, test=COMPARED[metric],
                                p_holm=p_holm, verdict=verdict, n_patients=int(cand["n_patients"])))
    if out:
        pd.DataFrame(out).to_csv(run_dir / "comparisons.csv", index=False)


def _write_manifest(run_dir, n_patients, n_pos, candidates, seed) -> None:
    manifest = {
        "run": run_dir.name,
        "command": f"python -m benchmark run --suite all --data {SECRET_PATH} --profile quick",
        "profile": {"outer_folds": 3, "inner_folds": 3, "n_trials": 6, "bootstrap": 200},
        "profile_name": "quick",
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
