"""The README and the documentation site stay true to the code: the README is short and gives
CI's install and test commands, every page is in the site's navigation, the generated
tables are the tools' output, the version is one number everywhere, and the command line
lists every command with an example."""

from __future__ import annotations

import contextlib
import io
import re
import tomllib
from pathlib import Path

import pytest
import yaml

import benchmark
from benchmark.cli import COMMANDS, EXAMPLES, build_parser, main
from benchmark.tools import perf_page, readme_table
from benchmark.tools.run_summary import read_summary

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
INSTALL = 'pip install -e ".[dicom]" && python -m benchmark run --suite all'
TEST_INSTALL = 'pip install -e ".[test,dicom,cluster]" && python -m pytest'
# words that describe how the project was built rather than what it does
NOTEBOOK_WORDS = re.compile(r"\b(sessions?|issue \d+|issue #\d+|this change|lab notebook)\b|\.\./shared", re.I)


def _nav_files(nav) -> list[str]:
    out = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        out += _nav_files(value) if isinstance(value, list) else [value]
    return out


def test_readme_is_at_most_250_lines():
    assert len(README.splitlines()) <= 250


def test_readme_gives_the_install_and_test_commands_ci_runs():
    assert INSTALL in README and TEST_INSTALL in README
    ci = (ROOT / ".ci" / "run").read_text()
    extras = re.search(r'pip install -e "(\.\[[^\]]+\])"', TEST_INSTALL).group(1)
    assert f'-e "{extras}"' in ci, "CI installs the project the way the README says"
    assert re.search(r"^python -m pytest$", ci, re.M), "CI runs the README's test command"
    assert "mkdocs build --strict" in ci and ci.index("mkdocs build") < ci.index("\npython -m pytest")


def test_every_docs_page_is_in_the_site_navigation_and_exists():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = _nav_files(config["nav"])
    assert len(nav) == len(set(nav))
    for page in nav:
        assert (ROOT / "docs" / page).is_file(), page
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert pages == set(nav), f"pages outside the navigation: {pages - set(nav)}"
    assert {"design.md", "security.md", "api.md", "performance.md"} <= set(nav)


def test_the_performance_page_is_the_output_of_perf_page():
    expected = perf_page.render(ROOT / "docs" / "runs")
    assert (ROOT / "docs" / "performance.md").read_text(encoding="utf-8") == expected, (
        "regenerate it: python -m benchmark.tools.perf_page docs/runs > docs/performance.md")


def test_stored_runs_hold_no_path_or_secret():
    for summary in (ROOT / "docs" / "runs").glob("*/summary.json"):
        text = summary.read_text()
        assert "/root" not in text and "/home" not in text and "postgresql://" not in text, summary
        info = read_summary(summary.parent).info
        assert info["status"] == "complete" and info.get("machine") and info.get("started"), summary


def test_the_readme_table_is_the_output_of_readme_table():
    """The block between the markers is `python -m benchmark.tools.readme_table SOURCE` once the
    default run's summary is stored in SOURCE (`python -m benchmark.tools.perf_page --store
    results/<run> docs/runs/default`); until then it must have the tool's form."""
    block = re.search(r"<!-- readme_table: (?P<source>\S+) -->\n(?P<body>.*?)<!-- /readme_table -->", README, re.S)
    assert block, "the README's default-run table sits between readme_table markers"
    body = block["body"]
    assert body.splitlines()[0].startswith("`python -m benchmark run") and "| candidate | modality | AUC |" in body
    source = block["source"]
    assert source.startswith("docs/runs/")
    if (ROOT / source).is_dir():   # a summary stored by perf_page --store: the table must be its output
        assert body == readme_table.render(read_summary(ROOT / source))


def test_the_version_is_one_number_everywhere():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "benchmark.__version__"}
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert changelog.index("## [Unreleased]") < changelog.index(f"## [{benchmark.__version__}]")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and out.getvalue().split() == ["aff-benchmark", benchmark.__version__]


def test_help_lists_every_command_with_its_purpose_and_a_runnable_example():
    text = build_parser().format_help()
    for name, (_, purpose) in COMMANDS.items():
        assert re.search(rf"^\s+{name}\s+{re.escape(purpose)}$", text, re.M), name
        assert f"e.g. {EXAMPLES[name]}" in text
        words = EXAMPLES[name].split()
        assert words[:4] == ["python", "-m", "benchmark", name]
        build_parser().parse_args(words[3:])


def test_readme_and_docs_speak_of_the_project_only():
    pages = [ROOT / "README.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").glob("*.md"),
             *(ROOT / "benchmark" / "tools").rglob("*.py"), ROOT / "benchmark" / "tools" / "device_check.sh",
             ROOT / "benchmark" / "tools" / "device_slice" / "profiles.yaml", ROOT / "search_spaces" / "profiles.yaml"]
    found = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in pages for m in NOTEBOOK_WORDS.finditer(p.read_text())]
    assert not found, found
