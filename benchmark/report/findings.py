"""Answers to the three questions, written from a run's stored tables.

Reads ``leaderboard.csv``, ``comparisons.csv``, ``studies.csv`` and ``manifest.json``
(all but the leaderboard optional) through ``run_files`` and never recomputes a metric:
every number in the text is a cell of those files (or of the manifest's profile), formatted with :func:`fmt`
(3 decimals; p-values below 0.001 are written ``< 0.001``), besides the fixed rule
constants below (0.5 for chance, 90 % specificity, the learning-curve points 25/50/100 %).

``findings.md`` opens with **Answers**: one sentence per question, its key number and CI,
and the caveat that changes its meaning. The rules behind each claim:

- A paired comparison row (``comparisons.csv``) is read as *better* (verdict
  ``candidate_better`` and ``p_holm < 0.05``), *worse* (``reference_better`` and
  ``p_holm < 0.05``), *equivalent* (verdict ``equivalent``: the data rule out a difference
  larger than the stated margin) or *not shown* (anything else, with the interval: "the
  data still allow a difference from lo to hi", or, when that unadjusted interval excludes
  zero but Holm's p does not, "its own 95 % interval ... excludes no difference, but not after
  adjusting for the run's other comparisons"). "No" is said only for *equivalent*;
  nothing is inferred from overlapping or separate intervals.
- Q1, images alone: the best image model by inner-CV score, its AUC with CI; *at chance*
  when that CI includes 0.5; sensitivity at 90 % specificity with the threshold set on
  out-of-fold data (deployable) next to the test-set threshold (optimistic).
- Q2, register data, neural network against trees: the ``Q2`` AUC row (MLP against the best
  trees, role ``best_tree``).
- Q3, combining: the best fusion by inner-CV score against the best single-modality model
  by inner-CV score (their AUC row); the ways of combining not shown worse than the best
  fusion are the ``best_fusion`` AUC rows that are not *worse*.
- A fusion gain (Q3 *better*) is checked against what the single models could reach. With
  oracle rows: when the best model of a modality stands more than ``UNDERTRAINED_GAP``
  below its oracle (``auc_gap``) and that oracle alone reaches at least the fusion's AUC
  (so a well-trained single model could reach what fusion reached; when the under-trained
  model is the reference itself this is "the gain is no larger than its gap"), the gain is
  said to be one an under-trained single model may explain, and, when the joint oracle is
  within ``CEILING_TIE`` of that oracle (the other modality adds almost nothing at the
  Bayes limit), to be explained by it and not by complementary modalities. Without
  oracle rows: a best single model with more than ``AT_BUDGET_SHARE`` of its bag still
  improving at the end of its budget (early stopping did not fire), or, for a model without
  early stopping (``at_budget`` NaN), whose inner score still rose by more than
  ``STILL_RISING`` from 50 % to 100 % of its training budget, was still improving
  (``studies.csv``), so the gain may reflect under-training. The same two tests give the
  caveat of the Q1 answer (the best image model far below its oracle, or still improving).
- Uncertainty is called lower with fusion only when the mean-entropy row is *better* and
  the log-loss and Brier rows are ``noninferior`` (not worse by more than their margins).
- The profile (manifest): ``smoke`` says nothing about the models; ``quick``, or images
  under ``SMALL_IMAGES_PX`` or fewer than ``FEW_TRIALS`` trials, says little about what the
  models can reach. Its budget numbers are the manifest's cells.

Use::

    from benchmark.report.findings import write_findings
    markdown = write_findings(Path("results/quick-1"))   # also writes findings.md there
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from benchmark.protocol import ORACLE_OF, ROLES
from benchmark.report.run_files import (
    RunFiles, budget_text, num, profile_of, read_comparisons, read_leaderboard, read_manifest, read_studies, safe_text, smallest,
)

ALPHA = 0.05  # significance level for Holm-adjusted p-values
CHANCE_AUC = 0.5  # a best model whose AUC interval includes this is "at chance"
UNDERTRAINED_GAP = 0.02  # a best model this far (AUC) below its modality's oracle did not reach the ceiling
CEILING_TIE = 0.01  # joint oracle within this of a single-modality oracle: the other modality adds almost nothing
STILL_RISING = 0.01  # inner-score rise from 50 % to 100 % of the budget that counts as "still improving"
AT_BUDGET_SHARE = 0.5  # share of the bag still improving at the end of its budget that counts as "still improving"
SMALL_IMAGES_PX = 128  # profiles below this image size (or FEW_TRIALS) get the "says little" warning
FEW_TRIALS = 20
TREE_FAMILIES = ("xgboost", "lightgbm")  # the register families that are gradient-boosted trees
SINGLE_MODALITIES = tuple(ROLES.values())  # ("image", "register"): what fusion is compared with
QUESTIONS = {
    "q1": "Q1. Images alone",
    "q2": "Q2. Register data: neural network or trees?",
    "q3": "Q3. Does combining images and register data help?",
}


# ---------------------------------------------------------------- formatting


def fmt(v: object, digits: int = 3) -> str:
    """``0.91234 -> '0.912'``; missing -> ``'n/a'``."""
    x = num(v)
    return "n/a" if math.isnan(x) else f"{x:.{digits}f}"


def fmt_p(p: object) -> str:
    x = num(p)
    if math.isnan(x):
        return "n/a"
    return "< 0.001" if x < 0.001 else f"= {x:.3f}"


def fmt_ci(row: pd.Series, metric: str) -> str:
    """``'0.912 [0.884, 0.941]'`` from the leaderboard columns ``m, m_lo, m_hi``."""
    v = fmt(row.get(metric))
    lo, hi = row.get(f"{metric}_lo"), row.get(f"{metric}_hi")
    if v == "n/a" or math.isnan(num(lo)) or math.isnan(num(hi)):
        return v
    return f"{v} [{fmt(lo)}, {fmt(hi)}]"


def _signed(v: object) -> str:
    x = num(v)
    return "n/a" if math.isnan(x) else f"{x:+.3f}"


def _label(metric: str) -> str:
    return {
        "auc": "AUC", "ap": "average precision", "brier": "Brier score", "ece": "ECE", "log_loss": "log loss",
        "entropy_mean": "mean predictive entropy", "mutual_info_mean": "mean mutual information",
        "member_std_mean": "mean member spread", "error_auroc": "error-detection AUROC", "aurc": "AURC",
        "sensitivity_thr": "sensitivity", "specificity_thr": "specificity", "balanced_accuracy": "balanced accuracy",
        "mcc": "MCC", "cal_slope": "calibration slope", "cal_intercept": "calibration intercept",
    }.get(metric, metric)


LOWER_IS_BETTER = ("brier", "log_loss", "ece", "entropy_mean", "mutual_info_mean")


# ---------------------------------------------------------------- selecting rows


def _usable(lb: pd.DataFrame) -> pd.DataFrame:
    """Non-oracle candidates with test metrics (status ok or partial)."""
    keep = ~lb["is_ceiling"] & lb["status"].isin(["ok", "partial"])
    if "auc" in lb.columns:
        keep &= lb["auc"].notna()
    return lb[keep]


def best_by_inner(rows: pd.DataFrame) -> pd.Series | None:
    """The row with the highest ``inner_score`` (the only selection score); None if no rows."""
    if rows.empty:
        return None
    if "inner_score" in rows.columns and rows["inner_score"].notna().any():
        return rows.loc[rows["inner_score"].astype(float).idxmax()]
    return rows.iloc[0]


def _oracle(lb: pd.DataFrame, name: str) -> pd.Series | None:
    rows = lb[lb["candidate"].eq(name) & lb["is_ceiling"]]
    rows = rows[rows["auc"].notna()] if "auc" in rows.columns else rows.iloc[0:0]
    return None if rows.empty else rows.iloc[0]


def _is_tree(row: pd.Series) -> bool:
    return str(row.get("family", "")).lower() in TREE_FAMILIES


def _is_mlp(row: pd.Series) -> bool:
    return str(row.get("family", "")).lower() == "mlp"


def _inner(row: pd.Series) -> str:
    return f"inner-CV score {fmt(row.get('inner_score'))}"


def _at_chance(row: pd.Series) -> bool:
    """Not shown better than chance: the AUC interval includes 0.5 or lies below it.

    An interval below 0.5 is no skill either: pooled out-of-fold predictions of a model
    without signal fall below 0.5 (each fold's model leans against its test fold's share).
    """
    lo, hi = num(row.get("auc_lo")), num(row.get("auc_hi"))
    return not (math.isnan(lo) or math.isnan(hi)) and lo <= CHANCE_AUC


def _chance_interval(row: pd.Series) -> str:
    """How an at-chance AUC interval relates to 0.5, in words."""
    if num(row.get("auc_hi")) < CHANCE_AUC:
        return f"an interval below {CHANCE_AUC} (no better than chance)"
    return f"an interval that includes {CHANCE_AUC}"


# ---------------------------------------------------------------- reading one comparison row


def outcome(c: pd.Series) -> str:
    """``better``, ``worse``, ``equivalent`` or ``not_shown`` for a row of comparisons.csv.

    Better and worse need the verdict *and* ``p_holm < 0.05``; equivalent is the verdict
    ``equivalent`` (the interval within the margin); everything else is not shown.
    """
    verdict, p = str(c.get("verdict")), num(c.get("p_holm"))
    if verdict == "candidate_better" and p < ALPHA:
        return "better"
    if verdict == "reference_better" and p < ALPHA:
        return "worse"
    if verdict == "equivalent":
        return "equivalent"
    return "not_shown"


_SHORT_TESTS = {"delong": "DeLong", "bootstrap": "paired bootstrap", "wilcoxon": "Wilcoxon signed-rank"}


def _test_name(c: pd.Series) -> str:
    """``DeLong``, ``paired bootstrap``, ...: the test's name from the ``test`` cell (short or descriptive)."""
    test = str(c.get("test", "") or "").strip()
    first = test.split(" ")[0].lower() if test else ""
    return _SHORT_TESTS.get(first, test or "paired")


def _test_full(c: pd.Series) -> str:
    """What the ``test`` cell says was tested, e.g. ``bootstrap over test patients (fitted models fixed)``."""
    test = str(c.get("test", "") or "").strip()
    if test.lower() in _SHORT_TESTS:
        return f"{_SHORT_TESTS[test.lower()]} test over the test patients (fitted models fixed)"
    return test or "paired test over the test patients"


def _evidence(c: pd.Series) -> str:
    """``AUC difference +0.054 [0.021, 0.087], DeLong test, Holm-adjusted p = 0.004``."""
    return (f"{_label(c['metric'])} difference {_signed(c['diff'])} [{fmt(c['lo'])}, {fmt(c['hi'])}], "
            f"{_test_name(c)} test, Holm-adjusted p {fmt_p(c['p_holm'])}")


def _margin(c: pd.Series) -> str:
    m = num(c.get("margin"))
    return "" if math.isnan(m) else f"±{fmt(m)}"


def _worse_on_sample(c: pd.Series) -> bool:
    d = num(c.get("diff"))
    return d > 0 if c["metric"] in LOWER_IS_BETTER else d < 0


def _not_shown(c: pd.Series) -> str:
    """``AUC difference -0.012 (worse on this sample, not significant); the data still allow ...``.

    The row's interval is this comparison's own 95 % interval, not adjusted for the others. When
    it excludes no difference but Holm's adjustment leaves the comparison not significant, the
    interval does not "allow" no difference, and the sentence says which holds: the comparison
    alone, not the run's family of comparisons.
    """
    sample = " (worse on this sample, not significant)" if _worse_on_sample(c) else ""
    lo, hi = num(c.get("lo")), num(c.get("hi"))
    if lo > 0 or hi < 0:
        return (f"{_label(c['metric'])} difference {_signed(c['diff'])}{sample}: its own 95 % interval, "
                f"{fmt(lo)} to {fmt(hi)}, excludes no difference, but not after adjusting for the run's other "
                f"comparisons (Holm-adjusted p {fmt_p(c['p_holm'])})")
    return (f"{_label(c['metric'])} difference {_signed(c['diff'])}{sample}; the data still allow a difference "
            f"from {fmt(lo)} to {fmt(hi)} (Holm-adjusted p {fmt_p(c['p_holm'])})")


def _equivalent(c: pd.Series) -> str:
    return (f"equivalent within {_margin(c) or 'the margin'} {_label(c['metric'])} (difference {_signed(c['diff'])} "
            f"[{fmt(c['lo'])}, {fmt(c['hi'])}]: the data rule out a larger difference)")


def comparison_clause(c: pd.Series, cand: str | None = None, ref: str | None = None) -> str:
    """One comparison row in words, whatever its outcome (worse-but-not-significant included)."""
    cand, ref = cand or str(c["candidate"]), ref or str(c["reference"])
    kind = outcome(c)
    if kind == "better":
        return f"{cand} better than {ref}: {_evidence(c)}"
    if kind == "worse":
        return f"{cand} worse than {ref}: {_evidence(c)}"
    if kind == "equivalent":
        return f"{cand} and {ref} {_equivalent(c)}"
    return f"{cand} against {ref} not shown either way: {_not_shown(c)}"


def _find(comp: pd.DataFrame | None, cand: str, ref: str, metric: str) -> pd.Series | None:
    if comp is None or comp.empty:
        return None
    rows = comp[comp["candidate"].eq(cand) & comp["reference"].eq(ref) & comp["metric"].eq(metric)]
    return None if rows.empty else rows.iloc[0]


# ---------------------------------------------------------------- the findings object


@dataclass
class Answer:
    """One question's answer: ``key`` (q1..q3), its title and one sentence (markdown)."""

    key: str
    title: str
    text: str


@dataclass
class Findings:
    """The answers, the profile note, the introduction and the detailed sections (markdown lines)."""

    answers: list[Answer]
    profile: str
    intro: str
    sections: list[list[str]] = field(default_factory=list)

    def markdown(self) -> str:
        lines = ["# Findings", "", "## Answers", ""]
        lines += [f"- **{a.title}:** {a.text}" for a in self.answers]
        lines += ["", self.profile, "", self.intro, ""]
        for section in self.sections:
            lines += section + [""]
        return "\n".join(lines).rstrip() + "\n"


class _Run:
    """The tables and what every section needs from them: usable rows, best model per modality, oracles."""

    def __init__(self, lb: pd.DataFrame, comp: pd.DataFrame | None, manifest: dict, studies: pd.DataFrame | None):
        self.lb, self.manifest, self.studies = lb, manifest, studies
        self.comp = None if comp is None or comp.empty else comp
        self.rows = _usable(lb)
        self.best = {m: best_by_inner(self.rows[self.rows["modality"].eq(m)]) for m in ("image", "register", "fusion")}
        self.oracle = {m: _oracle(lb, name) for m, name in ORACLE_OF.items()}

    # ------------------------------------------------------------ how far a best model stands from what it could reach

    def gap(self, row: pd.Series) -> float:
        """The stored ``auc_gap`` of a row (NaN when missing)."""
        return num(row.get("auc_gap"))

    def still_improving(self, row: pd.Series | None) -> pd.DataFrame:
        """The ``studies.csv`` rows of a candidate whose learning curve says it was still improving."""
        st = self.studies
        if row is None or st is None or st.empty:
            return pd.DataFrame()
        s = st[st["candidate"].eq(str(row["candidate"]))]
        # Early stopping decides where a model with an ``at_budget`` share stopped learning: its
        # curve up to the kept epoch or round rises by construction, so only the share counts.
        # The curve speaks for models without early stopping (at_budget NaN, e.g. CNNs).
        rising = ((s["curve_100"] - s["curve_50"]) > STILL_RISING) & s["at_budget"].isna()
        busy = s["at_budget"] > AT_BUDGET_SHARE
        return s[rising.fillna(False) | busy.fillna(False)]

    def has_curves(self, row: pd.Series | None) -> bool:
        st = self.studies
        if row is None or st is None or st.empty:
            return False
        s = st[st["candidate"].eq(str(row["candidate"]))]
        return bool(s["curve_100"].notna().any() or s["at_budget"].notna().any())

    def curve_text(self, s: pd.DataFrame) -> str:
        """The learning-curve cells of the given studies rows, fold by fold."""
        several = self.studies is not None and self.studies["repeat"].nunique() > 1
        parts = []
        for _, r in s.iterrows():
            where = f"outer fold {int(r['outer_fold'])}" + (f" of repeat {int(r['repeat'])}" if several else "")
            share = "" if math.isnan(num(r["at_budget"])) else f"; share of the bag still improving at the end: {fmt(r['at_budget'])}"
            parts.append(f"{where}: inner score {fmt(r['curve_25'])}, {fmt(r['curve_50'])} and {fmt(r['curve_100'])} "
                         f"at 25, 50 and 100 % of its training budget{share}")
        return "; ".join(parts)

    def shortfall(self, row: pd.Series | None, modality: str) -> str:
        """The caveat clause for a best single model: far below its oracle, or still improving ('' if neither)."""
        if row is None:
            return ""
        oracle = self.oracle.get(modality)
        if oracle is not None:
            gap = self.gap(row)
            if gap > UNDERTRAINED_GAP:
                return (f"but it stands {fmt(gap)} AUC below the {modality} oracle ({fmt(oracle['auc'])}), so the "
                        f"{modality} data hold more than this model learned")
            return ""
        if not self.still_improving(row).empty:
            return "but it was still improving when its training budget ran out, so it is not what this modality can reach"
        return ""

    def curve_told(self, row: pd.Series) -> pd.Series:
        """Per ``studies.csv`` row of the candidate: whether its curve can tell (an early-stopping
        share, or a point at 50 % of the budget; a one-epoch fit without early stopping has neither)."""
        s = self.studies[self.studies["candidate"].eq(str(row["candidate"]))]
        return s["at_budget"].notna() | s["curve_50"].notna()

    def improving_note(self, row: pd.Series | None) -> str:
        """``still improving when its training budget ran out in k of n outer folds`` for a candidate
        whose learning curve says so in at least one of the folds that have a curve ('' otherwise)."""
        if row is None or not self.has_curves(row):
            return ""
        told = int(self.curve_told(row).sum())
        k = len(self.still_improving(row))
        several = self.studies["repeat"].nunique() > 1
        return (f"still improving when its training budget ran out in {k} of {told} "
                f"{'studies (repeat x outer fold)' if several else 'outer folds'}") if k else ""

    def learning_lines(self, row: pd.Series | None) -> list[str]:
        """Detail lines: the learning curve of a best model (when stored), and whether it was still improving."""
        if row is None or not self.has_curves(row):
            return []
        name = str(row["candidate"])
        rising = self.still_improving(row)
        if not rising.empty:
            return [f"- {name} was still improving when its training budget ran out ({self.curve_text(rising)})."]
        if not self.curve_told(row).all():   # e.g. a one-epoch budget: no point of the curve before its end
            return [f"- Whether {name} was still improving is unknown: its training budget was too short for a "
                    "learning curve in some outer fold."]
        return [f"- {name} had levelled off by the end of its training budget in every outer fold (early stopping "
                f"ended at least half of the bag before its budget, or, without early stopping, the inner score rose "
                f"by at most {STILL_RISING} from 50 to 100 % of the budget)."]


# ---------------------------------------------------------------- the sections


def _intro(run: _Run) -> str:
    counts = run.lb[~run.lb["is_ceiling"]]
    n = counts["n_patients"].max() if "n_patients" in counts.columns else math.nan
    pos = counts["n_pos"].max() if "n_pos" in counts.columns else math.nan
    cohort = "a synthetic cohort" if run.manifest.get("dataset", {}).get("synthetic") else "the cohort"
    if not math.isnan(num(n)) and not math.isnan(num(pos)):
        cohort += f" of {int(n)} patients, {int(pos)} of them AFF"
    return (f"Pooled outer-test estimates on {cohort}, with 95 % patient-level bootstrap confidence intervals in "
            "brackets. The best candidate of a kind is the one with the highest inner cross-validation score "
            "(inner_score), never the one with the best test number. Differences come from paired tests on the same "
            "test patients (comparisons.csv), Holm-adjusted; separate intervals are never compared.")


def _profile(manifest: dict) -> str:
    """The profile and what it cannot tell, from the manifest's cells."""
    name, s = profile_of(manifest)
    if not name and not s:
        return ("**Profile unknown**: manifest.json is missing or records no profile, so how much training and search "
                "these numbers reflect is unknown.")
    budget = []
    if "outer_folds" in s and "inner_folds" in s:
        budget.append(f"{s['outer_folds']} x {s['inner_folds']} folds")
    if "n_trials" in s:
        budget.append(f"{budget_text(s['n_trials'])} trials per study")
    if "image_size" in s:
        budget.append(f"{s['image_size']} px images")
    if "max_epochs" in s:
        budget.append(f"at most {budget_text(s['max_epochs'])} epochs per fit")
    head = f"**Profile `{safe_text(name) or 'unnamed'}`**" + (f" ({', '.join(budget)})" if budget else "")
    size, trials = num(s.get("image_size")), smallest(s.get("n_trials"))
    if name == "smoke":
        return f"{head}: a check that everything runs; its numbers mean nothing about the models."
    if name == "quick" or size < SMALL_IMAGES_PX or trials < FEW_TRIALS:
        return (f"{head}: small images and few trials, so the numbers say little about what the models can reach, "
                "least of all the image and end-to-end fusion networks; run `standard` (one GPU) for that and "
                "`paper` for numbers to publish.")
    return f"{head}: the answers hold for this budget; a larger search or longer training may change them."


def _sens90(row: pd.Series) -> str:
    """Sensitivity at 90 % specificity: the out-of-fold threshold (deployable) next to the test-optimal one."""
    oof, test = num(row.get("sens_at_spec90_oof")), num(row.get("sens_at_spec90"))
    if math.isnan(oof) and math.isnan(test):
        return ""
    parts = []
    if not math.isnan(oof):
        spec = num(row.get("spec_at_spec90_oof"))
        reached = "" if math.isnan(spec) else f", specificity reached on the test patients {fmt(spec)}"
        parts.append(f"{fmt_ci(row, 'sens_at_spec90_oof')} with the threshold set on out-of-fold data "
                     f"(deployable{reached})")
    if not math.isnan(test):
        parts.append(f"{fmt_ci(row, 'sens_at_spec90')} with the threshold chosen on the test set (optimistic)")
    text = "Sensitivity at 90 % specificity: " + "; ".join(parts)
    if math.isnan(oof):
        text += "; this run's leaderboard has no out-of-fold-threshold value"
    return text + "."


def _q1(run: _Run) -> tuple[Answer, list[str]]:
    lines = [f"## {QUESTIONS['q1']}", ""]
    best = run.best["image"]
    if best is None:
        failed = run.lb[run.lb["modality"].eq("image") & ~run.lb["is_ceiling"]]
        why = " (the image candidates failed; see the caveats)" if not failed.empty else ""
        text = f"Cannot be answered: the run has no image candidate with test predictions{why}."
        return Answer("q1", QUESTIONS["q1"], text), lines + [text]
    name = best["candidate"]
    oof = num(best.get("sens_at_spec90_oof"))
    if _at_chance(best):
        text = (f"At chance: the best image model, **{name}** (by inner-CV score), has AUC {fmt_ci(best, 'auc')}, "
                f"{_chance_interval(best)}")
    else:
        text = f"The best image model, **{name}** (by inner-CV score), reaches AUC {fmt_ci(best, 'auc')}"
        if not math.isnan(oof):
            text += (f" and finds {fmt(oof)} of AFF cases at 90 % specificity with a threshold set on out-of-fold "
                     "data")
    caveat = run.shortfall(best, "image")
    answer = Answer("q1", QUESTIONS["q1"], text + (f"; {caveat}" if caveat else "") + ".")

    detail = (f"The best image model is **{name}** ({_inner(best)}): AUC {fmt_ci(best, 'auc')}, "
              f"average precision {fmt_ci(best, 'ap')}")
    if "sensitivity_thr" in best.index and not math.isnan(num(best.get("sensitivity_thr"))):
        detail += (f", sensitivity {fmt_ci(best, 'sensitivity_thr')} and specificity {fmt_ci(best, 'specificity_thr')} "
                   "at the threshold chosen on inner out-of-fold data")
    lines.append(detail + ".")
    if _at_chance(best):
        lines.append(f"Its AUC has {_chance_interval(best)}: it is not shown to be better than chance.")
    sens = _sens90(best)
    if sens:
        lines.append(sens)
    oracle = run.oracle["image"]
    if oracle is not None:
        gap = run.gap(best)
        gap_text = f"; {name} stands {fmt(gap)} AUC below it" if not math.isnan(gap) else ""
        lines.append(f"The image oracle (exact posterior from the image evidence) reaches AUC {fmt_ci(oracle, 'auc')}{gap_text}.")
    lines += [""] + run.learning_lines(best)
    others = run.rows[run.rows["modality"].eq("image") & run.rows["candidate"].ne(name)]
    if not others.empty:
        lines.append("")
        lines.append("Other image models: " + "; ".join(
            f"{r['candidate']} AUC {fmt_ci(r, 'auc')}" + _parenthesis(["at chance"] * _at_chance(r) + [run.improving_note(r)])
            for _, r in others.iterrows()) + ".")
    return answer, lines


def _q2_row(run: _Run, mlp: pd.Series | None) -> pd.Series | None:
    """The AUC row of the Q2 comparison: the best MLP (by inner score) against the best trees."""
    if run.comp is None:
        return None
    rows = run.comp[run.comp["question"].eq("Q2") & run.comp["metric"].eq("auc")]
    if rows.empty:
        return None
    if mlp is not None and rows["candidate"].eq(mlp["candidate"]).any():
        rows = rows[rows["candidate"].eq(mlp["candidate"])]
    return rows.iloc[0]


def _q2_sentence(c: pd.Series) -> str:
    mlp, tree = f"**{c['candidate']}**", f"**{c['reference']}**"
    kind = outcome(c)
    if kind == "better":
        return f"Yes, and better: the neural network {mlp} discriminates better than the best trees, {tree}: {_evidence(c)}"
    if kind == "worse":
        return f"No: the neural network {mlp} discriminates worse than the best trees, {tree}: {_evidence(c)}"
    if kind == "equivalent":
        return f"Yes: the neural network {mlp} and the best trees, {tree}, are {_equivalent(c)}"
    if c.get("noninferior") is True:
        return (f"As well, within the margin: the neural network {mlp} is not worse than the best trees, {tree}, by more "
                f"than {fmt(c.get('margin'))} AUC (difference {_signed(c['diff'])} [{fmt(c['lo'])}, {fmt(c['hi'])}]; "
                "equivalence is not shown)")
    return f"Not shown: the neural network {mlp} against the best trees, {tree}: {_not_shown(c)}"


def _q2(run: _Run) -> tuple[Answer, list[str]]:
    lines = [f"## {QUESTIONS['q2']}", ""]
    reg = run.rows[run.rows["modality"].eq("register")]
    if reg.empty:
        text = "Cannot be answered: the run has no register candidate with test predictions."
        return Answer("q2", QUESTIONS["q2"], text), lines + [text]
    mlp = best_by_inner(reg[reg.apply(_is_mlp, axis=1)])
    tree = best_by_inner(reg[reg.apply(_is_tree, axis=1)])
    row = _q2_row(run, mlp)
    if mlp is not None and tree is not None and _at_chance(mlp) and _at_chance(tree):
        # Two models without skill: their paired difference says nothing about register data.
        text = (f"At chance: neither the neural network **{mlp['candidate']}** (AUC {fmt_ci(mlp, 'auc')}) nor the best "
                f"trees, **{tree['candidate']}** (AUC {fmt_ci(tree, 'auc')}), is shown better than chance, so "
                "comparing them says nothing about what register data hold")
    elif row is not None:
        text = _q2_sentence(row)
    elif mlp is not None and tree is not None:
        text = (f"No paired test: comparisons.csv has no row of the neural network **{mlp['candidate']}** (AUC "
                f"{fmt_ci(mlp, 'auc')}) against the best trees, **{tree['candidate']}** (AUC {fmt_ci(tree, 'auc')}), "
                "and their separate intervals do not answer it")
    else:
        missing = "MLP" if mlp is None else "tree"
        text = f"Cannot be answered: the run has no {missing} candidate with test predictions"
    best = run.best["register"]
    if best is not None and _at_chance(best) and not text.startswith("At chance"):
        text += (f"; register data alone are at chance here: the best register model, **{best['candidate']}**, has AUC "
                 f"{fmt_ci(best, 'auc')}, {_chance_interval(best)}")
    answer = Answer("q2", QUESTIONS["q2"], text + ".")

    if mlp is not None:
        lines.append(f"Neural network: **{mlp['candidate']}** ({_inner(mlp)}) reaches AUC {fmt_ci(mlp, 'auc')}, "
                     f"Brier score {fmt_ci(mlp, 'brier')}.")
    else:
        lines.append("No MLP candidate has test predictions, so the neural-network part cannot be answered.")
    if tree is not None:
        lines.append(f"Best gradient-boosted trees by inner score: **{tree['candidate']}** ({_inner(tree)}), "
                     f"AUC {fmt_ci(tree, 'auc')}, Brier score {fmt_ci(tree, 'brier')}.")
    else:
        lines.append("No tree candidate has test predictions, so the trees part cannot be answered.")
    q2 = None if run.comp is None else run.comp[run.comp["question"].eq("Q2")]
    if q2 is not None and not q2.empty:
        lines += ["", "Paired comparisons (comparisons.csv, question Q2):", ""]
        lines += [f"- {comparison_clause(c)}." for _, c in q2.iterrows() if c["metric"] in ("auc", "brier", "log_loss")]
    else:
        lines.append("comparisons.csv has no MLP-versus-trees row, so there is no paired test of the two.")
    lines.append("")
    if best is not None and all(best["candidate"] != r["candidate"] for r in (mlp, tree) if r is not None):
        lines.append(f"The best register model overall by inner score is **{best['candidate']}**, AUC {fmt_ci(best, 'auc')}.")
    if best is not None:
        sens = _sens90(best)
        if sens:
            lines.append(f"{best['candidate']}: {sens[0].lower()}{sens[1:]}")
    oracle = run.oracle["register"]
    if oracle is not None and best is not None:
        gap = run.gap(best)
        gap_text = f"; {best['candidate']} stands {fmt(gap)} AUC below it" if not math.isnan(gap) else ""
        lines.append(f"The register oracle reaches AUC {fmt_ci(oracle, 'auc')}{gap_text}.")
    lines += run.learning_lines(best)
    return answer, lines


def _best_single(run: _Run) -> pd.Series | None:
    """The best single-modality model by inner score among the Q3 references (best image, best register)."""
    comp = run.comp
    refs = comp.loc[comp["question"].eq("Q3") & comp["reference_role"].isin(list(ROLES)), "reference"].unique()
    return best_by_inner(run.rows[run.rows["candidate"].isin(refs)])


def _fusion_caveat(run: _Run, fusion: pd.Series) -> tuple[str, list[str]]:
    """(answer clause, detail lines): is a fusion gain explained by a single model short of its ceiling?"""
    joint = run.oracle["fusion"]
    lines, clause = [], ""
    with_oracles = [m for m in SINGLE_MODALITIES if run.oracle[m] is not None]
    if with_oracles:
        for m in with_oracles:
            best, oracle = run.best[m], run.oracle[m]
            if best is None:
                continue
            other = "register" if m == "image" else "image"
            gap = run.gap(best)
            line = (f"- {m}: the best {m} model, {best['candidate']}, reaches AUC {fmt(best['auc'])}, "
                    f"the {m} oracle {fmt(oracle['auc'])}" + (f" ({fmt(gap)} above it)" if not math.isnan(gap) else ""))
            tie = joint is not None and num(joint["auc"]) - num(oracle["auc"]) <= CEILING_TIE
            if joint is not None:
                line += (f"; at the Bayes limit both modalities together reach {fmt(joint['auc'])}"
                         + (f", so {other} data add almost nothing to {m} data" if tie else ""))
            lines.append(line + ".")
            explains = gap > UNDERTRAINED_GAP and num(oracle["auc"]) >= num(fusion["auc"])
            if explains and not clause:
                if tie:
                    clause = (f"but the gain is explained by an under-trained {m} model, not by complementary "
                              f"modalities: {best['candidate']} stands {fmt(gap)} AUC below the {m} oracle, and at the "
                              f"Bayes limit {other} data add almost nothing to {m} data ({m} oracle AUC "
                              f"{fmt(oracle['auc'])}, both together {fmt(joint['auc'])})")
                else:
                    clause = (f"but an under-trained {m} model may explain the gain: {best['candidate']} stands "
                              f"{fmt(gap)} AUC below the {m} oracle, and that oracle alone (AUC {fmt(oracle['auc'])}) "
                              f"reaches what {fusion['candidate']} reached, so this is not by itself evidence that the "
                              "modalities complement each other")
        head = ("What the single models could reach (a fusion gain over a single model that stands far below its "
                f"oracle, more than {UNDERTRAINED_GAP} AUC, may only make up for that model):")
        return clause, ["", head, ""] + lines
    for m in SINGLE_MODALITIES:
        best = run.best[m]
        lines += run.learning_lines(best)
        if best is not None and not run.still_improving(best).empty and not clause:
            clause = (f"but the best {m} model, {best['candidate']}, was still improving when its training budget ran "
                      "out, so the gain may reflect under-trained single models rather than complementary modalities")
    if not lines:
        lines = ["- Whether the single models reached what they could is unknown: the run has no oracle rows and "
                 "studies.csv has no learning curves."]
    head = ("Were the single models still improving? (learning curves from studies.csv: still improving when more "
            "than half of the bag was still improving at the end of its budget (early stopping did not fire), or, "
            f"for a model without early stopping, when the inner score rose by more than {STILL_RISING} from 50 to "
            "100 % of the budget)")
    return clause, ["", head, ""] + lines


def _which_way(run: _Run, fusion: pd.DataFrame, top: pd.Series) -> tuple[str, list[str]]:
    """(answer clause, detail lines): the best fusion by inner score and those not shown worse than it."""
    name = str(top["candidate"])
    head = f"Best way of combining by inner score: **{name}** ({_inner(top)}), AUC {fmt_ci(top, 'auc')}."
    if len(fusion) < 2:
        return "", [head]
    rows = run.comp[run.comp["reference_role"].eq("best_fusion") & run.comp["metric"].eq("auc")]
    if rows["reference"].eq(name).any():
        rows = rows[rows["reference"].eq(name)]
    rows = rows[rows["candidate"].isin(fusion["candidate"])]
    inner = fusion.set_index("candidate")["inner_score"].astype(float) if "inner_score" in fusion.columns else None
    if inner is not None and not rows.empty:  # listed by inner score, best first
        rows = rows.assign(_s=rows["candidate"].map(inner).fillna(-math.inf)).sort_values("_s", ascending=False, kind="stable")
    if rows.empty:
        return ("; the ways of combining were not tested against each other",
                [head, "The fusion strategies are not tested against each other (comparisons.csv has no best_fusion "
                 "rows), so their order on the test set is not evidence."])
    kept = [str(c["candidate"]) for _, c in rows.iterrows() if outcome(c) != "worse"]
    worse = [str(c["candidate"]) for _, c in rows.iterrows() if outcome(c) == "worse"]
    if kept:
        clause = f"; not shown worse than {name} among the ways of combining: {', '.join(kept)}"
    else:
        clause = f"; every other way of combining is worse than {name}"
    lines = [head, "", f"Other ways of combining against {rows['reference'].iloc[0]} (comparisons.csv, role best_fusion):", ""]
    lines += [f"- {comparison_clause(c)}." for _, c in rows.iterrows()]
    lines += ["", f"Not shown worse than the best: {', '.join([name] + kept)}"
              + (f"; shown worse: {', '.join(worse)}." if worse else ".")]
    return clause, lines


def _q3(run: _Run) -> tuple[Answer, list[str]]:
    lines = [f"## {QUESTIONS['q3']}", ""]
    fusion = run.rows[run.rows["modality"].eq("fusion")]

    def cannot(why: str) -> tuple[Answer, list[str]]:
        text = f"Cannot be answered: {why}."
        return Answer("q3", QUESTIONS["q3"], text), lines + [text]

    if fusion.empty:
        return cannot("the run has no fusion candidate with test predictions")
    missing = [m for m in SINGLE_MODALITIES if run.best[m] is None]
    if missing:
        lines.append(f"There is no {' or '.join(missing)} candidate to compare with, so fusion can only be compared "
                     "with the modality that ran.")
    if run.comp is None:
        return cannot("comparisons.csv is missing or empty, so there is no paired test of fusion against the single "
                      "modalities")
    single = _best_single(run)
    top = run.best["fusion"]
    if single is None:
        return cannot("comparisons.csv has no comparison of fusion with a single-modality model")
    ref, name = str(single["candidate"]), str(top["candidate"])
    row = _find(run.comp, name, ref, "auc")
    if row is None:
        return cannot(f"comparisons.csv has no AUC comparison of {name}, the best fusion by inner score, with {ref}")
    which, which_lines = _which_way(run, fusion, top)
    kind = outcome(row)
    subject = f"**{name}**, the best fusion by inner-CV score"
    target = f"**{ref}**, the best single-modality model"
    caveat, caveat_lines = "", []
    if kind == "better":
        text = f"Yes: {subject}, discriminates better than {target}: {_evidence(row)}"
        caveat, caveat_lines = _fusion_caveat(run, top)
    elif kind == "equivalent":
        text = f"No: {subject}, and {target}, are {_equivalent(row)}"
    elif kind == "worse":
        text = f"Worse: {subject}, discriminates worse than {target}: {_evidence(row)}"
    else:
        text = f"Not shown: {subject}, against {target}: {_not_shown(row)}"
    answer = Answer("q3", QUESTIONS["q3"], text + (f"; {caveat}" if caveat else "") + which + ".")

    role = row.get("reference_role", "")
    role = f"best {ROLES[role]} model" if role in ROLES else "best single-modality model"
    lines.append(f"The best single-modality model by inner score is **{ref}** ({role}, {_inner(single)}, "
                 f"AUC {fmt_ci(single, 'auc')}).")
    auc = run.comp[run.comp["metric"].eq("auc") & run.comp["question"].eq("Q3")
                   & run.comp["reference_role"].isin(list(ROLES)) & run.comp["candidate"].isin(fusion["candidate"])]
    for other, group in auc.groupby("reference", sort=False):
        lines += ["", f"Fusion against {other} (AUC, comparisons.csv):", ""]
        lines += [f"- {comparison_clause(c)}." for _, c in group.iterrows()]
    lines += _warm_source_lines(run, fusion)
    lines += caveat_lines + [""] + which_lines + [""]
    lines += _uncertainty(run.comp, name, ref)
    return answer, lines


def _parenthesis(parts: list[str]) -> str:
    """`` (a; b)`` of the non-empty ``parts``, '' when none."""
    parts = [p for p in parts if p]
    return f" ({'; '.join(parts)})" if parts else ""


def _warm_source_lines(run: _Run, fusion: pd.DataFrame) -> list[str]:
    """End-to-end fusion networks against the image candidate they started from (role warm_source)."""
    rows = run.comp[run.comp["metric"].eq("auc") & run.comp["reference_role"].eq("warm_source")
                    & run.comp["candidate"].isin(fusion["candidate"])]
    if rows.empty:
        return []
    lines = ["", "End-to-end fusion networks against the image model they started from (their warm start in "
             "every fold; AUC, comparisons.csv, role warm_source):", ""]
    lines += [f"- {comparison_clause(c)}." for _, c in rows.iterrows()]
    worse = [f"{c['candidate']} ({c['reference']})" for _, c in rows.iterrows() if outcome(c) == "worse"]
    lower = [f"{c['candidate']} ({c['reference']})" for _, c in rows.iterrows()
             if num(c["diff"]) < 0 and outcome(c) != "worse"]
    if worse:
        lines.append(f"- Below the model they started from, on these test patients: {', '.join(worse)}. Their joint "
                     "training with the register data ended with worse discrimination than the image model's own "
                     "weights gave.")
    if lower:
        lines.append(f"- Lower than the model they started from on this sample, but not shown worse after Holm's "
                     f"adjustment: {', '.join(lower)}.")
    for _, c in rows.iterrows():   # why a network ended below its start: its budget, or not that
        if num(c["diff"]) < 0:
            lines += run.learning_lines(pd.Series({"candidate": c["candidate"]}))
    return lines


def _uncertainty(comp: pd.DataFrame, fusion: str, ref: str) -> list[str]:
    """Is uncertainty lower with fusion, and is that earned (proper scoring rules not worse)?"""
    lines = [f"Uncertainty ({fusion} against {ref}):", ""]
    ent = _find(comp, fusion, ref, "entropy_mean")
    if ent is None:
        return lines + ["- Cannot be answered: comparisons.csv has no entropy comparison for this pair."]
    lines.append(
        f"- What was tested: mean predictive entropy lower with fusion (paired {_test_full(ent)}), and log loss and "
        "Brier score, proper scoring rules, not worse with fusion by more than their margins (non-inferiority: the "
        "unfavourable end of the 95 % interval of the difference within the margin). Lower entropy alone could be "
        "overconfidence.")
    lines.append(f"- {_label('entropy_mean')}: {fmt(ent.get('value_candidate'))} with fusion against "
                 f"{fmt(ent.get('value_reference'))}; {comparison_clause(ent, 'fusion', ref)}.")
    proper, unknown, failing = [], [], []
    for m in ("log_loss", "brier"):
        c = _find(comp, fusion, ref, m)
        if c is None:
            unknown.append(_label(m))
            continue
        ni = c.get("noninferior")
        margin = fmt(c.get("margin"))
        verdict = {True: f"not worse by more than the margin {margin}",
                   False: f"not shown to be within the margin {margin} of the reference's",
                   None: "no non-inferiority result stored"}[ni if ni in (True, False) else None]
        if ni is False and outcome(c) == "worse":
            verdict = f"worse with fusion (Holm-adjusted p {fmt_p(c['p_holm'])}), not within the margin {margin}"
        lines.append(f"- {_label(m)}: {fmt(c.get('value_candidate'))} with fusion against {fmt(c.get('value_reference'))}, "
                     f"difference {_signed(c['diff'])} [{fmt(c['lo'])}, {fmt(c['hi'])}]: {verdict}.")
        (proper if ni is True else failing if ni is False else unknown).append(_label(m))
    mi = _find(comp, fusion, ref, "mutual_info_mean")
    if mi is not None:
        lines.append(f"- {_label('mutual_info_mean')} (reported, not part of the verdict): "
                     f"{fmt(mi.get('value_candidate'))} against {fmt(mi.get('value_reference'))}; "
                     f"{comparison_clause(mi, 'fusion', ref)}.")
    kind = outcome(ent)
    if kind != "better":
        word = {"worse": "higher with fusion", "equivalent": "the same with and without fusion, within the margin"}.get(
            kind, "not shown to be lower with fusion")
        lines.append(f"- Verdict: uncertainty is {word}.")
    elif failing:
        lines.append(f"- Verdict: predictions are more confident with fusion (lower entropy), but {' and '.join(failing)} "
                     "is not shown to stay within its margin, so the lower entropy is not earned (it may be "
                     "overconfidence); uncertainty is not called lower.")
    elif unknown:
        lines.append(f"- Verdict: entropy is lower with fusion, but comparisons.csv has no non-inferiority result for "
                     f"{' and '.join(unknown)}, so whether that is earned cannot be said; uncertainty is not called lower.")
    else:
        lines.append("- Verdict: uncertainty is lower with fusion, and earned: entropy is lower, and log loss and Brier "
                     "score are not worse by more than their margins.")
    return lines


def _caveats(run: _Run) -> list[str]:
    lines = ["## Caveats", ""]
    rows = run.rows
    pos = rows["n_pos"].max() if "n_pos" in rows.columns and not rows.empty else math.nan
    if not math.isnan(num(pos)):
        widest = None
        if {"auc_lo", "auc_hi"} <= set(rows.columns) and rows["auc_lo"].notna().any():
            width = rows["auc_hi"].astype(float) - rows["auc_lo"].astype(float)
            widest = rows.loc[width.idxmax()]
        example = f" (for example, {widest['candidate']}'s AUC interval is [{fmt(widest['auc_lo'])}, {fmt(widest['auc_hi'])}])" if widest is not None else ""
        lines.append(f"- Few positives: only {int(pos)} AFF patients, so intervals are wide{example} and small differences are not evidence.")
    comp = run.comp
    if comp is not None:
        families = sorted(f for f in comp["holm_family"].unique() if f)
        if families:
            named = ("the AUC rows (primary) and the other metrics (secondary)" if families == ["primary", "secondary"]
                     else ", ".join(families))
            lines.append(f"- Multiple comparisons: p-values are Holm-adjusted within each family of comparisons.csv, "
                         f"{named}; an unadjusted p below the significance level that does not survive adjustment is "
                         "not a finding.")
        else:
            lines.append("- Multiple comparisons: p-values are Holm-adjusted over all comparisons in comparisons.csv; "
                         "an unadjusted p below the significance level that does not survive adjustment is not a finding.")
        lines.append("- 'Not shown' is not 'no difference': only a result within the stated margin (equivalent) rules "
                     "a meaningful difference out.")
    lines.append(
        "- Selection: the best models were chosen by inner cross-validation only, so their test estimates are not "
        "inflated by the choice; ranking all candidates by their test numbers in the table below would be."
    )
    st = run.studies
    if st is not None and "timed_out" in st.columns:
        cut = st[st["timed_out"].map(lambda v: v is True)]
        for cand, g in cut.groupby("candidate", sort=False):
            folds = ", ".join(str(int(f)) for f in g["outer_fold"])
            lines.append(f"- {cand}: the study's time limit (a safety net) stopped the search before its trial budget "
                         f"in outer fold {folds}.")
    failed = run.lb[~run.lb["is_ceiling"] & ~run.lb["status"].isin(["ok"])]
    for _, r in failed.iterrows():
        reason = safe_text(r.get("info")) or "no reason recorded"
        kind = "failed" if r["status"] == "failed" else f"is {r['status']}"
        lines.append(f"- {r['candidate']} {kind}: {reason}.")
    return lines


def key_comparisons(lb: pd.DataFrame, comp: pd.DataFrame | None) -> pd.DataFrame:
    """The AUC rows of comparisons.csv behind the answers, in answer order, with a ``label``
    (``Q2: mlp − xgboost``) and an ``outcome``: Q2 rows, every fusion against the best
    single-modality model, the other fusions against the best fusion. Empty without rows."""
    columns = list(comp.columns) + ["label", "outcome"] if comp is not None else ["label", "outcome"]
    run = _Run(lb, comp, {}, None)
    if run.comp is None:
        return pd.DataFrame(columns=columns)
    auc = run.comp[run.comp["metric"].eq("auc")]
    parts = [auc[auc["question"].eq("Q2")]]
    single = _best_single(run) if (auc["question"].eq("Q3")).any() else None
    if single is not None:
        parts.append(auc[auc["question"].eq("Q3") & auc["reference"].eq(single["candidate"])
                         & auc["reference_role"].isin(list(ROLES))])
    parts.append(auc[auc["reference_role"].eq("best_fusion")])
    rows = pd.concat(parts).drop_duplicates(subset=["candidate", "reference", "metric"])
    if rows.empty:
        return pd.DataFrame(columns=columns)
    rows = rows.assign(label=rows["question"] + ": " + rows["candidate"] + " \u2212 " + rows["reference"],
                       outcome=[outcome(c) for _, c in rows.iterrows()])
    return rows.reset_index(drop=True)


def build_findings(lb: pd.DataFrame, comp: pd.DataFrame | None, manifest: dict,
                   studies: pd.DataFrame | None = None) -> Findings:
    """The findings (answers and detail) from the tables as ``run_files`` reads them."""
    run = _Run(lb, comp, manifest, studies)
    (a1, s1), (a2, s2), (a3, s3) = _q1(run), _q2(run), _q3(run)
    return Findings([a1, a2, a3], _profile(manifest), _intro(run), [s1, s2, s3, _caveats(run)])


def findings_text(lb: pd.DataFrame, comp: pd.DataFrame | None, manifest: dict,
                  studies: pd.DataFrame | None = None) -> str:
    """The findings as markdown from the tables as ``run_files`` reads them."""
    return build_findings(lb, comp, manifest, studies).markdown()


def findings_markdown(run_dir: Path) -> str:
    """The findings of a run folder as markdown (nothing written)."""
    run_dir = Path(run_dir)
    return findings_text(read_leaderboard(run_dir), read_comparisons(run_dir), read_manifest(run_dir),
                         read_studies(run_dir))


def write_findings(run_dir: Path, run: RunFiles | None = None) -> str:
    """Write ``run_dir/findings.md`` and return its markdown; ``run`` saves reading the tables again.

    >>> md = write_findings(Path("results/quick-1"))      # doctest: +SKIP
    >>> md.splitlines()[0]                                  # doctest: +SKIP
    '# Findings'
    """
    text = (findings_markdown(run_dir) if run is None
            else findings_text(run.leaderboard, run.comparisons, run.manifest, run.studies))
    (Path(run_dir) / "findings.md").write_text(text, encoding="utf-8")
    return text
