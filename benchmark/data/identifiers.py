"""Direct patient identifiers in a register column, recognised without echoing any cell.

    reason = identifier_reason(df["x7"], "x7")   # e.g. "its cells look like phone numbers", or None

A column is refused (``refuse_identifier``: one problem line naming the file and column and
advising ``drop_columns``) when

- its name is one identifiers go by (personnummer, name, phone, date_of_birth, ...);
- its text cells look like personal identity numbers, e-mail addresses, phone numbers or
  person names, or are nearly one distinct text per patient;
- its numbers look like personal identity numbers (10 to 12 digits), dates stored as
  numbers (``yyyymmdd`` with a plausible year, or ``yymmdd``: a date of birth), or phone
  numbers stored as numbers (8 to 11 digits, mostly distinct: the leading 0 lost);
- its text (categorical or not) is free text: notes of several words, or short texts with
  capitalised names beside words for relatives ("Daughter Anna visits"), even when a
  handful of such notes repeat over many patients.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.data.dataset_spec import Problems
from benchmark.errors import where

_ID_NAMES = {
    "personnummer", "personnr", "person_nr", "pnr", "pers_nr", "personal_number", "personal_id", "person_id",
    "samordningsnummer", "fodselsnummer", "fodselsnr", "foedselsnummer", "cpr", "cpr_nr", "cpr_number", "hetu",
    "henkilotunnus", "kennitala", "ssn", "social_security_number", "national_id", "nhs_number", "mrn",
    "medical_record_number", "record_number", "journal_number", "journalnummer", "name", "names", "namn",
    "full_name", "fullname", "patient_name", "patientname", "patient_namn", "first_name", "firstname", "given_name",
    "last_name", "lastname", "surname", "family_name", "fornamn", "efternamn", "tilltalsnamn", "email", "e_mail",
    "mail", "email_address", "epost", "e_post", "phone", "phone_number", "telephone", "tel", "telefon",
    "telefonnummer", "mobile", "mobil", "mobile_phone", "cell_phone", "address", "adress", "street_address",
    "gatuadress", "postal_address", "dob", "date_of_birth", "birth_date", "birthdate", "birthday", "fodelsedatum",
    "fodelsedag", "fodd",
}
_ID_NAME_PARTS = ("personnummer", "personnr", "fodelsenummer", "fodelsenr", "fodelsedatum", "samordningsnummer",
                  "social_security", "patient_name", "patientname", "email", "e_mail", "phone", "telefon",
                  "date_of_birth", "birth_date", "birthdate")
_PERSONAL_NUMBER = re.compile(  # SE YYMMDD-XXXX / YYYYMMDDXXXX, DK DDMMYY-XXXX, NO DDMMYYXXXXX, FI DDMMYY-XXXC
    r"^(?:(?:19|20)?\d{6}[-+]?\d{4}|\d{6}[-+A]\d{3}[0-9A-Y]|\d{11})$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
_PHONE = re.compile(r"^(?=(?:\D*\d){7,15}\D*$)(?:(?:\+|00|0)[\d\s()/-]+|\d{2,4}(?:[\s-]\d{2,4}){2,})$")
DATE = re.compile(r"^(?:(?:19|20)\d{2}[-/.]?\d{2}[-/.]?\d{2}|\d{1,2}[-/.]\d{1,2}[-/.](?:19|20)?\d{2})(?:[ T]\d.*)?$")
_PERSON_NAME = re.compile(r"^[^\W\d_][^\W\d_'.-]*(?:[-'][^\W\d_]+)*(?:,?\s+[^\W\d_][^\W\d_'.-]*(?:[-'][^\W\d_]+)*){1,3}$")
MOSTLY = 0.9          # share of the non-missing cells that must fit a pattern
_UNIQUE_SHARE = 0.9    # a text column with more distinct values than this share of its cells ...
_UNIQUE_MIN_ROWS = 20  # ... and at least this many non-missing cells is treated as an identifier


def _norm_name(col: str) -> str:
    t = str(col).strip().lower()
    t = t.translate(str.maketrans({"å": "a", "ä": "a", "ö": "o", "ø": "o", "æ": "a", "é": "e", "ü": "u"}))
    return re.sub(r"[^a-z0-9]+", "_", t).strip("_")


def _cells(s: pd.Series) -> pd.Series:
    """Non-missing cells as stripped text; integral floats (Parquet) without '.0'."""
    s = s.dropna()
    if pd.api.types.is_float_dtype(s):
        v = s.to_numpy(dtype=np.float64)
        if len(v) and np.all(np.isfinite(v) & (v == np.round(v))):
            s = pd.Series(v.astype(np.int64))
    c = s.astype(str).str.strip()
    return c[c != ""].reset_index(drop=True)


def share_matching(cells: pd.Series, rx: re.Pattern) -> float:
    cells = cells.dropna().astype(str).str.strip()
    return float(cells.str.match(rx).mean()) if len(cells) else 0.0


def identifier_reason(s: pd.Series, col: str) -> str | None:
    """Why column ``col`` looks like a direct patient identifier (no cell value in it), or None."""
    norm = _norm_name(col)
    if norm in _ID_NAMES or any(part in norm for part in _ID_NAME_PARTS):
        return "its name"
    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_datetime64_any_dtype(s):
        return None
    if pd.api.types.is_numeric_dtype(s):
        return _numeric_reason(s)
    cells = _cells(s)
    if cells.empty:
        return None
    lens = cells.str.len().to_numpy()
    if np.mean(lens >= 7) >= MOSTLY:   # the patterns below need at least 7 characters
        if share_matching(cells, _PERSONAL_NUMBER) >= MOSTLY:
            return "its cells look like personal identity numbers"
        if cells.str.contains("@", regex=False).mean() >= MOSTLY and share_matching(cells, _EMAIL) >= MOSTLY:
            return "its cells look like e-mail addresses"
        if share_matching(cells, DATE) >= MOSTLY and not cells.str.fullmatch(r"\d+").all():
            return None  # dates: _feature says they are not features (a date of birth is caught by its name)
        if share_matching(cells, _PHONE) >= MOSTLY:
            return "its cells look like phone numbers"
    numeric = pd.to_numeric(cells.str.replace(",", ".", regex=False), errors="coerce")
    if numeric.notna().mean() > 1 - MOSTLY:
        return _numeric_reason(numeric.dropna()) if numeric.notna().mean() >= MOSTLY else None
    text = cells[numeric.isna().to_numpy()]
    free = free_text_reason(text)
    if free is not None:
        return free
    n_distinct = text.nunique()
    if len(text) >= 5 and n_distinct > 0.5 * len(text) and share_matching(text, _PERSON_NAME) >= MOSTLY:
        return "its cells look like person names"
    if len(text) >= _UNIQUE_MIN_ROWS and n_distinct > _UNIQUE_SHARE * len(text):
        if share_matching(text, DATE) >= MOSTLY:
            return None
        return f"{n_distinct} different texts in {len(text)} rows, nearly one per patient"
    return None


def refuse_identifier(s: pd.Series, col: str, path: Path, yaml_name: str, probs: Problems) -> bool:
    """True (with a problem added) when ``col`` looks like a direct identifier; the message quotes no cell."""
    reason = identifier_reason(s, col)
    if reason is None:
        return False
    probs.add(f"{where(path, column=col)}: looks like a direct patient identifier ({reason}); identifiers must not "
              f"become features: add the column to drop_columns in {yaml_name}")
    return True


# -- numbers that are identifiers

_YEARS = (1880, 2100)     # a plausible year of a date of birth (or of any date) stored as yyyymmdd


def _integers(s: pd.Series) -> np.ndarray:
    """The integral, non-negative values of ``s`` (floats from CSV included); empty when any other."""
    v = pd.to_numeric(s, errors="coerce").dropna().to_numpy(dtype=np.float64)
    if len(v) == 0 or not np.all(np.isfinite(v) & (v == np.round(v)) & (v >= 0)):
        return np.zeros(0, dtype=np.int64)
    return v.astype(np.int64)


def _valid_dates(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    days = np.array([31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
    ok = (m >= 1) & (m <= 12) & (d >= 1)
    return ok & (d <= days[np.clip(m, 1, 12) - 1])


def numeric_date_share(v: np.ndarray) -> float:
    """The share of ``v`` that reads as a date: ``yyyymmdd`` (years ``_YEARS``) or ``yymmdd`` (0 to 991231)."""
    if len(v) == 0:
        return 0.0
    eight = (v >= _YEARS[0] * 10_000 + 101) & (v <= _YEARS[1] * 10_000 + 1231)
    ok8 = eight & _valid_dates(v // 10_000, (v // 100) % 100, v % 100)
    six = (v >= 101) & (v <= 991231) & ~eight
    ok6 = six & _valid_dates(v // 10_000, (v // 100) % 100, v % 100)
    return float(np.mean(ok8 | ok6))


def _numeric_reason(s: pd.Series) -> str | None:
    v = _integers(s)
    if len(v) == 0:
        return None
    digits = np.floor(np.log10(np.maximum(v, 1))).astype(np.int64) + 1
    if np.mean(digits >= 10) >= MOSTLY:   # personal numbers have 10 to 12 digits
        if share_matching(_cells(s), _PERSONAL_NUMBER) >= MOSTLY:
            return "its cells look like personal identity numbers"
    distinct = len(np.unique(v)) / len(v)
    if np.mean(digits >= 5) >= MOSTLY and numeric_date_share(v) >= MOSTLY:
        return "its numbers look like dates (yyyymmdd or yymmdd), such as a date of birth"
    if np.mean((digits >= 8) & (digits <= 11)) >= MOSTLY and (distinct >= 0.5 or len(v) < 5):
        spread = np.mean(np.abs(digits - np.median(digits)) <= 1)
        if spread >= MOSTLY:
            return ("its numbers look like phone numbers stored as numbers (8 to 11 digits, nearly one per patient; "
                    "a genuine measurement: store it in larger units)")
    return None


# -- free text

_RELATIVES = {
    "daughter", "son", "wife", "husband", "spouse", "partner", "mother", "father", "mum", "mom", "dad", "brother",
    "sister", "grandson", "granddaughter", "grandchild", "niece", "nephew", "aunt", "uncle", "cousin", "relative",
    "neighbour", "neighbor", "friend", "guardian", "dotter", "fru", "maka", "hustru", "sambo", "mamma", "pappa",
    "bror", "syster", "barnbarn", "dotterdotter", "sonson", "granne", "anhorig", "datter", "kone", "sonn", "soster",
    "tochter", "sohn", "ehefrau",
}
_PLACES = {   # words of institution or place names, which categories (sites, wards) may hold in capitals
    "hospital", "university", "universitetssjukhus", "universitetssjukhuset", "sjukhus", "sjukhuset", "clinic",
    "klinik", "kliniken", "center", "centre", "centrum", "ward", "avdelning", "unit", "department", "county",
    "region", "health", "care", "medical", "vardcentral", "halsocentral", "north", "south", "east", "west",
    "norra", "sodra", "ostra", "vastra", "city", "district", "site", "hus", "lasarett", "lasarettet",
}
_WORD = re.compile(r"[^\W\d_]+(?:[-'][^\W\d_]+)*")
FREE_TEXT_WORDS = 5     # a value of this many words or more is a note, not a category


def _is_note(value: str) -> tuple[bool, bool]:
    """(free text, names a relative): many words, or capitalised names (not the first word) in a short text."""
    words = _WORD.findall(value)
    if len(words) >= FREE_TEXT_WORDS:
        plain = {_norm_word(w) for w in words}
        return True, bool(plain & _RELATIVES)
    names = [w for w in words[1:] if len(w) >= 2 and w[0].isupper() and not w.isupper()]
    plain = {_norm_word(w) for w in words}
    relative = bool(plain & _RELATIVES) and bool(names)
    return relative or (len(words) >= 3 and bool(names) and not plain & _PLACES), relative


def _norm_word(w: str) -> str:
    return w.lower().translate(str.maketrans({"å": "a", "ä": "a", "ö": "o", "ø": "o", "æ": "a", "é": "e"}))


def free_text_reason(text: pd.Series) -> str | None:
    """Why the texts of a column look like free-text notes rather than categories, or None."""
    levels = pd.unique(text.astype(str))
    if len(levels) == 0:
        return None
    notes = [_is_note(v) for v in levels]
    n_free = sum(f for f, _ in notes)
    if any(r for _, r in notes):
        return "its texts look like free-text notes naming people (a relative with a capitalised name)"
    if n_free and n_free >= 0.3 * len(levels):
        return f"{n_free} of its {len(levels)} distinct texts look like free-text notes (several words or names)"
    return None
