"""Every command the README and the documentation show runs: each `python -m benchmark ...` line
parses with the real command line (and each `python -m benchmark.tools.X ...` line with its
tool's parser), every repository path they name exists, every relative link resolves, Python
blocks compile, YAML blocks parse with the keys the loaders accept, and the blocks marked
``<!-- test: run -->`` run for real in a temporary folder."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from benchmark.cli import build_parser, main
from benchmark.data.dataset_spec import IMAGE_KEYS, LABEL_KEYS, TOP_KEYS
from benchmark.search.spaces import CANDIDATE_KEYS

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_OPERATORS = ("&&", "||", "|", ";", ">", ">>", "<", "&")
RUN_MARK = "<!-- test: run -->"
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)\s*$")
REPO_PATH = re.compile(r"^(?:benchmark|search_spaces|tests|docs|\.ci)/[\w./-]*$")


@dataclass
class Block:
    page: Path
    line: int
    lang: str
    text: str
    run: bool

    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def fenced_blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page (indented ones in lists too), and whether the
    nearest non-blank line before each is the run mark."""
    lines = page.read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, start = len(m["indent"]), i
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        body = "\n".join(ln[indent:] if ln[:indent].strip() == "" else ln for ln in lines[i + 1:j])
        k = start - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        out.append(Block(page, start + 1, m["lang"], body + "\n", k >= 0 and lines[k].strip() == RUN_MARK))
        i = j + 1
    return out


def prose(page: Path) -> str:
    """The page without its fenced blocks."""
    text = page.read_text(encoding="utf-8")
    return re.sub(r"^ *```[\w-]*\s*$.*?^ *```\s*$", "", text, flags=re.S | re.M)


def command_lines(text: str) -> list[list[str]]:
    """Shell lines that run ``python -m benchmark...``, continuations joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if not line.startswith("python -m benchmark"):
            continue
        out.append(_command(shlex.split(line, comments=True)))
    return out


def _command(words: list[str]) -> list[str]:
    """The words up to the first shell operator (a redirection, a pipe, ``&&``)."""
    cut = [i for i, w in enumerate(words) if w in SHELL_OPERATORS]
    return words[:cut[0]] if cut else words


def inline_commands(page: Path) -> list[list[str]]:
    spans = [" ".join(s.split()) for s in re.findall(r"`([^`]+)`", prose(page))]   # a span may wrap
    return [_command(shlex.split(s)) for s in spans if s.startswith("python -m benchmark")]


def all_commands() -> list[tuple[str, list[str]]]:
    found = []
    for page in PAGES:
        for block in fenced_blocks(page):
            if block.lang in ("", "bash", "sh", "shell", "console"):
                found += [(block.where(), words) for words in command_lines(block.text)]
        found += [(str(page.relative_to(ROOT)), words) for words in inline_commands(page)]
    return found


class _Parsed(Exception):
    pass


def parse_tool(module: str, argv: list[str]) -> None:
    """Parse ``argv`` with the tool's own parser (its ``main`` stops right after parsing)."""
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        original(self, args, namespace)
        raise _Parsed

    mod = importlib.import_module(module)
    argparse.ArgumentParser.parse_args = parse_then_stop
    try:
        mod.main(argv)
    except _Parsed:
        return
    finally:
        argparse.ArgumentParser.parse_args = original
    raise AssertionError(f"{module}.main returned without parsing its arguments")


COMMANDS = all_commands()


def test_the_docs_show_commands():
    assert len(COMMANDS) > 40
    assert {w[3] for _, w in COMMANDS if w[2] == "benchmark"} >= set(build_parser()._subparsers._group_actions[0].choices)


@pytest.mark.parametrize("where,words", COMMANDS, ids=[f"{w}: {' '.join(c[2:5])}" for w, c in COMMANDS])
def test_every_command_in_the_docs_parses(where, words):
    assert words[:2] == ["python", "-m"], where
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            if words[2] == "benchmark":
                build_parser().parse_args(words[3:])
            else:
                parse_tool(words[2], words[3:])
    except SystemExit as exc:
        if exc.code in (0, None):   # --help, --version
            return
        pytest.fail(f"{where}: `{' '.join(words)}` does not parse: {stderr.getvalue().strip().splitlines()[-1]}")


def test_every_repository_path_the_docs_name_exists():
    missing = []
    for page in PAGES:
        for span in re.findall(r"`([^`\n]+)`", page.read_text(encoding="utf-8")):
            for token in span.split():
                token = token.rstrip(".,;:)")
                if REPO_PATH.match(token) and not any(c in token for c in "<*{"):
                    if not (ROOT / token).exists():
                        missing.append(f"{page.relative_to(ROOT)}: {token}")
    assert not missing, missing


def test_every_relative_link_resolves():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", prose(page)):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            if not (page.parent / target.split("#")[0]).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_python_blocks_compile():
    for page in PAGES:
        for block in fenced_blocks(page):
            if block.lang == "python":
                compile(block.text, block.where(), "exec")


def test_yaml_blocks_use_the_keys_the_loaders_accept():
    checked = 0
    for page in PAGES:
        for block in fenced_blocks(page):
            if block.lang != "yaml":
                continue
            data = yaml.safe_load(block.text)
            assert isinstance(data, dict), block.where()
            if "register" in data or "images" in data:   # a dataset file
                assert set(data) <= TOP_KEYS, (block.where(), set(data) - TOP_KEYS)
                assert set(data.get("images") or {}) <= IMAGE_KEYS, block.where()
                assert set(data.get("label") or {}) <= LABEL_KEYS, block.where()
                checked += 1
            elif "extends" in data or "family" in data:   # a candidate file
                assert set(data) <= CANDIDATE_KEYS, (block.where(), set(data) - CANDIDATE_KEYS)
                checked += 1
    assert checked >= 4


def _marked(kind: tuple[str, ...]) -> list[Block]:
    return [b for page in PAGES for b in fenced_blocks(page) if b.run and b.lang in kind]


def test_the_marked_commands_run(tmp_path, monkeypatch):
    """The cheap commands marked in the docs (list, a small synth, validate) run and succeed,
    in the order a reader meets them, each once."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AFF_BENCHMARK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("AFF_BENCHMARK_RESULTS", str(tmp_path / "results"))
    seen = []
    for block in _marked(("", "bash", "sh", "shell")):
        for words in command_lines(block.text):
            if words in seen:
                continue
            seen.append(words)
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                code = main(words[3:])
            assert code == 0, f"{block.where()}: `{' '.join(words)}` exited {code}: {out.getvalue()[-500:]}"
    assert ["python", "-m", "benchmark", "list"] in seen and any(w[3] == "validate" for w in seen)


def test_the_marked_python_blocks_run():
    blocks = _marked(("python",))
    assert blocks
    for block in blocks:
        namespace: dict = {}
        exec(compile(block.text, block.where(), "exec"), namespace)
