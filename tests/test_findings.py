"""findings.md: plain answers whose every number is a cell of leaderboard.csv or comparisons.csv."""

from __future__ import annotations

import re
import shutil

import pandas as pd
import pytest

from benchmark.report.findings import write_findings

try:
    from report_fixtures import write_fake_run
except ImportError:  # tests/ imported as a package
    from tests.report_fixtures import write_fake_run

NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?")
# Protocol constants the text may state: the CI level, the significance level, the p-value floor.
CONSTANTS = {"95", "0.05", "0.001"}


def _allowed_numbers(run_dir) -> set[str]:
    """Every cell of the two tables, formatted as findings.py rounds (0-4 decimals), plus digits inside text cells."""
    allowed = set(CONSTANTS)
    for name in ("leaderboard.csv", "comparisons.csv"):
        path = run_dir / name
        if not path.exists():
            continue
        df = pd.read_csv(path)
        for col in df.columns:
            values = pd.to_numeric(df[col], errors="coerce")
            if values.notna().any():
                for v in values.dropna():
                    allowed.update(f"{v:.{k}f}" for k in range(1, 5))
                    if float(v).is_integer():
                        allowed.add(f"{v:.0f}")
            else:
                for text in df[col].dropna().astype(str):
                    allowed.update(NUMBER.findall(text))
    return allowed


def _untraceable(text: str, allowed: set[str]) -> list[str]:
    return [n for n in NUMBER.findall(text) if n not in allowed]


@pytest.fixture(scope="module")
def make_run(tmp_path_factory):
    """Fake runs built once per set of options (read-only: copy one before changing it)."""
    cache = {}

    def make(**options):
        key = tuple(sorted(options.items()))
        if key not in cache:
            cache[key] = write_fake_run(tmp_path_factory.mktemp("run") / "run", **options)
        return cache[key]

    return make


VARIANTS = {
    "all": dict(),
    "no_fusion": dict(modalities=("register", "image")),
    "no_image": dict(modalities=("register", "fusion")),
    "no_oracle": dict(oracle=False),
    "fusion_not_better": dict(fusion_verdict="no_difference", fusion_p_holm=0.31),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_number_in_findings_is_a_rounded_table_cell(make_run, tmp_path, variant):
    run = make_run(**VARIANTS[variant])
    text = write_findings(run)
    assert (run / "findings.md").read_text() == text
    allowed = _allowed_numbers(run)
    assert len(NUMBER.findall(text)) > 10, "the findings should state numbers"
    assert _untraceable(text, allowed) == []


def test_number_check_catches_a_number_not_in_the_tables(make_run, tmp_path):
    run = make_run()
    assert _untraceable("AUC 0.123456 and 17.5 patients, resnet18 aside", _allowed_numbers(run)) == ["0.123456", "17.5"]


def test_fusion_is_said_to_help_when_holm_adjusted_auc_comparison_is_significant(make_run, tmp_path):
    text = write_findings(make_run(fusion_verdict="candidate_better", fusion_p_holm=0.004))
    q3 = text.split("## Q3")[1].split("## Caveats")[0]
    assert "Yes: fusion discriminates better than" in q3
    assert "Holm-adjusted p = 0.004" in q3


@pytest.mark.parametrize("verdict, p_holm", [("no_difference", 0.31), ("candidate_better", 0.07), ("reference_better", 0.01)])
def test_fusion_is_never_said_to_help_without_holm_significance(make_run, tmp_path, verdict, p_holm):
    text = write_findings(make_run(fusion_verdict=verdict, fusion_p_holm=p_holm))
    q3 = text.split("## Q3")[1].split("## Caveats")[0]
    assert "Yes:" not in q3
    assert "No: no fusion candidate has a higher AUC than" in q3


def test_without_fusion_candidate_q3_says_it_cannot_be_answered(make_run, tmp_path):
    run = make_run(modalities=("register", "image"))
    assert not (run / "comparisons.csv").exists()
    q3 = write_findings(run).split("## Q3")[1]
    assert "Cannot be answered: the run has no fusion candidate" in q3


def test_without_image_candidate_q1_says_it_cannot_be_answered(make_run, tmp_path):
    text = write_findings(make_run(modalities=("register", "fusion")))
    q1 = text.split("## Q1")[1].split("## Q2")[0]
    assert "Cannot be answered: the run has no image candidate" in q1
    assert "There is no image candidate to compare with" in text


def test_q1_names_best_image_by_inner_score_and_oracle_gap(make_run, tmp_path):
    run = make_run()
    lb = pd.read_csv(run / "leaderboard.csv")
    images = lb[(lb["modality"] == "image") & (lb["status"] == "ok")]
    best = images.loc[images["inner_score"].idxmax()]
    q1 = write_findings(run).split("## Q1")[1].split("## Q2")[0]
    assert f"**{best['candidate']}**" in q1
    assert f"AUC {best['auc']:.3f} [{best['auc_lo']:.3f}, {best['auc_hi']:.3f}]" in q1
    assert f"the gap to {best['candidate']} is {best['auc_gap']:.3f} AUC" in q1


def test_q2_reports_mlp_and_best_tree(make_run, tmp_path):
    run = make_run()
    lb = pd.read_csv(run / "leaderboard.csv")
    trees = lb[lb["family"].isin(["xgboost", "lightgbm"])]
    best_tree = trees.loc[trees["inner_score"].idxmax(), "candidate"]
    q2 = write_findings(run).split("## Q2")[1].split("## Q3")[0]
    assert "**mlp**" in q2 and f"**{best_tree}**" in q2


def test_failed_candidate_reason_is_shown_without_dataset_path(make_run, tmp_path):
    text = write_findings(make_run())
    assert "convnext_tiny failed: CUDA out of memory" in text
    assert "/secret-site" not in text and "PATKEY" not in text


def _set_uncertainty_comparisons(run, entropy_diff: float, brier_verdict: str) -> None:
    comp = pd.read_csv(run / "comparisons.csv")
    comp.loc[comp["metric"].isin(["entropy_mean", "mutual_info_mean"]), ["diff", "lo", "hi", "p_holm", "verdict"]] = \
        [entropy_diff, entropy_diff - 0.01, entropy_diff + 0.01, 0.01, "candidate_better"]
    comp.loc[comp["metric"].eq("brier"), ["p_holm", "verdict"]] = [0.01, brier_verdict]
    comp.loc[comp["metric"].eq("ece"), ["p_holm", "verdict"]] = [0.5, "no_difference"]
    comp.to_csv(run / "comparisons.csv", index=False)


def _set_error_auroc(run, fusion_interval, reference_interval) -> None:
    lb = pd.read_csv(run / "leaderboard.csv")
    comp = pd.read_csv(run / "comparisons.csv")
    auc = comp[comp["metric"].eq("auc")]
    best_fusion = lb[lb["modality"].eq("fusion")].sort_values("inner_score").iloc[-1]["candidate"]
    refs = lb[lb["candidate"].isin(auc["reference"])].sort_values("inner_score").iloc[-1]["candidate"]
    for name, (lo, v, hi) in ((best_fusion, fusion_interval), (refs, reference_interval)):
        lb.loc[lb["candidate"].eq(name), ["error_auroc_lo", "error_auroc", "error_auroc_hi"]] = [lo, v, hi]
    lb.to_csv(run / "leaderboard.csv", index=False)


def test_lower_uncertainty_with_worse_calibration_is_called_overconfidence(make_run, tmp_path):
    run = shutil.copytree(make_run(), tmp_path / "run")
    _set_uncertainty_comparisons(run, entropy_diff=-0.05, brier_verdict="reference_better")
    text = write_findings(run)
    assert "uncertainty is lower but not earned: Brier score is worse with fusion" in text


@pytest.mark.parametrize("fusion_auroc, reference_auroc, verdict", [
    ((0.52, 0.58, 0.64), (0.70, 0.76, 0.82), "uncertainty is lower but not earned: error-detection AUROC is worse with fusion"),
    ((0.70, 0.76, 0.82), (0.66, 0.72, 0.78), "uncertainty is lower and, as far as these tests show, earned"),
], ids=["flags-errors-worse-not-earned", "calibration-kept-earned"])
def test_lower_uncertainty_is_earned_only_when_error_detection_is_not_worse(make_run, tmp_path, fusion_auroc,
                                                                            reference_auroc, verdict):
    run = shutil.copytree(make_run(), tmp_path / "run")
    _set_uncertainty_comparisons(run, entropy_diff=-0.05, brier_verdict="candidate_better")
    _set_error_auroc(run, fusion_auroc, reference_auroc)
    text = write_findings(run)
    assert verdict in text
    assert _untraceable(text, _allowed_numbers(run)) == []


def test_significantly_worse_fusion_is_called_worse_not_insignificant(make_run, tmp_path):
    text = write_findings(make_run(fusion_verdict="reference_better", fusion_p_holm=0.01))
    q3 = text.split("## Q3")[1].split("## Caveats")[0]
    assert "Worse than" in q3 and "Holm-adjusted p = 0.010" in q3.split("Worse than")[1].split("\n")[0]
    assert "Not significant after Holm adjustment" not in q3.split("Worse than")[1].split("\n")[0]
