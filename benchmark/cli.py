"""Command line: ``python -m benchmark {run,plan,list,report,synth,validate,export,predict,keys,weights}``.

Each sub-command lives in the module of its stage; this file only wires them. A module
contributes ``add_arguments(parser)`` and ``command(args) -> int``. ``UserError`` is
printed as one line on stderr and exits with status 2. ``python -m benchmark --help``
lists every command with its purpose and an example (``EXAMPLES``); ``--version`` prints
``benchmark.__version__``. Every command writes its files readable by their owner only
unless ``--shared-output`` is given (``benchmark.outputs``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from benchmark import __version__
from benchmark.errors import UserError
from benchmark.outputs import SHARED_ENV, owner_only

# sub-command -> (module, one-line help)
COMMANDS = {
    "run": ("benchmark.run.runner", "tune and evaluate candidates, write results/<run>/"),
    "plan": ("benchmark.run.plan.command", "count a run's units, trials, fits and images and estimate its time, without training"),
    "list": ("benchmark.search.spaces", "list candidates, suites and profiles"),
    "report": ("benchmark.report.html", "rebuild leaderboard.html from a run's stored files"),
    "synth": ("benchmark.data.synth", "write a synthetic AFF/NFF cohort"),
    "validate": ("benchmark.data.validate", "check a dataset file and print a summary"),
    "export": ("benchmark.export.export", "train a run's candidate on the whole cohort and write a model bundle"),
    "predict": ("benchmark.export.predict", "predict new patients with a bundle (external validation with labels)"),
    "keys": ("benchmark.export.signing", "make a signing key pair, sign a bundle, or check who signed one"),
    "weights": ("benchmark.run.weights_command", "fetch pretrained weights (on a machine with internet) or list a weights folder"),
}

# sub-command -> one example a user can run as it is (the docs' tests parse each one)
EXAMPLES = {
    "run": "python -m benchmark run --suite register --profile smoke",
    "plan": "python -m benchmark plan --suite all --profile quick",
    "list": "python -m benchmark list",
    "report": "python -m benchmark report results/my-run",
    "synth": "python -m benchmark synth --patients 300 my-cohort",
    "validate": "python -m benchmark validate my-cohort/dataset.yaml",
    "export": "python -m benchmark export results/my-run",
    "predict": "python -m benchmark predict results/my-run/bundles/late_stacking --data new-hospital.yaml",
    "keys": "python -m benchmark keys new my-keys",
    "weights": "python -m benchmark weights fetch resnet18 --out weights",
}

DESCRIPTION = ("Benchmark harness for telling atypical from normal femoral fractures (AFF/NFF) from radiographs "
               "and register data:\nevery candidate tuned and scored under one nested cross-validation protocol.")
EPILOG = ("`python -m benchmark COMMAND --help` lists a command's options. Without --data, run and plan use "
          "the synthetic cohort.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmark", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--version", action="version", version=f"aff-benchmark {__version__}")
    parser.add_argument("--shared-output", action="store_true",
                        help="give outputs the process's own file modes (default: readable by their owner only;\n"
                             "also AFF_BENCHMARK_SHARED_OUTPUT=1)")
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=f"{help_text}\n  e.g. {EXAMPLES[name]}", description=help_text,
                           epilog=f"example:\n  {EXAMPLES[name]}", formatter_class=argparse.RawDescriptionHelpFormatter)
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
