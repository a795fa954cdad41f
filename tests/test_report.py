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

FIGURE_IDS = ["fig-roc", "fig-pr", "fig-reliability", "fig-uncertainty", "fig-risk-coverage", "fig-forest",
              "fig-decision", "fig-search"]
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A fake run with its report built once (read-only)."""
    run = write_fake_run(tmp_path_factory.mktemp("results") / "fakerun")
    return build_report(run)


def _dump_dom(html_path: Path, tmp_path: Path) -> str:
    if CHROMIUM is None:
        pytest.skip("chromium not installed (apt-get install -y chromium); the page was not rendered")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
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


def test_findings_section_is_embedded_at_the_top(report):
    text = report.read_text()
    findings = (report.parent / "findings.md").read_text()
    assert findings.startswith("# Findings")
    assert text.index('id="findings"') < text.index('id="leaderboard"') < text.index('id="fig-roc"')
    assert "<h2>Q1. Images alone</h2>" in text


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
    assert 'id="fig-search"' in text


def test_predictions_stored_without_uncertainty_get_it_from_evaluate_and_lose_patient_keys(report, tmp_path):
    run = shutil.copytree(report.parent, tmp_path / "run")
    stored = pd.read_parquet(run / "predictions.parquet").drop(columns=list(UNCERTAINTY_COLUMNS))
    stored.to_parquet(run / "predictions.parquet", index=False)
    preds = read_test_predictions(run)
    expected = add_uncertainty(stored[stored["set"].eq("test") & stored["repeat"].eq(0)])
    assert preds["entropy"].to_numpy() == pytest.approx(expected["entropy"].to_numpy())
    assert preds["mutual_info"].to_numpy() == pytest.approx(expected["mutual_info"].to_numpy())
    assert "patient" not in preds.columns and "members" not in preds.columns
