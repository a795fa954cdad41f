"""The end of a run: its parts gathered into the run's tables, the findings and the report.

    finish_run(rd, cohort, folds, studies, cands, profile, storage, manifest, wall_s)
    # predictions.parquet, studies.csv, trials.csv, leaderboard.csv, fold_metrics.csv,
    # comparisons.csv, subgroups.csv (when the dataset file names subgroups), the explanations
    # (gather_explain), then findings.md and leaderboard.html (report.html.build_report)
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.data.cohort import Cohort
from benchmark.data.splits import Fold
from benchmark.protocol import ORACLE_COLUMNS
from benchmark.run.folder import RunDir
from benchmark.run.pretrained import weights_column
from benchmark.run.units import named_warm_source
from benchmark.search.profiles import Profile
from benchmark.search.spaces import Candidate
from benchmark.search.trials import trials_frame


def finish_run(rd: RunDir, cohort: Cohort, folds: list[Fold], studies: list[dict],
               cands: list[Candidate], profile: Profile, storage: str, manifest: dict, wall_s: float,
               run_id: str | None = None) -> None:
    """Gather the parts into the run's tables and build the report (trials.csv: ``run_id``'s studies)."""
    from benchmark.evaluate.compare import compare_candidates
    from benchmark.evaluate.leaderboard import build_leaderboard
    from benchmark.evaluate.uncertainty import add_uncertainty

    parts = [pd.read_parquet(p) for p in sorted(rd.parts.glob("*.parquet"))
             if p.name.split("__")[0] in {c.name for c in cands}]
    pred = pd.concat(parts + [oracle_rows(cohort, folds)], ignore_index=True)
    pred = add_uncertainty(pred.drop(columns=["position"]))
    rd.write_atomic(rd.path / "predictions.parquet", lambda q: pred.to_parquet(q, index=False))
    st = pd.DataFrame(studies)
    fam = {c.name: (c.family, c.modality) for c in cands}
    st.insert(1, "family", st["candidate"].map(lambda n: fam[n][0]))
    st.insert(2, "modality", st["candidate"].map(lambda n: fam[n][1]))
    st.to_csv(rd.path / "studies.csv", index=False)
    pd.DataFrame(trials_frame(storage, run_id=run_id)).to_csv(rd.path / "trials.csv", index=False)
    board, fold_metrics = build_leaderboard(pred, studies=st, n_boot=profile.bootstrap, seed=manifest["seed"])
    board["weights"] = weights_column(manifest.get("weights"), list(board["candidate"]))   # starting weights
    board.to_csv(rd.path / "leaderboard.csv", index=False)
    fold_metrics.to_csv(rd.path / "fold_metrics.csv", index=False)
    named = {c.name: source for c in cands if (source := named_warm_source(c))}
    comparisons = compare_candidates(pred, board, n_boot=profile.bootstrap, seed=manifest["seed"], warm_sources=named)
    comparisons.to_csv(rd.path / "comparisons.csv", index=False)
    if cohort.groups is not None:   # the dataset file's subgroups
        from benchmark.evaluate.subgroups import subgroup_table

        subgroup_table(pred, cohort.groups.set_index(pd.Index(cohort.keys))).to_csv(rd.path / "subgroups.csv",
                                                                                   index=False)
    from benchmark.run.gather_explain import gather_explanations

    gather_explanations(rd, cohort, pred, board, cands, n_boot=profile.bootstrap, seed=manifest["seed"])
    manifest.update(finished=dt.datetime.now().isoformat(timespec="seconds"), wall_s=round(wall_s, 1),
                    status="complete")
    manifest.pop("reason", None)
    rd.write_json("manifest.json", manifest)
    from benchmark.report.html import build_report

    html = build_report(rd.path)
    _print_summary(board, rd.path, html)


def _print_summary(board: pd.DataFrame, run_path: Path, html: Path) -> None:
    print("\nleaderboard (pooled outer-test AUC, 95% CI):")
    for _, r in board.iterrows():
        if r.get("status") == "failed":
            print(f"  {r['candidate']:<18} {r['modality']:<9} FAILED: {r.get('info', '')}")
        else:
            print(f"  {r['candidate']:<18} {r['modality']:<9} AUC {r['auc']:.3f} [{r['auc_lo']:.3f}, {r['auc_hi']:.3f}]")
    print(f"\nresults: {run_path}\nreport:  {html}")


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
