"""benchmark/tools/device_check.sh without a GPU: its mechanics (named steps, the deadline, the
packed outputs), so a GPU run of it cannot fail on a typo."""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmark" / "tools" / "device_check.sh"


def _run(tmp_path, *steps, deadline="0"):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "DEADLINE_S": deadline, "DEVICE_CHECK_DIR": str(tmp_path / "scratch")}
    proc = subprocess.run(["bash", str(SCRIPT), *steps], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    return proc, out


def test_the_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


def test_past_its_deadline_every_step_is_skipped_and_the_outputs_still_come_back(tmp_path):
    proc, out = _run(tmp_path)
    assert proc.returncode == 0, proc.stderr
    steps = (out / "steps.txt").read_text()
    for name in ("throughput", "batches", "concurrent", "determinism", "plan_gpu", "fusion_smoke", "slice", "hour"):
        assert f"{name}: skipped (deadline)" in steps
    with tarfile.open(out / "device_check.tgz") as tar:
        assert any(m.name.endswith("versions.txt") for m in tar.getmembers())


def test_named_steps_run_alone(tmp_path):
    proc, out = _run(tmp_path, "aug", "slice")
    steps = (out / "steps.txt").read_text()
    assert "aug: skipped" in steps and "slice: skipped" in steps and "throughput" not in steps
