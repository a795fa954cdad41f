"""Run the hostile corpus against a checkout of the harness and measure each case in a subprocess.

    python -m benchmark.tools.hostile_inputs --out /tmp/hostile                 # this checkout
    python -m benchmark.tools.hostile_inputs --out /tmp/hostile --code /work/main --reuse   # another one

The corpus (``hostile_corpus.build``: hostile bundles, DICOM/PNG/TIFF/JPEG files, registers with
identifiers) is written once with this checkout, in a process of its own (a child's peak RSS
includes what it inherits when forked, so this process imports nothing heavy); ``--code`` runs the cases with another
checkout on ``PYTHONPATH`` (e.g. the code before a change). Each case runs in its own
process: ``load_model(bundle)`` for a bundle, ``predict BUNDLE --data COHORT`` for a predict
case, ``validate DATASET`` for an image or register case. The table gives the exit status,
whether the output was one error line per problem without a traceback, whether the attack
ran code (its marker file appeared), the peak resident memory of the process (its
``VmHWM`` at exit; ``wait4``'s ``ru_maxrss`` for a process that was killed, which also
counts what the fork inherited from this one), its wall time, and for a bundle the time ``load_model`` itself
took (the bundle module's own imports excluded). The process runs under a memory cap
(``RLIMIT_AS``, ``--cap-gb``), a file-size cap and a CPU-time cap, so that a case that
would take the machine down stops with an error instead (shown as such).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

LOAD = ("import sys, time\nimport benchmark.export.bundle\nfrom benchmark import load_model\n"
        "from benchmark.errors import UserError\n"
        "t = time.monotonic()\ntry:\n    load_model(sys.argv[1])\nexcept UserError as exc:\n"
        "    print(f'error: {exc}', file=sys.stderr)\n    sys.exit(2)\nfinally:\n"
        "    print(f'note: load_model {time.monotonic() - t:.2f} s', file=sys.stderr)\n")


# the process's own peak (VmHWM: since its exec; wait4's ru_maxrss also counts what the fork inherited)
PEAK = ("import atexit, sys\n"
        "def _peak():\n    hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM:')]\n"
        "    print(f'note: peak_kb {hwm[0].split()[1]}', file=sys.stderr)\n"
        "atexit.register(_peak)\n")
CLI = PEAK + "import runpy\nsys.argv = ['benchmark', *sys.argv[1:]]\nrunpy.run_module('benchmark', run_name='__main__')\n"


def command(case, out: Path) -> list[str]:
    if case.kind == "bundle":
        return [sys.executable, "-c", PEAK + LOAD, str(case.path)]
    if case.kind == "predict":
        cmd = [sys.executable, "-c", CLI, "predict", str(case.path), "--data", case.env["AFF_HOSTILE_DATA"],
               "--out", str(out / f"pred-{case.name}")]
        return cmd + (["--trust", str(case.trust)] if case.trust else [])
    return [sys.executable, "-c", CLI, "validate", str(case.path)]


def run_case(case, code: Path, work: Path, *, cap_gb: float, timeout_s: float) -> dict:
    """One case in a subprocess: exit status, output verdict, peak RSS (MB), seconds."""
    env = {**os.environ, **case.env, "PYTHONPATH": str(code), "AFF_BENCHMARK_CACHE": str(work / "cache"),
           "AFF_BENCHMARK_RESULTS": str(work / "results")}
    env.pop("AFF_BENCHMARK_FAMILY_DIRS", None)
    if case.marker is not None and case.marker.exists():
        case.marker.unlink()
    cap = int(cap_gb * (1 << 30))

    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 30, 2 << 30))
        resource.setrlimit(resource.RLIMIT_CPU, (int(timeout_s), int(timeout_s)))

    t0 = time.monotonic()
    with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f:
        proc = subprocess.Popen(command(case, work), stdout=out_f, stderr=err_f, env=env, cwd=work,
                                preexec_fn=limits)
        deadline = t0 + timeout_s
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out_f.seek(0)
        err_f.seek(0)
        stdout, stderr = out_f.read().decode(errors="replace"), err_f.read().decode(errors="replace")
    text = stdout + stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith(("note:", "warning:"))]
    section = stdout.split("\nproblems (", 1)[1] if "\nproblems (" in stdout else ""
    problems = [ln.strip()[2:] for ln in section.splitlines() if ln.startswith("  - ")]
    first = lines[0] if lines else (problems[0] if problems else "")
    load_s = next((float(ln.split()[2]) for ln in stderr.splitlines() if ln.startswith("note: load_model")), None)
    peak_kb = next((int(ln.split()[2]) for ln in stderr.splitlines() if ln.startswith("note: peak_kb")), None)
    return {"case": case.name, "kind": case.kind, "what": case.what, "exit": proc.returncode, "load_s": load_s,
            "traceback": "Traceback" in text, "one_line": proc.returncode == 2 and len(lines) <= 1 and "Traceback" not in text,
            "code_ran": bool(case.marker is not None and case.marker.exists()),
            "peak_mb": round((peak_kb or usage.ru_maxrss) / 1024), "peak_measured": "VmHWM" if peak_kb else "ru_maxrss", "seconds": round(time.monotonic() - t0, 1), "message": first[:200]}


def verdict(r: dict) -> str:
    if r["code_ran"]:
        return "RAN CODE"
    if r["exit"] == 0:
        return "accepted"
    if r["exit"] < 0 or r["exit"] > 2:
        return f"killed ({r['exit']})"
    if r["traceback"]:
        return "traceback"
    return "refused" if r["one_line"] else "refused (several lines)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.tools.hostile_inputs", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="folder for the corpus and the runs")
    p.add_argument("--code", type=Path, default=Path(__file__).resolve().parents[2],
                   help="checkout whose code runs the cases (default: this one)")
    p.add_argument("--reuse", action="store_true", help="use the corpus already in --out (cases.json)")
    p.add_argument("--only", default=None, help="comma-separated case names")
    p.add_argument("--kinds", default="bundle,image,register")
    p.add_argument("--cap-gb", type=float, default=6.0, help="address-space cap per case (torch alone maps ~4.2 GB)")
    p.add_argument("--timeout", type=float, default=180.0)
    p.add_argument("--json", type=Path, default=None, help="write the results here as JSON lines")
    args = p.parse_args(argv)
    index = args.out / "cases.json"
    if not (args.reuse and index.exists()):   # built in a process of its own: this one stays small, and a
        args.out.mkdir(parents=True, exist_ok=True)   # child's peak RSS counts what it inherits when forked
        subprocess.run([sys.executable, "-m", "benchmark.tools.hostile_corpus", str(args.out), args.kinds], check=True,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    cases = [SimpleNamespace(**{**c, "path": Path(c["path"]), "marker": Path(c["marker"]) if c["marker"] else None,
                                "trust": Path(c["trust"]) if c["trust"] else None})
             for c in json.loads(index.read_text())]
    if args.only:
        keep = set(args.only.split(","))
        cases = [c for c in cases if c.name in keep]
    work = args.out / f"run-{args.code.name}"
    work.mkdir(parents=True, exist_ok=True)
    print(f"code: {args.code}   cap {args.cap_gb:g} GB address space per case")
    print(f"{'case':<34} {'kind':<9} {'verdict':<14} {'peak MB':>8} {'s':>6} {'load s':>6}  message")
    rows = []
    for case in cases:
        r = run_case(case, args.code, work, cap_gb=args.cap_gb, timeout_s=args.timeout)
        rows.append(r)
        load = "" if r["load_s"] is None else f"{r['load_s']:.2f}"
        print(f"{r['case']:<34} {r['kind']:<9} {verdict(r):<14} {r['peak_mb']:>8} {r['seconds']:>6} {load:>6}  "
              f"{r['message'][:110]}", flush=True)
    if args.json:
        args.json.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
