"""Where a family named ``package.module:Class`` in a candidate file may be imported from.

A candidate file is code: ``family: my_families:MyNet`` imports ``my_families``, which runs
whatever it holds. So a module is imported only from

- the project (the folder that holds the ``benchmark`` package, e.g. the repository),
- a folder of candidate files given with ``--spaces`` (``allow_family_folder``; the folder
  is put on ``sys.path`` and passed to worker processes in ``AFF_BENCHMARK_FAMILY_DIRS``),
- an installed entry point of the group ``aff_benchmark.families`` (a package's
  ``[project.entry-points."aff_benchmark.families"] my_net = "my_pkg.nets:MyNet"``, then
  ``family: my_net`` or ``family: my_pkg.nets:MyNet``),

never from the current folder or another folder that merely happens to be on ``sys.path``.
Where the module would come from is found without running it (``importlib.util.find_spec``
of its top-level package), and refused with one line when it lies elsewhere::

    cls = import_family("fake_families:ProbeFamily")      # UserError when not allowed
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

from benchmark.errors import UserError

GROUP = "aff_benchmark.families"
DIRS_ENV = "AFF_BENCHMARK_FAMILY_DIRS"
PROJECT = Path(__file__).resolve().parents[2]   # the folder holding the benchmark package


def allow_family_folder(folder: str | Path) -> None:
    """Let candidate files name modules in ``folder`` (a ``--spaces`` folder), in this process and its workers."""
    real = os.path.realpath(folder)
    dirs = family_folders()
    if real not in dirs:
        os.environ[DIRS_ENV] = os.pathsep.join([*dirs, real])
    if real not in sys.path:
        sys.path.append(real)


def family_folders() -> list[str]:
    return [d for d in os.environ.get(DIRS_ENV, "").split(os.pathsep) if d]


def entry_points() -> dict[str, str]:
    """Installed family entry points: name -> ``module:Class``."""
    from importlib.metadata import entry_points as eps

    try:
        return {ep.name: ep.value for ep in eps(group=GROUP)}
    except Exception:  # noqa: BLE001 - broken metadata of some installed package
        return {}


def _inside(path: str, folder: str | Path) -> bool:
    folder = os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_source(name: str) -> None:
    """UserError unless the module of ``name`` (``module:Class``) may be imported (module doc)."""
    mod_name = name.partition(":")[0]
    if mod_name == "benchmark" or mod_name.startswith("benchmark.") or name in entry_points().values():
        return
    top = mod_name.split(".")[0]
    try:
        spec = sys.modules[top].__spec__ if top in sys.modules else importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise UserError(f"family {name!r} cannot be imported (no module {top!r}); put the module in a --spaces folder "
                        f"or install it with an entry point in the group {GROUP!r}")
    origin = spec.origin if spec.origin not in (None, "namespace") else next(iter(spec.submodule_search_locations or []), "")
    real = os.path.realpath(origin) if origin else ""
    if real and (_inside(real, PROJECT) or any(_inside(real, d) for d in family_folders())):
        return
    raise UserError(f"family {name!r}: module {top!r} would be imported from {os.path.dirname(real) or 'an unknown place'}, "
                    f"which is not the project, a --spaces folder or an installed entry point ({GROUP}); a candidate "
                    "file runs the code it names, so move the module into the --spaces folder with the candidate file")


def import_family(name: str) -> type:
    """The class named ``module:Class`` or by an installed entry point, after ``check_source``."""
    points = entry_points()
    if ":" not in name:
        if name not in points:
            raise KeyError(name)
        name = points[name]
    check_source(name)
    mod_name, _, cls_name = name.partition(":")
    try:
        return getattr(importlib.import_module(mod_name), cls_name)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"family {name!r} cannot be imported ({exc}); check the module path and class name") from None
