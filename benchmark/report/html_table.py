"""The leaderboard table of ``leaderboard.html``: key columns shown, the others behind a toggle, sortable.

    leaderboard_table(lb)     # ceilings first, then by AUC, failed candidates last with their reason

A metric cell reads ``value [lo, hi]`` where the leaderboard has the interval; a click on a
header sorts by that column (``SORT_JS``, vanilla JS: the page stays offline).
"""

from __future__ import annotations

import html
import math

import pandas as pd

from benchmark.report.findings.weights import RANDOM_WEIGHTS, random_note
from benchmark.report.plots import MODALITY_COLOR
from benchmark.report.run_files import num, safe_text

# (column, header, tooltip); metric columns get "value [lo, hi]" when lo/hi exist.
# KEY_COLUMNS are shown by default; EXTRA_COLUMNS behind the "all columns" toggle.
KEY_COLUMNS = [
    ("auc", "AUC", "ROC AUC, 95 % CI"),
    ("brier", "Brier", "Brier score (lower is better)"),
    ("cal_slope", "cal. slope", "calibration slope (1 is ideal)"),
    ("sens_at_spec90_oof", "sens. at 90 % spec. (OOF threshold)",
     "sensitivity at 90 % specificity, threshold chosen on inner out-of-fold data (deployable)"),
    ("inner_score", "inner score", "mean best inner-CV objective over outer folds (the only selection score)"),
]
EXTRA_COLUMNS = [
    ("ap", "AP", "average precision"),
    ("sens_at_spec90", "sens. at 90 % spec. (test threshold)",
     "sensitivity at 90 % specificity, threshold chosen on the test set (optimistic)"),
    ("spec_at_spec90_oof", "spec. reached (OOF thr.)", "specificity the out-of-fold 90 % threshold reaches on the test set"),
    ("sens_at_spec95_oof", "sens. at 95 % spec. (OOF thr.)", "sensitivity at 95 % specificity, out-of-fold threshold"),
    ("sens_at_spec95", "sens. at 95 % spec. (test thr.)", "sensitivity at 95 % specificity, test-set threshold (optimistic)"),
    ("balanced_accuracy", "bal. acc.", "balanced accuracy at 0.5"),
    ("sensitivity_thr", "sens.", "sensitivity at the inner-OOF threshold"),
    ("specificity_thr", "spec.", "specificity at the inner-OOF threshold"),
    ("mcc", "MCC", "Matthews correlation at 0.5"),
    ("log_loss", "log loss", "log loss (lower is better)"),
    ("ece", "ECE", "expected calibration error, equal-mass bins (lower is better)"),
    ("cal_intercept", "cal. intercept", "calibration intercept (0 is ideal)"),
    ("entropy_mean", "entropy", "mean predictive entropy"),
    ("mutual_info_mean", "MI", "mean mutual information (epistemic)"),
    ("aurc", "AURC", "area under the risk-coverage curve (lower is better)"),
    ("error_auroc", "error AUROC", "how well uncertainty ranks errors"),
    ("conformal90_coverage_pos", "conf90 cov+", "90 % conformal coverage, AFF"),
    ("conformal90_singleton", "conf90 single", "90 % conformal singleton rate"),
    ("auc_gap", "AUC gap", "oracle AUC of the modality minus this AUC"),
    ("n_trials", "trials", "Optuna trials over all outer folds"),
    ("n_failed_trials", "failed", "failed trials"),
    ("wall_s", "wall", "wall time"),
]
TABLE_COLUMNS = KEY_COLUMNS + EXTRA_COLUMNS
CI_DECIMALS = 3
SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var asc = th.dataset.dir !== 'asc';
      table.querySelectorAll('th').forEach(function (h) { delete h.dataset.dir; });
      th.dataset.dir = asc ? 'asc' : 'desc';
      var numeric = th.dataset.type === 'num';
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      function key(r) { var c = r.cells[col]; return c.dataset.sort !== undefined ? c.dataset.sort : c.textContent.trim(); }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (numeric) {
          var nx = parseFloat(x), ny = parseFloat(y);
          if (isNaN(nx) || isNaN(ny)) { return isNaN(nx) - isNaN(ny); }  // missing values last
          return asc ? nx - ny : ny - nx;
        }
        return asc ? x.localeCompare(y) : y.localeCompare(x);
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
document.querySelectorAll('button.toggle[data-table]').forEach(function (button) {
  button.addEventListener('click', function () {
    var table = document.getElementById(button.dataset.table);
    var compact = table.classList.toggle('compact');
    button.textContent = compact ? button.dataset.more : button.dataset.less;
  });
});
"""


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def _duration(seconds: object) -> str:
    s = num(seconds)
    if math.isnan(s):
        return ""
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}" if s >= 60 else f"{s} s"


def _cell(row: pd.Series, col: str) -> tuple[str, str]:
    """(text, sort key) for one table cell."""
    v = num(row.get(col))
    if math.isnan(v):
        return "", ""
    if col == "wall_s":
        return _duration(v), f"{v:.6g}"
    if col in ("n_trials", "n_failed_trials"):
        return f"{int(v)}", f"{v:.6g}"
    lo, hi = num(row.get(f"{col}_lo")), num(row.get(f"{col}_hi"))
    text = f"{v:.{CI_DECIMALS}f}"
    if not (math.isnan(lo) or math.isnan(hi)):
        text += f" [{lo:.{CI_DECIMALS}f}, {hi:.{CI_DECIMALS}f}]"
    return text, f"{v:.6g}"


def leaderboard_table(lb: pd.DataFrame) -> str:
    """The sortable leaderboard: ceilings first, then by AUC, failed candidates last with their reason.

    Key columns first; the others carry class ``extra`` and are hidden until the toggle shows them.
    """
    def present(cols):
        return [(c, h, t) for c, h, t in cols if c in lb.columns and lb[c].notna().any()]

    key, extra = present(KEY_COLUMNS), present(EXTRA_COLUMNS)
    rank = lb.assign(
        _g=lb["is_ceiling"].map({True: 0, False: 1}).where(lb["status"].ne("failed"), 2),
        _a=-(lb["auc"].astype(float) if "auc" in lb.columns else 0.0),
    ).sort_values(["_g", "_a", "candidate"])

    def th(c, h, t, cls=""):
        return f"<th data-type='num' data-key='{_e(c)}' title='{_e(t)}'{cls}>{_e(h)}</th>"

    weights = "weights" in lb.columns and lb["weights"].map(safe_text).ne("").any()
    head = ("<th data-type='text'>candidate</th><th data-type='text'>modality</th>"
            + "".join(th(c, h, t) for c, h, t in key)
            + "<th data-type='text' class='extra'>family</th><th data-type='text' class='extra'>status</th>"
            + ("<th data-type='text' class='extra' title='starting weights'>weights</th>" if weights else "")
            + "".join(th(c, h, t, " class='extra'") for c, h, t in extra)
            + "<th data-type='text' class='extra'>info</th>")
    body = []
    for _, r in rank.iterrows():
        cls = "ceiling" if r["is_ceiling"] else ("failed" if r["status"] == "failed" else "")
        badge = "<span class='badge'>ceiling</span>" if r["is_ceiling"] else ""
        if r["status"] in ("failed", "partial"):
            badge += f"<span class='badge failed' title='{_e(safe_text(r.get('info')))}'>{_e(r['status'])}</span>"
        if RANDOM_WEIGHTS in safe_text(r.get("weights")):
            note = random_note(r.get("weights"))
            badge += f"<span class='badge' title='{_e(note)}'>random init</span>"
        chip = f"<span class='chip' style='background:{MODALITY_COLOR.get(r['modality'], '#9467bd')}'></span>"
        cells = [f"<td>{_e(r['candidate'])}{badge}</td>", f"<td data-sort='{_e(r['modality'])}'>{chip}{_e(r['modality'])}</td>"]
        for c, _, _ in key:
            text, sort = _cell(r, c)
            cells.append(f"<td data-sort='{sort}'>{_e(text)}</td>")
        cells += [f"<td class='extra'>{_e(r.get('family', ''))}</td>", f"<td class='extra'>{_e(r['status'])}</td>"]
        if weights:
            cells.append(f"<td class='extra'>{_e(safe_text(r.get('weights')))}</td>")
        for c, _, _ in extra:
            text, sort = _cell(r, c)
            cells.append(f"<td class='extra' data-sort='{sort}'>{_e(text)}</td>")
        cells.append(f"<td class='info extra'>{_e(safe_text(r.get('info')))}</td>")
        body.append(f'<tr class="{cls}" data-candidate="{_e(r["candidate"])}">' + "".join(cells) + "</tr>")
    more, less = f"Show all {len(key) + len(extra) + 5 + weights} columns", "Show the key columns only"
    return (f"<button type='button' class='toggle' data-table='leaderboard' data-more='{_e(more)}' "
            f"data-less='{_e(less)}'>{_e(more)}</button>"
            f'<div class="tablewrap"><table class="sortable compact" id="leaderboard"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")
