"""findings.md: three one-sentence answers first, every number a cell of the stored tables,
and each claim made exactly when its rule (findings.py's docstring) holds."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from benchmark.report.findings import write_findings

try:
    from report_fixtures import write_fake_run
except ImportError:  # tests/ imported as a package
    from tests.report_fixtures import write_fake_run

NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?")
# Constants the text may state: the CI level, the significance level, the p-value floor, chance AUC,
# the specificity target, the learning-curve points and the under-training thresholds of findings.py.
CONSTANTS = {"95", "0.05", "0.001", "0.5", "90", "25", "50", "100", "0.02", "0.01"}


def _allowed_numbers(run_dir) -> set[str]:
    """Every cell of the stored tables and the manifest's profile, formatted as findings.py rounds
    (0-4 decimals, signed too), plus digits inside text cells."""
    allowed = set(CONSTANTS)

    def add(v):
        allowed.update(f"{v:.{k}f}" for k in range(1, 5))
        allowed.update(f"{v:+.{k}f}".lstrip("+") for k in range(1, 5))
        if float(v).is_integer():
            allowed.add(f"{v:.0f}")

    for name in ("leaderboard.csv", "comparisons.csv", "studies.csv"):
        path = run_dir / name
        if not path.exists():
            continue
        df = pd.read_csv(path)
        for col in df.columns:
            values = pd.to_numeric(df[col], errors="coerce")
            if values.notna().any():
                for v in values.dropna():
                    add(v)
            else:
                for text in df[col].dropna().astype(str):
                    allowed.update(NUMBER.findall(text))
    manifest = run_dir / "manifest.json"
    if manifest.exists():
        profile = json.loads(manifest.read_text()).get("profile") or {}
        for v in (profile.values() if isinstance(profile, dict) else []):
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                add(v)
    return allowed


def _untraceable(text: str, allowed: set[str]) -> list[str]:
    return [n for n in NUMBER.findall(text) if n not in allowed]


def _answer(text: str, q: str) -> str:
    """The answer sentence of question ``q`` (``"Q1"``..``"Q3"``), without its title."""
    line = next(line for line in text.splitlines() if line.startswith(f"- **{q}."))
    return line.split(":** ", 1)[1]


def _section(text: str, q: str) -> str:
    return text.split(f"\n## {q}.")[1].split("\n## ")[0]


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


def _copy(make_run, tmp_path, **options):
    return shutil.copytree(make_run(**options), tmp_path / "run")


def _edit(run, name, rows, **values):
    """Set ``values`` in the rows of ``run/name`` that ``rows(df)`` selects."""
    df = pd.read_csv(run / name)
    mask = rows(df)
    assert mask.any(), f"no row of {name} selected"
    for col, v in values.items():
        if col in df.columns and df[col].dtype == bool:
            df[col] = df[col].astype(object)
        df.loc[mask, col] = v
    df.to_csv(run / name, index=False)


VARIANTS = {
    "all": dict(),
    "no_fusion": dict(modalities=("register", "image")),
    "no_image": dict(modalities=("register", "fusion")),
    "no_oracle": dict(oracle=False),
    "no_oracle_still_improving": dict(oracle=False, still_improving=("resnet18", "efficientnet_b0", "xgboost")),
    "fusion_not_shown": dict(fusion_verdict="not_shown", fusion_p_holm=0.31),
    "fusion_equivalent": dict(fusion_verdict="equivalent", fusion_p_holm=0.6),
    "q2_equivalent": dict(q2_verdict="equivalent"),
    "old_format": dict(schema="old"),
}


# ---------------------------------------------------------------- numbers and layout


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_number_in_findings_is_a_rounded_cell_of_the_stored_files(make_run, variant):
    run = make_run(**VARIANTS[variant])
    text = write_findings(run)
    assert (run / "findings.md").read_text() == text
    assert len(NUMBER.findall(text)) > 10, "the findings should state numbers"
    assert _untraceable(text, _allowed_numbers(run)) == []


def test_number_check_catches_a_number_not_in_the_tables(make_run):
    run = make_run()
    assert _untraceable("AUC 0.123456 and 17.5 patients, resnet18 aside", _allowed_numbers(run)) == ["0.123456", "17.5"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_findings_open_with_three_one_sentence_answers(make_run, variant):
    text = write_findings(make_run(**VARIANTS[variant]))
    lines = text.splitlines()
    assert lines[:4] == ["# Findings", "", "## Answers", ""]
    assert [line.split(":**")[0] for line in lines[4:7]] == [
        "- **Q1. Images alone", "- **Q2. Register data: neural network or trees?",
        "- **Q3. Does combining images and register data help?"]
    for line in lines[4:7]:
        sentence = line.split(":** ", 1)[1]
        assert sentence.endswith(".") and not re.search(r"[a-z)]\. [A-Z]", sentence), f"one sentence: {sentence}"


def test_nothing_is_inferred_from_overlapping_intervals(make_run):
    for options in VARIANTS.values():
        assert "overlap" not in write_findings(make_run(**options))


# ---------------------------------------------------------------- Q1


def test_q1_names_best_image_by_inner_score_with_auc_and_oracle_gap(make_run):
    run = make_run()
    lb = pd.read_csv(run / "leaderboard.csv")
    images = lb[(lb["modality"] == "image") & (lb["status"] == "ok")]
    best = images.loc[images["inner_score"].idxmax()]
    text = write_findings(run)
    q1 = _answer(text, "Q1")
    assert f"**{best['candidate']}**" in q1 and f"AUC {best['auc']:.3f} [{best['auc_lo']:.3f}, {best['auc_hi']:.3f}]" in q1
    assert f"{best['candidate']} stands {best['auc_gap']:.3f} AUC below it" in _section(text, "Q1")


def test_best_image_model_whose_auc_interval_includes_half_is_at_chance(make_run, tmp_path):
    run = _copy(make_run, tmp_path)
    lb = pd.read_csv(run / "leaderboard.csv")
    best = lb[lb["modality"].eq("image") & lb["status"].eq("ok")].sort_values("inner_score").iloc[-1]["candidate"]
    _edit(run, "leaderboard.csv", lambda d: d["candidate"].eq(best), auc=0.53, auc_lo=0.47, auc_hi=0.59)
    q1 = _answer(write_findings(run), "Q1")
    assert q1.startswith(f"At chance: the best image model, **{best}**") and "includes 0.5" in q1


def test_sensitivity_at_90_specificity_shows_the_oof_threshold_next_to_the_test_one(make_run):
    run = make_run()
    lb = pd.read_csv(run / "leaderboard.csv").set_index("candidate")
    text = write_findings(run)
    best = re.search(r"\*\*(\w+)\*\*", _answer(text, "Q1")).group(1)
    r = lb.loc[best]
    assert f"finds {r['sens_at_spec90_oof']:.3f} of AFF cases at 90 % specificity with a threshold set on out-of-fold" \
        in _answer(text, "Q1")
    q1 = _section(text, "Q1")
    assert (f"{r['sens_at_spec90_oof']:.3f} [{r['sens_at_spec90_oof_lo']:.3f}, {r['sens_at_spec90_oof_hi']:.3f}] "
            "with the threshold set on out-of-fold data (deployable") in q1
    assert f"{r['sens_at_spec90']:.3f} [{r['sens_at_spec90_lo']:.3f}, {r['sens_at_spec90_hi']:.3f}] with the threshold " \
           "chosen on the test set (optimistic)" in q1


def test_old_leaderboard_without_oof_threshold_says_so(make_run):
    q1 = _section(write_findings(make_run(schema="old")), "Q1")
    assert "chosen on the test set (optimistic); this run's leaderboard has no out-of-fold-threshold value" in q1


# ---------------------------------------------------------------- Q2


@pytest.mark.parametrize("verdict, start", [
    ("candidate_better", "Yes, and better: the neural network **mlp** discriminates better than the best trees"),
    ("reference_better", "No: the neural network **mlp** discriminates worse than the best trees"),
    ("equivalent", "Yes: the neural network **mlp** and the best trees, **xgboost**, are equivalent within ±0.050 AUC"),
    ("not_shown", "Not shown: the neural network **mlp** against the best trees, **xgboost**"),
])
def test_q2_is_answered_from_the_paired_mlp_versus_trees_row(make_run, verdict, start):
    run = make_run(q2_verdict=verdict)
    row = pd.read_csv(run / "comparisons.csv").query("question == 'Q2' and metric == 'auc'").iloc[0]
    q2 = _answer(write_findings(run), "Q2")
    assert q2.startswith(start), q2
    if verdict == "not_shown":
        assert f"the data still allow a difference from {row['lo']:.3f} to {row['hi']:.3f}" in q2


def test_q2_without_a_paired_row_is_not_answered_from_two_intervals(make_run):
    q2 = _answer(write_findings(make_run(schema="old")), "Q2")
    assert q2.startswith("No paired test: comparisons.csv has no row of the neural network **mlp**")


# ---------------------------------------------------------------- Q3


def test_fusion_is_said_to_help_when_holm_adjusted_auc_comparison_is_significant(make_run):
    q3 = _answer(write_findings(make_run(fusion_verdict="candidate_better", fusion_p_holm=0.004)), "Q3")
    assert q3.startswith("Yes: **") and "the best fusion by inner-CV score, discriminates better than" in q3
    assert "Holm-adjusted p = 0.004" in q3


@pytest.mark.parametrize("verdict, p_holm, start", [
    ("not_shown", 0.31, "Not shown:"),
    ("candidate_better", 0.07, "Not shown:"),   # a verdict that disagrees with p_holm is not a finding
    ("reference_better", 0.01, "Worse:"),
    ("equivalent", 0.6, "No:"),
])
def test_fusion_is_never_said_to_help_without_holm_significance(make_run, verdict, p_holm, start):
    q3 = _answer(write_findings(make_run(fusion_verdict=verdict, fusion_p_holm=p_holm)), "Q3")
    assert q3.startswith(start) and "Yes" not in q3


def test_no_is_said_only_for_equivalence_with_its_margin(make_run):
    q3 = _answer(write_findings(make_run(fusion_verdict="equivalent", fusion_p_holm=0.6)), "Q3")
    assert "are equivalent within ±0.050 AUC" in q3 and "the data rule out a larger difference" in q3
    for verdict in ("not_shown", "reference_better", "candidate_better"):
        assert not _answer(write_findings(make_run(fusion_verdict=verdict, fusion_p_holm=0.31)), "Q3").startswith("No:")


def test_worse_but_not_significant_fusion_is_reported_with_its_interval(make_run):
    run = make_run(fusion_verdict="not_shown", fusion_p_holm=0.31)
    comp = pd.read_csv(run / "comparisons.csv")
    text = write_findings(run)
    q3 = _answer(text, "Q3")
    name = re.search(r"\*\*(\w+)\*\*", q3).group(1)
    ref = re.findall(r"\*\*(\w+)\*\*", q3)[1]
    row = comp.query("candidate == @name and reference == @ref and metric == 'auc'").iloc[0]
    assert row["diff"] < 0
    assert f"AUC difference {row['diff']:+.3f} (worse on this sample, not significant); the data still allow a " \
           f"difference from {row['lo']:.3f} to {row['hi']:.3f}" in q3
    fusion = pd.read_csv(run / "leaderboard.csv").query("modality == 'fusion' and status == 'ok'")["candidate"]
    detail = _section(text, "Q3")
    assert all(f"- {f} against {ref} not shown either way" in detail for f in fusion)


def test_significantly_worse_fusion_is_called_worse(make_run):
    text = write_findings(make_run(fusion_verdict="reference_better", fusion_p_holm=0.01))
    detail = _section(text, "Q3")
    assert re.search(r"- \w+ worse than \w+: AUC difference -[\d.]+ \[.*Holm-adjusted p = 0\.010", detail)


def test_which_way_of_combining_names_the_best_by_inner_score_and_those_not_shown_worse(make_run, tmp_path):
    run = _copy(make_run, tmp_path)
    lb = pd.read_csv(run / "leaderboard.csv")
    fusion = lb[lb["modality"].eq("fusion") & lb["status"].eq("ok")].sort_values("inner_score", ascending=False)
    best, others = fusion["candidate"].iloc[0], fusion["candidate"].iloc[1:].tolist()
    _edit(run, "comparisons.csv", lambda d: d["candidate"].eq(others[0]) & d["reference_role"].eq("best_fusion")
          & d["metric"].eq("auc"), verdict="reference_better", p_holm=0.01, diff=-0.1, lo=-0.15, hi=-0.05)
    text = write_findings(run)
    q3 = _answer(text, "Q3")
    assert f"not shown worse than {best} among the ways of combining: {', '.join(others[1:])}." in q3
    assert f"Not shown worse than the best: {', '.join([best] + others[1:])}; shown worse: {others[0]}." in text


def _ok(run, modality: str) -> list[str]:
    """The candidates of ``modality`` that ran (status ok), in leaderboard order."""
    lb = pd.read_csv(run / "leaderboard.csv")
    return lb[lb["modality"].eq(modality) & lb["status"].eq("ok")]["candidate"].tolist()


def _warm_source_rows(run, networks: list[str], source: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(comparisons.csv, a copy of the ``networks``' best_image rows as role warm_source against ``source``)."""
    comp = pd.read_csv(run / "comparisons.csv")
    src = comp[comp["reference_role"].eq("best_image") & comp["candidate"].isin(networks)].copy()
    src["reference_role"], src["reference"] = "warm_source", source
    return comp, src


def test_fusion_networks_are_set_against_the_image_model_they_started_from(make_run, tmp_path):
    """Rows of role warm_source get their own list, and a network below its source is named."""
    run = _copy(make_run, tmp_path)
    fusion, image = _ok(run, "fusion"), _ok(run, "image")
    assert "End-to-end fusion networks against" not in write_findings(run)    # no such rows, no such list
    comp, src = _warm_source_rows(run, fusion[:2], image[-1])
    src.loc[src["candidate"].eq(fusion[0]) & src["metric"].eq("auc"), ["diff", "lo", "hi", "p_holm", "verdict"]] = \
        [-0.031, -0.052, -0.010, 0.02, "reference_better"]
    src.loc[src["candidate"].eq(fusion[1]) & src["metric"].eq("auc"), ["diff", "lo", "hi", "p_holm", "verdict"]] = \
        [0.012, -0.004, 0.028, 0.4, "not_shown"]
    pd.concat([comp, src]).to_csv(run / "comparisons.csv", index=False)
    detail = _section(write_findings(run), "Q3")
    assert "End-to-end fusion networks against the image model they started from" in detail
    assert f"- {fusion[0]} worse than {image[-1]}: AUC difference -0.031 [-0.052, -0.010]" in detail
    assert f"- {fusion[1]} against {image[-1]} not shown either way" in detail
    assert f"Below the model they started from, on these test patients: {fusion[0]} ({image[-1]})." in detail
    assert "Lower than the model they started from" not in detail         # fusion[1] is above it
    # a lower AUC without Holm significance is not called worse
    comp = pd.read_csv(run / "comparisons.csv")
    comp.loc[comp["reference_role"].eq("warm_source") & comp["candidate"].eq(fusion[0]) & comp["metric"].eq("auc"),
             ["lo", "hi", "p_holm", "verdict"]] = [-0.07, 0.01, 0.2, "not_shown"]
    comp.to_csv(run / "comparisons.csv", index=False)
    detail = _section(write_findings(run), "Q3")
    assert "Below the model they started from, on these test patients" not in detail
    assert (f"Lower than the model they started from on this sample, but not shown worse after Holm's adjustment: "
            f"{fusion[0]} ({image[-1]}).") in detail


def test_other_image_models_say_in_how_many_folds_they_were_still_improving(make_run, tmp_path):
    run = _copy(make_run, tmp_path, oracle=False)
    text = write_findings(run)
    best = _best_image(text)
    other = next(c for c in _ok(run, "image") if c != best)
    line = next(x for x in _section(text, "Q1").splitlines() if x.startswith("Other image models"))
    assert "still improving" not in line                                  # every curve flat: nothing said
    st = pd.read_csv(run / "studies.csv")
    first = st.index[st["candidate"].eq(other)][0]                        # one outer fold still rising
    st.loc[first, ["curve_50", "curve_100", "at_budget"]] = [0.70, 0.85, np.nan]
    st.to_csv(run / "studies.csv", index=False)
    n = int(st["candidate"].eq(other).sum())
    line = next(x for x in _section(write_findings(run), "Q1").splitlines() if x.startswith("Other image models"))
    assert f"{other} AUC " in line and f"(still improving when its training budget ran out in 1 of {n} outer folds)" in line


def test_a_fusion_network_below_its_start_gets_its_learning_curve(make_run, tmp_path):
    """Why a network ended below the image model it started from: still improving (its budget), or not."""
    run = _copy(make_run, tmp_path)
    fusion, image = _ok(run, "fusion"), _ok(run, "image")
    comp, src = _warm_source_rows(run, fusion[:1], image[-1])
    src.loc[src["metric"].eq("auc"), ["diff", "lo", "hi", "p_holm", "verdict"]] = [-0.015, -0.036, 0.006, 1.0,
                                                                                     "not_shown"]
    pd.concat([comp, src]).to_csv(run / "comparisons.csv", index=False)
    st = pd.read_csv(run / "studies.csv")
    mine = st["candidate"].eq(fusion[0])
    st.loc[mine, ["curve_25", "curve_50", "curve_100", "at_budget"]] = [0.80, 0.84, 0.86, np.nan]
    st.to_csv(run / "studies.csv", index=False)
    detail = _section(write_findings(run), "Q3")
    assert f"- {fusion[0]} was still improving when its training budget ran out (outer fold 0: inner score 0.800" \
        in detail
    st.loc[mine, ["curve_50", "curve_100"]] = [0.855, 0.86]               # flat from half the budget on
    st.to_csv(run / "studies.csv", index=False)
    assert f"- {fusion[0]} had levelled off by the end of its training budget" in _section(write_findings(run), "Q3")


def test_old_run_without_fusion_versus_fusion_rows_says_they_were_not_tested(make_run):
    q3 = _answer(write_findings(make_run(schema="old")), "Q3")
    assert q3.endswith("; the ways of combining were not tested against each other.")


def test_without_fusion_candidate_q3_says_it_cannot_be_answered(make_run):
    run = make_run(modalities=("register", "image"))
    assert not pd.read_csv(run / "comparisons.csv")["question"].eq("Q3").any()
    assert _answer(write_findings(run), "Q3").startswith("Cannot be answered: the run has no fusion candidate")


def test_without_image_candidate_q1_says_it_cannot_be_answered(make_run):
    text = write_findings(make_run(modalities=("register", "fusion")))
    assert _answer(text, "Q1").startswith("Cannot be answered: the run has no image candidate")
    assert "There is no image candidate to compare with" in text


# ---------------------------------------------------------------- a fusion gain against what single models could reach


def _ceiling_case(run, image_gap: float, fusion_auc: float) -> str:
    """Oracle image = oracle both = 0.984; the best image model ``image_gap`` below; the best fusion at ``fusion_auc``."""
    lb = pd.read_csv(run / "leaderboard.csv")
    ok = lb[lb["status"].eq("ok") & ~lb["is_ceiling"]]
    best_image = ok[ok["modality"].eq("image")].sort_values("inner_score").iloc[-1]["candidate"]
    best_fusion = ok[ok["modality"].eq("fusion")].sort_values("inner_score").iloc[-1]["candidate"]
    for oracle in ("oracle_image", "oracle_both"):
        _edit(run, "leaderboard.csv", lambda d, o=oracle: d["candidate"].eq(o), auc=0.984, auc_lo=0.977, auc_hi=0.989)
    _edit(run, "leaderboard.csv", lambda d: d["candidate"].eq(best_image), auc=0.984 - image_gap, auc_gap=image_gap)
    _edit(run, "leaderboard.csv", lambda d: d["candidate"].eq(best_fusion), auc=fusion_auc)
    return best_image


def test_fusion_gain_below_an_undertrained_image_models_gap_is_not_called_complementarity(make_run, tmp_path):
    run = _copy(make_run, tmp_path)
    best_image = _ceiling_case(run, image_gap=0.19, fusion_auc=0.868)
    text = write_findings(run)
    q3 = _answer(text, "Q3")
    assert q3.startswith("Yes: ")
    assert ("but the gain is explained by an under-trained image model, not by complementary modalities: "
            f"{best_image} stands 0.190 AUC below the image oracle") in q3
    assert "image oracle AUC 0.984, both together 0.984" in q3
    assert "stands 0.190 AUC below the image oracle (0.984)" in _answer(text, "Q1")


def test_fusion_gain_with_single_models_near_their_ceilings_gets_no_caveat(make_run, tmp_path):
    run = _copy(make_run, tmp_path)
    _ceiling_case(run, image_gap=0.01, fusion_auc=0.99)
    assert "under-trained" not in _answer(write_findings(run), "Q3")


def test_without_oracles_a_single_model_still_improving_qualifies_the_fusion_gain(make_run):
    run = make_run(oracle=False, still_improving=("resnet18", "efficientnet_b0"))
    text = write_findings(run)
    studies = pd.read_csv(run / "studies.csv")
    assert "was still improving when its training budget ran out" in _answer(text, "Q1")
    q3 = _answer(text, "Q3")
    assert q3.startswith("Yes: ") and "was still improving when its training budget ran out, so the gain may " \
        "reflect under-trained single models rather than complementary modalities" in q3
    best = re.search(r"\*\*(\w+)\*\*", _answer(text, "Q1")).group(1)
    r = studies[studies["candidate"].eq(best)].iloc[0]
    assert (f"outer fold 0: inner score {r['curve_25']:.3f}, {r['curve_50']:.3f} and {r['curve_100']:.3f} at 25, 50 "
            "and 100 % of its training budget") in _section(text, "Q1")


def test_without_oracles_models_that_levelled_off_get_no_caveat(make_run):
    text = write_findings(make_run(oracle=False))
    assert "still improving" not in _answer(text, "Q1") + _answer(text, "Q3")
    assert "had levelled off by the end of its training budget" in _section(text, "Q1")


def _best_image(text: str) -> str:
    return re.search(r"\*\*(\w+)\*\*", _answer(text, "Q1")).group(1)


def test_an_early_stopped_model_is_not_still_improving_because_its_curve_rises(make_run, tmp_path):
    """Up to the kept round or epoch a curve rises by construction; early stopping (at_budget 0) decides."""
    run = _copy(make_run, tmp_path, oracle=False)
    best = _best_image(write_findings(make_run(oracle=False)))
    _edit(run, "studies.csv", lambda d: d["candidate"].eq(best), curve_25=0.6, curve_50=0.7, curve_100=0.85,
          at_budget=0.0)
    text = write_findings(run)
    assert "still improving" not in _answer(text, "Q1")
    assert f"{best} had levelled off" in _section(text, "Q1")


def test_a_budget_too_short_for_a_curve_is_unknown_not_levelled_off(make_run, tmp_path):
    """A one-epoch CNN without early stopping: no 25 / 50 % point, so nothing is claimed either way."""
    run = _copy(make_run, tmp_path, oracle=False)
    best = _best_image(write_findings(make_run(oracle=False)))
    _edit(run, "studies.csv", lambda d: d["candidate"].eq(best), curve_25=np.nan, curve_50=np.nan, at_budget=np.nan)
    text = write_findings(run)
    assert f"Whether {best} was still improving is unknown" in _section(text, "Q1")
    assert f"{best} had levelled off" not in text


# ---------------------------------------------------------------- uncertainty


def _set_uncertainty(run, entropy: str, log_loss_noninferior, brier_noninferior=True, log_loss_verdict="not_shown"):
    lb = pd.read_csv(run / "leaderboard.csv")
    best_fusion = lb[lb["modality"].eq("fusion")].sort_values("inner_score").iloc[-1]["candidate"]
    pair = lambda d: d["candidate"].eq(best_fusion) & d["reference_role"].isin(["best_image", "best_register"])  # noqa: E731
    p = 0.01 if entropy.endswith("_better") else 0.5
    _edit(run, "comparisons.csv", lambda d: pair(d) & d["metric"].eq("entropy_mean"), verdict=entropy, p_holm=p,
          diff=-0.05 if entropy == "candidate_better" else 0.01, lo=-0.07, hi=-0.03 if entropy == "candidate_better" else 0.05)
    _edit(run, "comparisons.csv", lambda d: pair(d) & d["metric"].eq("log_loss"), noninferior=log_loss_noninferior,
          verdict=log_loss_verdict, p_holm=0.01 if log_loss_verdict == "reference_better" else 0.4)
    _edit(run, "comparisons.csv", lambda d: pair(d) & d["metric"].eq("brier"), noninferior=brier_noninferior,
          verdict="not_shown", p_holm=0.4)


@pytest.mark.parametrize("entropy, ll_ok, brier_ok, ll_verdict, expected", [
    ("candidate_better", True, True, "not_shown",
     "Verdict: uncertainty is lower with fusion, and earned: entropy is lower, and log loss and Brier score are not "
     "worse by more than their margins."),
    ("not_shown", True, True, "not_shown", "Verdict: uncertainty is not shown to be lower with fusion."),
    ("candidate_better", False, True, "reference_better",
     "Verdict: predictions are more confident with fusion (lower entropy), but log loss is not shown to stay within "
     "its margin, so the lower entropy is not earned"),
    ("candidate_better", True, False, "not_shown",
     "but Brier score is not shown to stay within its margin, so the lower entropy is not earned"),
], ids=["earned", "entropy-not-lower", "log-loss-worse-beyond-margin", "brier-not-within-margin"])
def test_uncertainty_is_called_lower_only_with_lower_entropy_and_noninferior_scoring_rules(
        make_run, tmp_path, entropy, ll_ok, brier_ok, ll_verdict, expected):
    run = _copy(make_run, tmp_path)
    _set_uncertainty(run, entropy, ll_ok, brier_ok, ll_verdict)
    text = write_findings(run)
    assert expected in text
    if expected != VERDICT_EARNED:
        assert "uncertainty is lower with fusion" not in text
    assert "What was tested: mean predictive entropy lower with fusion (paired" in text
    assert "not worse with fusion by more than their margins (non-inferiority" in text
    assert _untraceable(text, _allowed_numbers(run)) == []


VERDICT_EARNED = ("Verdict: uncertainty is lower with fusion, and earned: entropy is lower, and log loss and Brier score "
                  "are not worse by more than their margins.")


def test_log_loss_worse_beyond_the_margin_is_said_with_its_p_value(make_run, tmp_path):
    run = _copy(make_run, tmp_path)
    _set_uncertainty(run, "candidate_better", False, True, "reference_better")
    assert "worse with fusion (Holm-adjusted p = 0.010), not within the margin" in write_findings(run)


def test_old_run_without_noninferiority_never_calls_uncertainty_lower(make_run, tmp_path):
    run = _copy(make_run, tmp_path, schema="old")
    comp = pd.read_csv(run / "comparisons.csv")
    assert "noninferior" not in comp.columns and set(comp["verdict"]) <= {"candidate_better", "reference_better",
                                                                         "no_difference"}
    comp.loc[comp["metric"].eq("entropy_mean"), ["diff", "lo", "hi", "p_holm", "verdict"]] = \
        [-0.05, -0.07, -0.03, 0.01, "candidate_better"]
    comp.to_csv(run / "comparisons.csv", index=False)
    text = write_findings(run)
    assert "has no non-inferiority result for log loss and Brier score, so whether that is earned cannot be said" in text
    assert "uncertainty is lower with fusion" not in text
    assert "no_difference" not in text


# ---------------------------------------------------------------- profile and caveats


@pytest.mark.parametrize("profile, expected", [
    ("quick", "small images and few trials, so the numbers say little about what the models can reach"),
    ("smoke", "a check that everything runs; its numbers mean nothing"),
    ("standard", "the answers hold for this budget"),
])
def test_findings_name_the_profile_and_what_it_cannot_tell(make_run, profile, expected):
    text = write_findings(make_run(profile=profile))
    head = text.split("\n## Q1.")[0]
    assert f"**Profile `{profile}`**" in head and expected in head


def test_missing_manifest_says_the_profile_is_unknown(make_run, tmp_path):
    run = _copy(make_run, tmp_path)
    (run / "manifest.json").unlink()
    assert "**Profile unknown**" in write_findings(run)


def test_study_stopped_by_the_time_limit_is_a_caveat(make_run, tmp_path):
    run = _copy(make_run, tmp_path)
    _edit(run, "studies.csv", lambda d: d["candidate"].eq("resnet18") & d["outer_fold"].eq(1), timed_out=True)
    caveats = write_findings(run).split("## Caveats")[1]
    assert "- resnet18: the study's time limit (a safety net) stopped the search before its trial budget in outer fold 1." \
        in caveats


def test_failed_candidate_reason_is_shown_without_dataset_path(make_run):
    text = write_findings(make_run())
    assert "convnext_tiny failed: CUDA out of memory" in text
    assert "/secret-site" not in text and "PATKEY" not in text


def test_per_modality_budgets_read_as_words_and_the_smallest_counts():
    from benchmark.report.findings.assemble import _profile

    manifest = {"profile": {"name": "mine", "outer_folds": 5, "inner_folds": 3, "image_size": 224,
                            "n_trials": {"register": 30, "image": 10, "fusion": 10},
                            "max_epochs": {"image": 30, "register": 200}}}
    text = _profile(manifest)
    assert "register 30 / image 10 / fusion 10 trials per study" in text and "{" not in text
    assert "at most image 30 / register 200 epochs per fit" in text
    assert "few trials" in text          # 10 image trials is below FEW_TRIALS, whatever the register gets


def test_an_auc_interval_below_chance_is_no_skill_and_two_such_models_are_not_ranked(make_run, tmp_path):
    """Pooled out-of-fold predictions of signal-free models fall below 0.5; that is chance, not a ranking."""
    run = _copy(make_run, tmp_path)
    lb = pd.read_csv(run / "leaderboard.csv")
    reg = lb["modality"].eq("register") & ~lb["is_ceiling"]
    _edit(run, "leaderboard.csv", lambda d: reg, auc=0.44, auc_lo=0.38, auc_hi=0.49)
    q2 = _answer(write_findings(run), "Q2")
    assert q2.startswith("At chance: neither the neural network") and "worse" not in q2 and "better than" not in \
        q2.replace("shown better than chance", "")


def test_a_not_shown_row_whose_own_interval_excludes_zero_says_the_interval_is_unadjusted():
    """The README-command run printed "attention against resnet18 not shown either way: AUC difference
    -0.051 ...; the data still allow a difference from -0.089 to -0.014 (Holm-adjusted p = 0.091)": an
    interval wholly below zero said to "allow" no difference. It is the comparison's own interval."""
    from benchmark.report.findings import comparison_clause

    row = pd.Series({"candidate": "attention", "reference": "resnet18", "metric": "auc", "diff": -0.051,
                     "lo": -0.089, "hi": -0.014, "p_holm": 0.091, "verdict": "not_shown"})
    text = comparison_clause(row)
    assert text.startswith("attention against resnet18 not shown either way: AUC difference -0.051")
    assert "its own 95 % interval, -0.089 to -0.014, excludes no difference, but not after adjusting" in text
    assert "still allow" not in text and "Holm-adjusted p = 0.091" in text
    spans_zero = comparison_clause(row.copy().replace({-0.014: 0.012}))
    assert "the data still allow a difference from -0.089 to 0.012" in spans_zero
