"""A run's tables as the answers read them: the rows they speak of and the answer records.

``_Run`` holds the leaderboard, comparisons, studies and manifest, with the usable rows, the
best model per modality by inner-CV score (``best_by_inner``: the only selection score) and
the oracles, and says how far a best model stands from what it could reach (its oracle gap,
its learning curve). ``Answer`` (one question's, from ``q1_images``, ``q2_register``, ``q3_fusion``)
and ``Findings`` (all of them, from ``assemble``) are the records the findings are made of.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from benchmark.protocol import ORACLE_OF, ROLES
from benchmark.report.findings.wording import fmt
from benchmark.report.run_files import num

CHANCE_AUC = 0.5  # a best model whose AUC interval includes this is "at chance"
UNDERTRAINED_GAP = 0.02  # a best model this far (AUC) below its modality's oracle did not reach the ceiling
STILL_RISING = 0.01  # inner-score rise from 50 % to 100 % of the budget that counts as "still improving"
AT_BUDGET_SHARE = 0.5  # share of the bag still improving at the end of its budget that counts as "still improving"
TREE_FAMILIES = ("xgboost", "lightgbm")  # the register families that are gradient-boosted trees
SINGLE_MODALITIES = tuple(ROLES.values())  # ("image", "register"): what fusion is compared with
QUESTIONS = {
    "q1": "Q1. Images alone",
    "q2": "Q2. Register data: neural network or trees?",
    "q3": "Q3. Does combining images and register data help?",
}


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
