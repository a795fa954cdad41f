"""Errors caused by what a user gave us.

A ``UserError`` is printed by the CLI as one line (no traceback) and exits with status 2.
Its message says what was wrong, where (file, row, column or key) and what to do.
Anything else that escapes is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user: one sentence naming the place and the fix."""


def where(path, row=None, column=None) -> str:
    """Format a location for an error message, e.g. ``register.csv, row 12, column 'age'``.

    ``row`` is the 1-based data row as a spreadsheet shows it (header is row 1, so the
    first data row is row 2); pass it already converted.
    """
    parts = [str(path)]
    if row is not None:
        parts.append(f"row {row}")
    if column is not None:
        parts.append(f"column {column!r}")
    return ", ".join(parts)


def yaml_problem(path, exc) -> str:
    """One line for a YAML syntax error: ``dataset.yaml, line 4: not valid YAML (...); fix the syntax``."""
    mark = getattr(exc, "problem_mark", None)
    line = f", line {mark.line + 1}" if mark is not None else ""
    return f"{path}{line}: not valid YAML ({getattr(exc, 'problem', None) or 'syntax error'}); fix the syntax"
