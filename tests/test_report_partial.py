"""``report`` refuses a run that is not complete, unless ``--partial``: then the page and findings say PARTIAL."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.errors import UserError
from benchmark.report.html import build_report

try:
    from report_fixtures import write_fake_run
except ImportError:  # tests/ imported as a package
    from tests.report_fixtures import write_fake_run

REASON = "UserError: inner folds of outer fold 0: only 1 positive (AFF) patients for 2 folds"


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory) -> Path:
    return write_fake_run(tmp_path_factory.mktemp("results") / "fakerun")


def _with_status(fake_run: Path, tmp_path: Path, status: str, reason: str | None = None) -> Path:
    run = shutil.copytree(fake_run, tmp_path / "stopped")
    man = json.loads((run / "manifest.json").read_text())
    man.update(run="stopped", status=status)
    if reason:
        man["reason"] = reason + " in /secret/site/register.csv"
    (run / "manifest.json").write_text(json.dumps(man))
    return run


def test_a_failed_run_is_refused_in_one_line_with_its_reason_and_how_to_resume(fake_run, tmp_path, capsys):
    run = _with_status(fake_run, tmp_path, "failed", REASON)
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: run stopped is failed ({REASON} in <path>); resume it with "
                   f"`python -m benchmark run --resume --run {run}`, or draw what it stored with "
                   f"`python -m benchmark report {run} --partial`\n")
    assert not (run / "findings.md").exists() or "PARTIAL" not in (run / "findings.md").read_text()


def test_a_running_run_is_refused(fake_run, tmp_path):
    run = _with_status(fake_run, tmp_path, "running")
    with pytest.raises(UserError, match=r"^run stopped is running \(still running, or stopped without a trace "
                                        r"\(killed\)\); resume it with"):
        build_report(run)


def test_partial_draws_what_exists_and_marks_page_and_findings_at_the_top(fake_run, tmp_path, capsys):
    run = _with_status(fake_run, tmp_path, "failed", REASON)
    assert main(["report", str(run), "--partial"]) == 0
    assert "(PARTIAL: run stopped is failed" in capsys.readouterr().out
    page = (run / "leaderboard.html").read_text()
    body = page.split("<body>", 1)[1]
    assert body.lstrip().startswith('<header><p class="partial" id="partial">PARTIAL: run stopped is failed (')
    assert "<title>PARTIAL stopped" in page and "/secret/site" not in page
    md = (run / "findings.md").read_text().splitlines()
    assert md[0] == "# Findings (PARTIAL)"
    assert md[2].startswith(f"**PARTIAL: run stopped is failed ({REASON} in <path>); this page shows only the tables")


def test_partial_without_tables_says_there_is_nothing_to_draw(tmp_path, monkeypatch):
    monkeypatch.setenv("AFF_BENCHMARK_RESULTS", str(tmp_path))   # a run under the results folder: its name
    run = tmp_path / "early"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"run": "early", "status": "failed", "reason": REASON}))
    with pytest.raises(UserError, match=r"stopped before writing leaderboard.csv, so there is nothing to draw; "
                                        r"resume it with `python -m benchmark run --resume --run early`$"):
        build_report(run, partial=True)


def test_a_complete_run_is_not_marked(fake_run, tmp_path):
    run = _with_status(fake_run, tmp_path, "complete")
    page = build_report(run).read_text()
    assert 'id="partial"' not in page and "PARTIAL" not in (run / "findings.md").read_text()
