"""leaderboard.html: offline, sortable, complete, rendered by a real browser, and free of identifiers."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from benchmark.errors import UserError
from benchmark.evaluate.uncertainty import UNCERTAINTY_COLUMNS, add_uncertainty
from benchmark.report import html as report_html
from benchmark.report.html import build_report
from benchmark.report.run_files import read_test_predictions

try:
    from report_fixtures import SECRET_PATH, write_fake_run
except ImportError:  # tests/ imported as a package
    from tests.report_fixtures import SECRET_PATH, write_fake_run

FIGURE_IDS = ["fig-answers", "fig-roc", "fig-pr", "fig-reliability", "fig-uncertainty", "fig-risk-coverage",
              "fig-forest", "fig-learning", "fig-decision", "fig-search"]
ANSWER_IDS = ["answer-q1", "answer-q2", "answer-q3"]
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A fake run with its report built once (read-only)."""
    run = write_fake_run(tmp_path_factory.mktemp("results") / "fakerun")
    return build_report(run)


def _dump_dom(html_path: Path, tmp_path: Path, size: tuple[int, int] | None = None) -> str:
    if CHROMIUM is None:
        pytest.skip("chromium not installed (apt-get install -y chromium); the page was not rendered")
    window = [f"--window-size={size[0]},{size[1]}"] if size else []
    cmd = [CHROMIUM, "--headless", *window, "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking",
           "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'chromium-profile'}",
           # networking off: every host is unresolvable and the proxy is a closed port
           "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
           "--virtual-time-budget=10000", "--dump-dom", html_path.resolve().as_uri()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


class _SvgInside(HTMLParser):
    """Which element ids contain an ``svg.main-svg`` (plotly's rendered figure)."""

    def __init__(self, ids):
        super().__init__()
        self.ids, self.stack, self.drawn = set(ids), [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "svg" and "main-svg" in (attrs.get("class") or "").split():
            self.drawn.update(i for i in self.stack if i)
        if tag not in ("br", "img", "input", "meta", "link", "hr", "path", "rect", "line", "circle", "use", "image"):
            self.stack.append(attrs.get("id") if attrs.get("id") in self.ids else None)

    def handle_endtag(self, tag):
        if tag not in ("br", "img", "input", "meta", "link", "hr", "path", "rect", "line", "circle", "use", "image") and self.stack:
            self.stack.pop()


def _table_order(dom: str) -> list[str]:
    table = dom.split('id="leaderboard"')[1].split("</table>")[0]
    return re.findall(r'<tr class="[^"]*" data-candidate="([^"]+)"', table)


@pytest.fixture(scope="module")
def clicked_dom(report, tmp_path_factory) -> str:
    """The DOM chromium renders offline for the page, after a click on the AUC header (one browser run)."""
    tmp = tmp_path_factory.mktemp("chromium")
    page = tmp / "clicked.html"
    page.write_text(report.read_text().replace(
        "</body>", "<script>document.querySelector(\"th[data-key='auc']\").click();</script></body>"))
    return _dump_dom(page, tmp)


def test_page_renders_every_figure_offline_in_headless_chromium(clicked_dom):
    parser = _SvgInside(FIGURE_IDS)
    parser.feed(clicked_dom)
    assert sorted(parser.drawn) == sorted(FIGURE_IDS)


def test_clicking_a_metric_header_sorts_rows_by_that_metric(report, clicked_dom):
    lb = pd.read_csv(report.parent / "leaderboard.csv")
    expected = lb.sort_values("auc", na_position="last", kind="stable")["candidate"].tolist()
    assert _table_order(clicked_dom) == expected
    assert _table_order(report.read_text()) != expected, "the click changed the order"


def test_page_loads_nothing_from_the_network(report):
    text = report.read_text()
    refs = re.findall(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*['\"]([^'\"]+)", text, flags=re.I)
    assert refs == []
    big_scripts = [s for s in re.findall(r"<script[^>]*>(.*?)</script>", text, flags=re.S) if len(s) > 1_000_000]
    assert len(big_scripts) == 1, "exactly one embedded plotly.js bundle"
    assert len(text) < 8_000_000


def test_page_never_shows_patient_keys_or_dataset_paths(report):
    text = report.read_text() + (report.parent / "findings.md").read_text()
    assert "PATKEY" not in text
    assert SECRET_PATH not in text and "/secret-site" not in text


def test_header_shows_run_profile_seed_dataset_walltime_and_versions(report):
    header = report.read_text().split("<header>")[1].split("</header>")[0]
    for expected in ("fakerun", "quick", "<b>seed</b>: 0", "fake-aff (synthetic)", "240 (24 AFF)", "1:02:03", "torch 2.14.1"):
        assert expected in header


def test_table_shows_cis_marks_ceilings_and_failed_reason(report):
    text = report.read_text()
    lb = pd.read_csv(report.parent / "leaderboard.csv").set_index("candidate")
    rows = dict(re.findall(r'<tr class="[^"]*" data-candidate="([^"]+)">(.*?)</tr>', text))
    r = lb.loc["resnet18"]
    assert f"{r['auc']:.3f} [{r['auc_lo']:.3f}, {r['auc_hi']:.3f}]" in rows["resnet18"]
    assert re.search(r'<tr class="ceiling" data-candidate="oracle_both">', text)
    assert "ceiling</span>" in rows["oracle_image"]
    assert re.search(r'<tr class="failed" data-candidate="convnext_tiny">', text)
    assert "CUDA out of memory" in rows["convnext_tiny"]
    assert list(rows)[-1] == "convnext_tiny", "failed candidates listed last"


def test_answers_come_first_then_the_folded_detail_then_the_table(report):
    text = report.read_text()
    findings = (report.parent / "findings.md").read_text()
    assert findings.startswith("# Findings\n\n## Answers")
    order = [text.index(marker) for marker in ("<header>", 'id="answers"', 'id="answer-q1"', 'id="answer-q2"',
                                               'id="answer-q3"', 'id="fig-answers"', 'id="findings"',
                                               'id="leaderboard"', 'id="fig-roc"')]
    assert order == sorted(order)
    detail = text.split('id="findings"')[1].split('id="leaderboard-section"')[0]
    for title in ("Q1. Images alone", "Q2. Register data: neural network or trees?",
                  "Q3. Does combining images and register data help?", "Caveats"):
        assert f"<details><summary>{title}</summary>" in detail
    answers = text.split('id="answers"')[1].split('id="findings"')[0]
    assert "Profile <code>quick</code>" in answers and "say little about what the models can reach" in answers


def test_answer_sentences_on_the_page_are_those_of_findings_md(report):
    from html import unescape

    text = report.read_text()
    findings = (report.parent / "findings.md").read_text()
    for q, key in (("Q1", "answer-q1"), ("Q2", "answer-q2"), ("Q3", "answer-q3")):
        sentence = next(line for line in findings.splitlines() if line.startswith(f"- **{q}.")).split(":** ", 1)[1]
        shown = re.search(rf'id="{key}"><span class="q">[^<]*</span><p>(.*?)</p>', text).group(1)
        assert unescape(re.sub(r"</?b>", "**", shown)) == sentence


def test_leaderboard_shows_key_columns_first_and_hides_the_rest_behind_a_toggle(report):
    text = report.read_text()
    table = text.split('id="leaderboard"')[0][-400:] + text.split('id="leaderboard"')[1].split("</thead>")[0]
    assert '<table class="sortable compact" id="leaderboard">' in text
    keys = re.findall(r"<th data-type='\w+'(?: data-key='(\w+)')?[^>]*?( class='extra')?>", table)
    shown = [k for k, extra in keys if not extra]
    assert shown == ["", "", "auc", "brier", "cal_slope", "sens_at_spec90_oof", "inner_score"]
    hidden = [k for k, extra in keys if extra]
    assert "sens_at_spec90" in hidden and "ap" in hidden and "ece" in hidden
    assert "sens. at 90 % spec. (OOF threshold)" in table and "sens. at 90 % spec. (test threshold)" in table
    assert "class='toggle' data-table='leaderboard'" in text


VIEWPORT_JS = """<script>
window.addEventListener('load', function () {
  setTimeout(function () {
    var rects = %s.map(function (id) {
      var r = document.getElementById(id).getBoundingClientRect();
      return {id: id, top: r.top, bottom: r.bottom, left: r.left, right: r.right};
    });
    var extra = document.querySelector('#leaderboard th.extra');
    var before = extra.offsetParent !== null;
    document.querySelector("button.toggle[data-table='leaderboard']").click();
    var after = extra.offsetParent !== null;
    var out = document.createElement('pre');
    out.id = 'viewport-check';
    out.textContent = JSON.stringify({width: window.innerWidth, height: window.innerHeight, rects: rects,
                                      extra_before: before, extra_after: after});
    document.body.appendChild(out);
  }, 1000);
});
</script></body>"""


def _window_for_viewport(width: int, height: int, tmp_path: Path) -> tuple[int, int]:
    """The window size that gives a ``width`` x ``height`` viewport (headless Chromium's window keeps
    some height for its own frame)."""
    probe = tmp_path / "probe.html"
    probe.write_text("<html><body><script>document.body.textContent = 'H=' + window.innerHeight;</script></body></html>")
    inner = int(re.search(r"H=(\d+)", _dump_dom(probe, tmp_path, size=(width, height))).group(1))
    return width, height + (height - inner)


def test_three_answers_are_visible_without_scrolling_at_1400_by_900(report, tmp_path):
    """Headless Chromium, viewport 1400 x 900: the three answer elements lie inside the first viewport."""
    import json
    from html import unescape

    page = tmp_path / "viewport.html"
    page.write_text(report.read_text().replace("</body>", VIEWPORT_JS % json.dumps(ANSWER_IDS)))
    dom = _dump_dom(page, tmp_path, size=_window_for_viewport(1400, 900, tmp_path))
    check = json.loads(unescape(re.search(r'<pre id="viewport-check">(.*?)</pre>', dom, flags=re.S).group(1)))
    assert (check["width"], check["height"]) == (1400, 900), check
    for r in check["rects"]:
        assert 0 <= r["top"] < r["bottom"] <= check["height"], r
        assert 0 <= r["left"] < r["right"] <= check["width"], r
    assert check["extra_before"] is False and check["extra_after"] is True, "the toggle shows the other columns"


def test_report_command_accepts_a_run_name_under_results(report, capsys):
    parser = argparse.ArgumentParser()
    report_html.add_arguments(parser)
    args = parser.parse_args([report.parent.name, "--results-dir", str(report.parent.parent)])
    assert report_html.command(args) == 0
    assert "leaderboard.html" in capsys.readouterr().out


def test_unknown_run_is_a_user_error_naming_it(tmp_path):
    with pytest.raises(UserError, match="'nope' not found"):
        report_html.resolve_run("nope", tmp_path)


def test_missing_leaderboard_is_a_user_error_naming_the_file(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(UserError, match="leaderboard.csv not found"):
        build_report(tmp_path / "run")


def test_missing_predictions_and_comparisons_leave_notes_instead_of_figures(report, tmp_path):
    run = shutil.copytree(report.parent, tmp_path / "run")
    (run / "predictions.parquet").unlink()
    (run / "comparisons.csv").unlink()
    text = build_report(run).read_text()
    assert text.count("Not drawn: predictions.parquet is missing") == 6
    assert "Not drawn: comparisons.csv is missing" in text
    assert "Not drawn: comparisons.csv has no AUC comparison behind the answers." in text
    assert 'id="fig-search"' in text and 'id="fig-learning"' in text


def test_old_run_without_learning_curves_or_new_comparison_columns_still_builds(tmp_path):
    run = write_fake_run(tmp_path / "old", schema="old")
    text = build_report(run).read_text()
    assert "Not drawn: studies.csv is missing or has no learning-curve columns" in text
    assert 'id="fig-answers"' in text and "no_difference" not in text.split('id="fig-roc"')[0]


def test_predictions_stored_without_uncertainty_get_it_from_evaluate_and_lose_patient_keys(report, tmp_path):
    run = shutil.copytree(report.parent, tmp_path / "run")
    stored = pd.read_parquet(run / "predictions.parquet").drop(columns=list(UNCERTAINTY_COLUMNS))
    stored.to_parquet(run / "predictions.parquet", index=False)
    preds = read_test_predictions(run)
    expected = add_uncertainty(stored[stored["set"].eq("test") & stored["repeat"].eq(0)])
    assert preds["entropy"].to_numpy() == pytest.approx(expected["entropy"].to_numpy())
    assert preds["mutual_info"].to_numpy() == pytest.approx(expected["mutual_info"].to_numpy())
    assert "patient" not in preds.columns and "members" not in preds.columns
