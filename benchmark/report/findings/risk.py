"""The "Risk factors" section: which register columns the best register and fusion models rest on.

Read from ``importance.csv`` pooled per candidate (``evaluate.importance``) and, on a
synthetic cohort, scored against the generator's truth (``evaluate.recovery``: the rule is
stated there and in the section). The candidates: the best register model and the best
fusion model by inner-CV score (the same choice as the answers), then any asked for with
``report RUN --risk-factors NAME,...``. Every number is a cell of the stored tables.
"""

from __future__ import annotations

import math

import pandas as pd

from benchmark.evaluate.recovery import Recovery, recovery
from benchmark.report.explain_files import ExplainFiles
from benchmark.report.findings.tables import _Run
from benchmark.report.findings.wording import fmt
from benchmark.report.run_files import num

TITLE = "Risk factors"


def risk_candidates(run: _Run, ex: ExplainFiles) -> list[tuple[str, str]]:
    """(candidate, why it is shown): the best register and fusion models, then those asked for."""
    out = []
    for modality, why in (("register", "the best register model"), ("fusion", "the best fusion model")):
        best = run.best.get(modality)
        if best is not None:
            out.append((str(best["candidate"]), why))
    for name in ex.extra:
        if name not in [c for c, _ in out]:
            out.append((name, "asked for"))
    return out


def _arrow(row: pd.Series) -> str:
    d = num(row.get("direction"))
    if math.isnan(d) or d == 0:
        return "direction unknown"
    sign = "+" if d > 0 else "\u2212"
    level = row.get("level")
    return f"{sign} ({row['column']} = {level})" if isinstance(level, str) and level else sign


def _ranked_lines(rows: pd.DataFrame, k: int) -> list[str]:
    lines = []
    for _, r in rows.head(k).iterrows():
        shap = "" if math.isnan(num(r.get("shap_mean_abs"))) else f", mean |SHAP| {fmt(r['shap_mean_abs'])}"
        lines.append(f"- {int(r['rank'])}. **{r['column']}** ({_arrow(r)}): AUC drop {fmt(r['auc_drop'])} "
                     f"[{fmt(r['drop_lo'])}, {fmt(r['drop_hi'])}]{shap}; in the top {k} in {int(r['top_k'])} of "
                     f"{int(r['n_folds'])} outer folds")
    return lines


def _names(cols: list[str]) -> str:
    return ", ".join(f"`{c}`" for c in cols) if cols else "none"


def recovery_text(name: str, rec: Recovery) -> str:
    """One paragraph: what the top k hold of the truth, in words."""
    pct = "n/a" if math.isnan(rec.recall) else f"{100 * rec.recall:.0f} %"
    proxy = "; ".join(f"`{q}` stands in for `{c}`" for c, q in rec.via_proxy.items())
    text = (f"**Recovery of the generator's truth ({name})**: the top {rec.k} hold {len(rec.found_right)} of the "
            f"{rec.n_signal} signal columns with the right sign (recall {pct}"
            + (f"; {proxy}" if proxy else "") + ")")
    if rec.wrong_sign:
        text += f"; with the wrong sign: {_names(rec.wrong_sign)}"
    if rec.missed:
        text += f"; not in the top {rec.k}: {_names(rec.missed)}"
    text += f". Weak risk columns in the top {rec.k}: {_names(rec.weak_found)}. Noise columns in the top {rec.k}: "
    text += _names(rec.noise_in_top)
    if rec.best_noise is not None:
        text += (f" (the highest-ranked noise column, `{rec.best_noise}`, is number {int(rec.best_noise_rank)}; "
                 + ("every signal column found ranks above it)" if rec.noise_below
                    else "a signal column found ranks below it)"))
    return text + f". Share of the top {rec.k} that the risk explains (signal, weak or proxy columns): " \
                  f"{100 * rec.precision:.0f} %."


def risk_section(run: _Run, ex: ExplainFiles | None) -> list[str]:
    """The markdown lines of the section (a short note when the run has no importance tables)."""
    lines = [f"## {TITLE}", ""]
    if ex is None or ex.importance is None:
        why = "; ".join(f"{c}: {n}" for c, n in (ex.notes.items() if ex else []))
        return lines + ["Not computed: the run has no importance.csv (a run made with `--importance none`, or before "
                        "the harness computed risk factors)" + (f"; {why}" if why else "") + "."]
    k = ex.k
    lines += [f"Which register columns the predictions rest on: the AUC each model loses on its outer-test parts when "
              f"one column's values are shuffled among the test patients, with each fold's own fitted models (a "
              f"column's one-hot levels and missing-value flag move with it); 95 % intervals over patients "
              f"(bootstrap per fold, folds combined). Direction: + means a larger value, or the level named, raises "
              f"P(AFF) (TreeSHAP for tree ensembles, else the shuffles); stability: the outer folds in which the "
              f"column is among that fold's {k} largest drops.", ""]
    truth = ex.truth
    if truth is None:
        lines += ["Recovery is not scored: the cohort has no truth file (only a synthetic cohort knows which columns "
                  "carry the risk), so these are the models' risk factors, not a check of them.", ""]
    else:
        signal = ", ".join(f"`{e['column']}` ({'+' if e['sign'] > 0 else chr(8722)})" for e in truth.get("signal", []))
        lines += [f"The cohort is synthetic: its risk reads the signal columns {signal or 'none'} "
                  f"({truth.get('rule', '')}). Recovery rule: a signal column is found when it, or a proxy no other "
                  f"signal column claimed, is in the top {k} (positive drops only), with the right sign when the "
                  "direction agrees with the generator's.", ""]
    for name, why in risk_candidates(run, ex):
        rows = ex.importance[ex.importance["candidate"].eq(name)].sort_values("rank")
        lines += [f"### {name} ({why})", ""]
        if rows.empty:
            note = ex.notes.get(name, "no importance rows in importance.csv for this candidate")
            lines += [f"Not computed: {note}.", ""]
            continue
        lines += _ranked_lines(rows, k) + [""]
        if truth is not None:
            lines += [recovery_text(name, recovery(rows, truth, k=k)), ""]
    return lines[:-1] if lines[-1] == "" else lines
