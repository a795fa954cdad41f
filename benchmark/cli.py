"""Command line: ``python -m benchmark {run,plan,list,report,synth,validate,export,predict}``.

Each sub-command lives in the module of its stage; this file only wires them. A module
contributes ``add_arguments(parser)`` and ``command(args) -> int``. ``UserError`` is
printed as one line on stderr and exits with status 2. Every command writes its files
readable by their owner only unless ``--shared-output`` is given (``benchmark.outputs``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from benchmark.errors import UserError
from benchmark.outputs import SHARED_ENV, owner_only

# sub-command -> (module, one-line help)
COMMANDS = {
    "run": ("benchmark.runner", "tune and evaluate candidates, write results/<run>/"),
    "plan": ("benchmark.plan", "count a run's units, trials, fits and images and estimate its time, without training"),
    "list": ("benchmark.search.spaces", "list candidates, suites and profiles"),
    "report": ("benchmark.report.html", "rebuild leaderboard.html from a run's stored files"),
    "synth": ("benchmark.data.synth", "write a synthetic AFF/NFF cohort"),
    "validate": ("benchmark.data.validate", "check a dataset file and print a summary"),
    "export": ("benchmark.export.export", "train a run's candidate on the whole cohort and write a model bundle"),
    "predict": ("benchmark.export.predict", "predict new patients with a bundle (external validation with labels)"),
    "keys": ("benchmark.export.signing", "make a signing key pair, sign a bundle, or check who signed one"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--shared-output", action="store_true",
                        help="give outputs the process's own file modes (default: readable by their owner only; "
                             "also AFF_BENCHMARK_SHARED_OUTPUT=1)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod = importlib.import_module(module)
        mod.add_arguments(p)
        p.set_defaults(_module=mod)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.shared_output:
        os.environ[SHARED_ENV] = "1"   # subprocesses and Ray workers see it too
    try:
        with owner_only():
            return int(args._module.command(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; start again with --resume to continue", file=sys.stderr)
        return 130
