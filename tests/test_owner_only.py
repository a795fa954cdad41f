"""Files that hold patient-derived data are readable by their owner only, unless shared output is asked for;
a candidate file's ``module:Class`` is imported only from the project, --spaces folders and entry points."""

from __future__ import annotations

import os
import stat
import sys
import textwrap
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.errors import UserError


def _modes(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [folder, *folder.rglob("*")]}


@pytest.fixture
def wide_umask():
    old = os.umask(0o022)          # what a shared server typically has
    yield
    os.umask(old)


def _run(tmp_path, *extra):
    from runner_helpers import write_register_dataset, write_spaces

    data = write_register_dataset(tmp_path / "d", n=60, n_pos=15)
    spaces = write_spaces(tmp_path / "s", n_trials=1, outer_folds=2)
    assert main([*extra, "run", "--candidates", "probe", "--data", str(data), "--profile", "tiny", "--device", "cpu",
                 "--spaces", str(spaces), "--results", str(tmp_path / "r"), "--run", "x"]) == 0
    return tmp_path / "r" / "x"


def test_a_run_folder_is_readable_by_its_owner_only(tmp_path, wide_umask, monkeypatch):
    monkeypatch.delenv("AFF_BENCHMARK_SHARED_OUTPUT", raising=False)
    modes = _modes(_run(tmp_path))
    assert modes["."] == 0o700 and modes["parts"] == 0o700
    assert all(m & 0o077 == 0 for m in modes.values()), {k: oct(m) for k, m in modes.items() if m & 0o077}
    assert os.umask(0o022) == 0o022                          # the command gave the umask back


def test_shared_output_keeps_the_process_umask(tmp_path, wide_umask, monkeypatch):
    monkeypatch.delenv("AFF_BENCHMARK_SHARED_OUTPUT", raising=False)
    modes = _modes(_run(tmp_path, "--shared-output"))
    assert modes["manifest.json"] == 0o644 and modes["."] == 0o755


def test_library_writers_make_their_folders_owner_only(tmp_path, wide_umask, monkeypatch):
    from benchmark.outputs import private_dir, settle_dir

    monkeypatch.delenv("AFF_BENCHMARK_SHARED_OUTPUT", raising=False)
    assert stat.S_IMODE(private_dir(tmp_path / "a" / "b").stat().st_mode) == 0o700
    import tempfile

    t = Path(tempfile.mkdtemp(dir=tmp_path))
    monkeypatch.setenv("AFF_BENCHMARK_SHARED_OUTPUT", "1")
    settle_dir(t)
    assert stat.S_IMODE(t.stat().st_mode) == 0o755


# -- where families come from

CANDIDATE = "name: evil\nfamily: {module}:Evil\nmodality: register\nspace: {{}}\n"
MODULE = textwrap.dedent("""
    from pathlib import Path
    Path({marker!r}).write_text("imported")
    from benchmark.candidates.base import Family
    class Evil(Family):
        pass
""")


def test_a_module_in_the_current_folder_is_never_imported_as_a_family(tmp_path, monkeypatch):
    from benchmark.search.spaces import load_candidates

    here, spaces = tmp_path / "here", tmp_path / "spaces"
    here.mkdir(), spaces.mkdir()
    marker = tmp_path / "ran.txt"
    (here / "evil_here.py").write_text(MODULE.format(marker=str(marker)))
    (spaces / "evil.yaml").write_text(CANDIDATE.format(module="evil_here"))
    monkeypatch.chdir(here)
    monkeypatch.syspath_prepend(str(here))                   # as `python -m` puts the current folder first
    with pytest.raises(UserError, match="not the project, a --spaces folder or an installed entry point"):
        load_candidates([spaces])
    assert not marker.exists()


def test_a_module_beside_the_candidate_files_in_a_spaces_folder_is_imported(tmp_path, monkeypatch):
    from benchmark.search.spaces import load_candidates

    spaces = tmp_path / "spaces2"
    spaces.mkdir()
    marker = tmp_path / "ran2.txt"
    (spaces / "evil_spaces.py").write_text(MODULE.format(marker=str(marker)))
    (spaces / "evil.yaml").write_text(CANDIDATE.format(module="evil_spaces"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("AFF_BENCHMARK_FAMILY_DIRS", raising=False)
    assert load_candidates([spaces])["evil"].family == "evil_spaces:Evil"
    assert marker.exists()


def test_an_installed_entry_point_names_a_family(tmp_path, monkeypatch):
    from benchmark.candidates.base import family_names, get_family

    site = tmp_path / "site"
    (site / "famp").mkdir(parents=True)
    (site / "famp" / "__init__.py").write_text("from benchmark.candidates.base import Family\nclass Net(Family):\n"
                                               "    defaults = {}\n")
    dist = site / "famp-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: famp\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[aff_benchmark.families]\nmy_net = famp:Net\n")
    monkeypatch.syspath_prepend(str(site))
    assert "my_net" in family_names()
    assert get_family("my_net").__name__ == "Net" and get_family("famp:Net").__name__ == "Net"
