"""A second hospital for the synthetic cohort: a shifted register variable, another exposure, a site name.

    synth B --patients 1000 --aff 90 --seed 2 --shift age=+6 --shift bisfo_d=*1.5 --exposure 1.3 --site-name north

- ``--shift COLUMN=+D`` (or ``-D``) adds D to a numeric register column, ``COLUMN=*F`` multiplies
  it by F (F > 0): the values as this site records them. The label, the risk and the oracle are
  drawn from the values before the shift (a measurement shift: the site records the variable
  differently, so a model trained elsewhere reads shifted values; the shift is invertible, so the
  oracle stays the exact posterior). Missing values stay missing.
- ``--exposure F`` multiplies every view's exposure (the detector response ``k`` in
  ``1 - exp(-k * attenuation)``, drawn in [1.1, 1.5]) by F: above 1 the bone saturates and the
  images come out brighter and flatter after windowing, below 1 darker.
- ``--site-name NAME`` names the cohort (``name`` in ``dataset.yaml``).

All three are recorded in ``synth.json`` (the settings) and in the dataset file's
``description``, so a cohort says how it was made. Left at their defaults they change nothing:
the default cohort's bytes are those of a generator without them.
"""

from __future__ import annotations

import math
import re

import pandas as pd

from benchmark.errors import UserError

_SHIFT = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*([+*-])\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*")
NOT_SHIFTABLE = ("patient_id", "group")


def parse_shift(text: str) -> tuple[str, str, float]:
    """``"age=+6"`` -> ``("age", "+", 6.0)``; ``"bisfo_d=*1.5"`` -> ``("bisfo_d", "*", 1.5)`` (UserError otherwise)."""
    m = _SHIFT.fullmatch(str(text))
    if not m:
        raise UserError(f"synth settings: --shift {text!r} is not COLUMN=+D, COLUMN=-D or COLUMN=*F "
                        "(e.g. --shift age=+6 or --shift bisfo_d=*1.5).")
    col, op, value = m.group(1), m.group(2), float(m.group(3))
    if op == "-":
        op, value = "+", -value
    if op == "*" and not value > 0:
        raise UserError(f"synth settings: --shift {text!r}: the factor must be above 0.")
    if not math.isfinite(value):
        raise UserError(f"synth settings: --shift {text!r}: the amount must be a finite number.")
    return col, op, value


def apply_shifts(register: pd.DataFrame, shifts: tuple[str, ...]) -> pd.DataFrame:
    """``register`` with each ``--shift`` applied to its numeric column (UserError naming a column that
    is missing, categorical or the id/label)."""
    if not shifts:
        return register
    out = register.copy()
    for text in shifts:
        col, op, value = parse_shift(text)
        if col not in out.columns or col in NOT_SHIFTABLE:
            raise UserError(f"synth settings: --shift {text!r}: {col!r} is not a register column "
                            "(e.g. age, bisfo_d, kort_d, bmi).")
        if not pd.api.types.is_numeric_dtype(out[col]):
            raise UserError(f"synth settings: --shift {text!r}: {col!r} is categorical; shift a numeric column.")
        v = out[col].astype(float)
        out[col] = v + value if op == "+" else v * value
    return out


def check(shifts: tuple[str, ...], exposure: float, site_name: str | None) -> list[tuple[bool, str]]:
    """The settings checks of this block, in ``SynthConfig.validate``'s form."""
    for s in shifts:
        parse_shift(s)
    cols = [parse_shift(s)[0] for s in shifts]
    return [
        (len(set(cols)) == len(cols), "--shift names a column twice; give each column once"),
        (math.isfinite(exposure) and 0.25 <= exposure <= 4, "--exposure must be between 0.25 and 4"),
        (site_name is None or re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\- ]{0,63}", site_name) is not None,
         "--site-name must be 1-64 letters, digits, spaces, '.', '_' or '-'"),
    ]


def description(shifts: tuple[str, ...], exposure: float, site_name: str | None) -> str:
    """What makes this cohort another site, for ``dataset.yaml``'s description ('' when nothing does)."""
    parts = []
    if site_name:
        parts.append(f"site {site_name}")
    if shifts:
        parts.append("register recorded with " + ", ".join(s.replace(" ", "") for s in shifts))
    if exposure != 1.0:
        parts.append(f"image exposure x{exposure:g}")
    return ("synthetic second site: " + "; ".join(parts)) if parts else ""


def add_arguments(parser) -> None:
    """The options of a second site (``synth --help``)."""
    parser.add_argument("--shift", action="append", default=[], metavar="COLUMN=+D|*F",
                        help="record a numeric register column shifted (age=+6) or scaled (bisfo_d=*1.5) at this "
                             "site; the label and oracle use the unshifted values (repeatable)")
    parser.add_argument("--exposure", type=float, default=1.0,
                        help="multiply the images' exposure (detector response) by this factor (%(default)s)")
    parser.add_argument("--site-name", default=None, metavar="NAME", help="name of the cohort in dataset.yaml")
