"""Where candidate files, ``suites.yaml`` and ``profiles.yaml`` are read from, and reading them.

The built-in folder (``search_spaces/``) comes first, then each ``--spaces DIR`` in order; a
later folder's candidate, suite or profile replaces an earlier one's of the same name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from benchmark.candidates.family_source import allow_family_folder
from benchmark.errors import UserError, yaml_problem

BUILTIN_DIR = Path(__file__).resolve().parents[2] / "search_spaces"
RESERVED_FILES = {"suites.yaml", "profiles.yaml"}


def _read_yaml(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise UserError(yaml_problem(path, exc)) from None


def _dirs(extra: list[str | Path] | None) -> list[Path]:
    dirs = [BUILTIN_DIR]
    extra = [d for d in extra or [] if Path(d).resolve() != BUILTIN_DIR]
    for d in extra or []:
        d = Path(d)
        if not d.is_dir():
            raise UserError(f"--spaces {d}: not a folder; give a folder of candidate YAML files")
        allow_family_folder(d)   # its modules may be named as families (benchmark.candidates.family_source)
        dirs.append(d)
    return dirs
