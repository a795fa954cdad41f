"""Subgroups in words and tables: the findings section, the leaderboard page's table, the validation page's.

    sub = read_subgroups(run_dir)                    # subgroups.csv, or None when the run has none
    lines = subgroup_section(sub, best)              # findings.md: '## Subgroups' and a line per subgroup that differs
    html = subgroups_html(sub, best)                 # leaderboard.html: the best models' tables, the rest folded
    html = subgroup_table_html(rows)                 # one model's rows (validation.html)

The figures come from ``evaluate.subgroups`` (``subgroups.csv``); nothing is recomputed here. A
level with fewer than 5 AFF or NFF patients reads "too small", never as numbers. A subgroup
is said to differ only when its Holm-adjusted test against the other patients is below 0.05.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import pandas as pd

from benchmark.report.run_files import num, read_table

ALPHA = 0.05
MIN_POSITIVES = 5


def best_models(lb: pd.DataFrame) -> dict[str, pd.Series | None]:
    """The best model of each modality by inner-CV score (the models the answers speak of)."""
    from benchmark.report.findings.tables import _usable, best_by_inner

    rows = _usable(lb)
    return {m: best_by_inner(rows[rows["modality"].eq(m)]) for m in ("image", "register", "fusion")}


def read_subgroups(run_dir: Path) -> pd.DataFrame | None:
    """``subgroups.csv`` of a run (None when its dataset file names no subgroups)."""
    sub = read_table(run_dir, "subgroups.csv", ("candidate", "subgroup", "level", "n", "n_pos", "status"),
                     optional=True)
    if sub is None:
        return None
    for col in ("candidate", "subgroup", "level", "status"):
        sub[col] = sub[col].astype(str)
    if "differs" in sub.columns:
        sub["differs"] = sub["differs"].astype(str).str.lower().isin(["true", "1", "1.0"])
    return sub


def _f(v: object, digits: int = 2) -> str:
    x = num(v)
    return "n/a" if math.isnan(x) else f"{x:.{digits}f}"


def _ci(row, key: str, digits: int = 2) -> str:
    v, lo, hi = num(row.get(key)), num(row.get(f"{key}_lo")), num(row.get(f"{key}_hi"))
    if math.isnan(v):
        return "n/a"
    if math.isnan(lo) or math.isnan(hi):
        return _f(v, digits)
    return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _p(v: object) -> str:
    x = num(v)
    return "n/a" if math.isnan(x) else ("< 0.001" if x < 0.001 else f"{x:.3f}")


def oe_words(oe: float) -> str:
    """O/E in words: ``predicts 32 % too many AFF`` (O/E 0.76) or ``predicts 44 % too few AFF`` (O/E 1.8)."""
    if not oe > 0 or math.isnan(oe):
        return "the share it predicts cannot be compared"
    share = 1.0 / oe - 1.0        # expected / observed - 1
    if abs(share) < 0.005:
        return "predicts as many AFF as occurred"
    return f"predicts {abs(share) * 100:.0f} % too {'many' if share > 0 else 'few'} AFF"


def differing_lines(rows: pd.DataFrame, who: str) -> list[str]:
    """One sentence per level whose Holm-adjusted test against the other patients is below 0.05."""
    out = []
    for _, r in rows[rows["status"].eq("ok")].iterrows():
        what = []
        if num(r.get("p_auc_holm")) < ALPHA:
            what.append(f"AUC {_ci(r, 'auc', 3)} against {_f(r.get('auc_rest'), 3)} in the other patients "
                        f"(Holm-adjusted p {_p(r.get('p_auc_holm'))})")
        if num(r.get("p_oe_holm")) < ALPHA:
            what.append(f"O/E {_ci(r, 'oe_ratio')} against {_f(r.get('oe_rest'))} in the other patients (it "
                        f"{oe_words(num(r.get('oe_ratio')))} there; Holm-adjusted p {_p(r.get('p_oe_holm'))})")
        if what:
            out.append(f"{who}{r['subgroup']} = {r['level']} ({int(r['n'])} patients, {int(r['n_pos'])} AFF): "
                       + "; ".join(what) + ".")
    return out


def subgroup_section(sub: pd.DataFrame | None, best: dict[str, pd.Series | None]) -> list[str]:
    """The findings' ``## Subgroups``: for the best model of each modality, a line per subgroup that differs
    beyond its interval; one sentence when none does. Empty without subgroups."""
    if sub is None or sub.empty:
        return []
    names = ", ".join(dict.fromkeys(sub["subgroup"]))
    lines = ["## Subgroups", "",
             f"AUC and calibration per level of {names} (subgroups.csv; the table is in leaderboard.html). Each level "
             "is tested against the other patients (AUC by DeLong, O/E by the binomial variance of its events; "
             f"independent patients), Holm-adjusted per model; a level with fewer than {MIN_POSITIVES} AFF or NFF "
             "patients is too small to tell.", ""]
    found = []
    for modality, row in best.items():
        if row is None:
            continue
        rows = sub[sub["candidate"].eq(str(row["candidate"]))]
        found += [f"- {line}" for line in differing_lines(rows, f"{row['candidate']} (best {modality}), ")]
    if found:
        lines += found
    else:
        shown = [str(r["candidate"]) for r in best.values() if r is not None]
        lines.append(f"- No level differs from the other patients beyond its interval for {', '.join(shown) or 'the best models'}"
                     " (AUC and O/E, Holm-adjusted); with few AFF patients per level that is not evidence of equal "
                     "performance.")
    small = sub[sub["status"].eq("too_small")][["subgroup", "level"]].drop_duplicates()
    if len(small):
        lines.append("- Too small to tell: " + ", ".join(f"{s} = {lv}" for s, lv in small.itertuples(index=False)) + ".")
    return lines


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def subgroup_table_html(rows: pd.DataFrame, table_id: str = "subgroups") -> str:
    """One model's levels: patients, AFF, AUC, O/E and slope with their 95 % intervals, the test against the rest."""
    body = []
    for _, r in rows.iterrows():
        head = (f"<td>{_e(r['subgroup'])}</td><td>{_e(r['level'])}</td><td class='num'>{int(r['n'])}</td>"
                f"<td class='num'>{int(r['n_pos'])}</td>")
        if r["status"] != "ok":
            body.append(f"<tr class='small'>{head}<td colspan='4'>too small (fewer than {MIN_POSITIVES} AFF or NFF "
                        "patients): not reported</td></tr>")
            continue
        flag = " class='differs'" if bool(r.get("differs")) else ""
        p = min(num(r.get("p_auc_holm")), num(r.get("p_oe_holm")))
        body.append(f"<tr{flag}>{head}<td class='num'>{_e(_ci(r, 'auc', 3))}</td><td class='num'>{_e(_ci(r, 'oe_ratio'))}"
                    f"</td><td class='num'>{_e(_ci(r, 'cal_slope'))}</td><td class='num'>{_e(_p(p))}</td></tr>")
    return (f"<table class='figures subgroups' id='{_e(table_id)}'><thead><tr><th>subgroup</th><th>level</th>"
            "<th>patients</th><th>AFF</th><th>AUC [95 % CI]</th><th>O/E [95 % CI]</th><th>slope [95 % CI]</th>"
            "<th>against the rest, Holm p</th></tr></thead><tbody>" + "".join(body) + "</tbody></table>")


CSS = ("table.subgroups{border-collapse:collapse;font-size:13px}table.subgroups th{background:#eef1f5;padding:4px 6px;"
       "text-align:left}table.subgroups td{padding:3px 6px;border-bottom:1px solid #eee}"
       "table.subgroups tr.differs td{font-weight:700}table.subgroups tr.small td{color:#777}")
CAPTION = ("Per level: AUC with its DeLong interval, observed/expected AFF (O/E, 1 is ideal) and the calibration slope "
           "with 95 % intervals; the last column is the smaller Holm-adjusted p of the AUC and O/E tests of the level "
           "against the other patients (bold: below 0.05). Levels seen in fewer than 5 patients are pooled into "
           "'other'.")


def subgroups_html(sub: pd.DataFrame | None, best: dict[str, pd.Series | None]) -> str:
    """The leaderboard page's section: the best model of each modality, every other candidate folded."""
    if sub is None or sub.empty:
        return ""
    shown = [str(r["candidate"]) for r in best.values() if r is not None]
    parts = [f"<style>{CSS}</style><h2 id='subgroups-section'>Subgroups</h2><p class='caption'>{_e(CAPTION)}</p>"]
    for name in shown:
        parts.append(f"<h3>{_e(name)}</h3>" + subgroup_table_html(sub[sub["candidate"].eq(name)], f"subgroups-{name}"))
    rest = [c for c in dict.fromkeys(sub["candidate"]) if c not in shown]
    if rest:
        inner = "".join(f"<h3>{_e(c)}</h3>" + subgroup_table_html(sub[sub["candidate"].eq(c)], f"subgroups-{c}")
                        for c in rest)
        parts.append(f"<details><summary>the other candidates ({len(rest)})</summary>{inner}</details>")
    return "\n".join(parts)
