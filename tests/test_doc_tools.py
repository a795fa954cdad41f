"""The documentation's tools: the run summary keeps no path or secret, the README table and
the performance page come from a run's own files, and the screenshot is cropped to the
Answers box of the report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from benchmark.errors import UserError
from benchmark.report.html import build_report
from benchmark.tools import perf_page, readme_table, screenshot
from benchmark.tools.run_summary import auc_table, read_summary, scrub_command, store, wall_time

try:
    from report_fixtures import SECRET_PATH, write_fake_run
except ImportError:  # tests/ imported as a package
    from tests.report_fixtures import SECRET_PATH, write_fake_run


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory) -> Path:
    run = write_fake_run(tmp_path_factory.mktemp("results") / "fakerun")
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["status"] = "complete"
    manifest["command"] += " --storage postgresql://aff:hunter2@db.example/aff"
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


def test_scrub_command_hides_paths_and_storage_urls():
    cmd = "python -m benchmark run --data /site/x.yaml --storage=postgresql://u:pw@h/db --suite all --run r1"
    assert scrub_command(cmd) == "python -m benchmark run --data DATA --storage=STORAGE --suite all --run r1"


def test_a_stored_summary_holds_no_path_or_secret(fake_run, tmp_path):
    dest = store(fake_run, tmp_path / "runs" / "fake", machine="2-core test CPU", note="idle")
    text = "".join(p.read_text() for p in dest.iterdir())
    for secret in (SECRET_PATH, "/secret-site", "hunter2", "postgresql://", "PATKEY"):
        assert secret not in text
    info = read_summary(dest).info
    assert info["machine"] == "2-core test CPU" and info["started"].startswith("2025-01-01")
    assert set(read_summary(dest).leaderboard["candidate"]) == set(read_summary(fake_run).leaderboard["candidate"])


def test_only_a_complete_run_is_stored(tmp_path):
    run = write_fake_run(tmp_path / "unfinished")   # its manifest says 'finished', not 'complete'
    with pytest.raises(UserError, match="not complete"):
        store(run, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_readme_table_lists_every_candidate_best_first(fake_run):
    summary = read_summary(fake_run)
    text = readme_table.render(summary)
    board = summary.leaderboard
    assert text.splitlines()[0].startswith("`python -m benchmark run --suite all --data DATA")
    assert wall_time(3723.0) == "1 h 02 min 03 s" and wall_time(46) == "46 s" and wall_time(None) == "not recorded"
    assert "2025-01-01, wall time 1 h 02 min 03 s" in text
    for name in board["candidate"]:
        assert f"`{name}`" in text
    rows = [ln for ln in auc_table(board, columns=1)[2:]]
    assert len(rows) == len(board)
    best = board.sort_values("auc", ascending=False).iloc[0]["candidate"]
    assert rows[0].startswith(f"| `{best}`")


def test_perf_page_renders_each_stored_run_smallest_profile_first(fake_run, tmp_path):
    runs = tmp_path / "runs"
    store(fake_run, runs / "b-quick", machine="cpu A")
    other = tmp_path / "smoke-run"
    shutil.copytree(fake_run, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["profile_name"] = "smoke"
    (other / "manifest.json").write_text(json.dumps(manifest))
    store(other, runs / "z-smoke", machine="cpu B")
    page = perf_page.render(runs)
    assert page.index("## z-smoke") < page.index("## b-quick")
    assert "cpu A" in page and "cpu B" in page and SECRET_PATH not in page
    with pytest.raises(UserError):
        perf_page.render(tmp_path / "nothing-here")


def test_the_box_is_read_from_the_rendered_page_and_cropped(tmp_path):
    assert screenshot.box_of('<body data-box="16,40,1368,500">') == (16, 40, 1368, 500)
    with pytest.raises(UserError):
        screenshot.box_of("<body>")
    shot = tmp_path / "shot.png"
    Image.new("RGB", (1400, 600), "white").save(shot)
    size = screenshot.crop_box(shot, (16, 40, 1368, 500), tmp_path / "out.png", margin=8)
    assert size == (1384, 516) and Image.open(tmp_path / "out.png").size == size


def test_a_report_is_screenshotted_to_its_answers_box(fake_run, tmp_path):
    try:
        screenshot.find_chromium()
    except UserError:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    run = tmp_path / "run"
    shutil.copytree(fake_run, run)
    build_report(run)
    before = (run / "leaderboard.html").read_bytes()
    w, h = screenshot.screenshot(run, tmp_path / "answers.png")
    assert (run / "leaderboard.html").read_bytes() == before, "the run folder is only read"
    assert 1000 < w <= 1400 and 150 < h < 1400
    with Image.open(tmp_path / "answers.png") as im:
        assert im.size == (w, h)
        # the box's own background (#f7f9fc), not the page's white, fills the inside of the crop
        assert im.convert("RGB").getpixel((w // 2, h - 12)) == (247, 249, 252)
