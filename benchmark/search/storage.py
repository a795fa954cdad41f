"""Optuna storages from the ``--storage`` spec: SQLite, a journal file, or PostgreSQL.

    open_storage("sqlite:///run/optuna.db")         # the URL itself (one process writes at a time)
    open_storage("/shared/optuna.journal")           # a journal file: many processes on one machine
    open_storage("postgresql://me:pw@db:5432/aff")   # RDBStorage with heartbeats: many machines

What it returns goes to ``optuna.create_study(storage=...)``, ``optuna.load_study`` and
``optuna.study.get_all_study_names``. A spec is opened once per process (one engine, one
journal reader), however many studies use it.

- ``sqlite:///...`` is returned unchanged. SQLite does not take concurrent writers ("database
  is locked"): ``uses_concurrent_writers_safely`` is False for it.
- ``postgresql://`` (and ``postgres://``, ``postgresql+psycopg://``) uses psycopg 3 (the
  ``cluster`` extra) and records a heartbeat of each running trial every ``HEARTBEAT_S``
  seconds (``study.run_study``); a RUNNING trial whose heartbeat is older than ``GRACE_S`` is
  stale (its process died) and ``optuna.storages.fail_stale_trials`` fails it.
- A spec without ``://`` is the path of an Optuna journal file (``JournalFileOpenLock``); its
  folder must exist. This is what parallel workers on one machine share.
- Other URLs (``mysql://``...) go to ``RDBStorage`` as they are, without heartbeats.

``redact(spec)`` is the spec with its password replaced by ``***``, for logs and manifests;
``scrub(text)`` hides every storage spec and password this process was given in any text
(a command line, an error message, a traceback) before it is written or printed. Passwords
may stay off the command line: psycopg (libpq) reads ``PGPASSWORD`` and ``~/.pgpass``
(``PGPASSFILE``) for a URL without one, e.g. ``postgresql://me@db:5432/aff``.
"""

from __future__ import annotations

import os
import re
import threading
import warnings
from urllib.parse import urlsplit

import optuna

from benchmark.errors import UserError

HEARTBEAT_S = 10   # a running trial's heartbeat interval on PostgreSQL (seconds, an int for Optuna)
GRACE_S = 30       # a RUNNING trial whose last heartbeat is older than this is stale (its process died)
CONNECT_TIMEOUT_S = 10   # seconds to wait for a PostgreSQL server before giving up

_PG_SCHEMES = ("postgresql", "postgres")
_cache: dict[tuple[int, str], object] = {}
_lock = threading.Lock()


def storage_kind(spec: str) -> str:
    """'sqlite', 'postgresql', 'journal' or 'rdb' (another SQLAlchemy URL)."""
    if "://" not in spec:
        return "journal"
    scheme = spec.split("://", 1)[0].lower()
    if scheme.split("+", 1)[0] == "sqlite":
        return "sqlite"
    if scheme.split("+", 1)[0] in _PG_SCHEMES:
        return "postgresql"
    return "rdb"


def uses_concurrent_writers_safely(spec: str) -> bool:
    """Whether several processes may write studies to this storage at once (not SQLite)."""
    return storage_kind(spec) != "sqlite"


def normalise_url(spec: str) -> str:
    """A PostgreSQL URL with the psycopg 3 driver (``postgresql+psycopg://``); other specs unchanged.

    ``postgresql://`` alone would make SQLAlchemy load psycopg2. An explicit driver
    (``postgresql+asyncpg://``...) is kept.
    """
    if storage_kind(spec) != "postgresql":
        return spec
    scheme, rest = spec.split("://", 1)
    if "+" in scheme:
        return spec
    return "postgresql+psycopg://" + rest


def dashboard_storage(spec: str) -> str:
    """What to give ``optuna-dashboard`` for this spec (the normalised URL, or the journal's path)."""
    if storage_kind(spec) == "journal":
        return os.path.abspath(os.path.expanduser(spec))
    return normalise_url(spec)


REDACTED = "***"   # what stands for a password in a redacted spec
_QUERY_SECRET = re.compile(r"([?&](?:password|passwd|pwd|sslpassword)=)[^&#]*", re.I)
_secrets: set[str] = set()   # the passwords of storages this process was given, in every spelling (``scrub``)


def _split_userinfo(spec: str) -> tuple[str, str | None, str | None, str]:
    """(scheme://, user, password, the rest after '@') of a URL. The user information ends at the last '@'
    before the host: a password holding a raw '@', '#', '/', '?' or ':' (not percent-encoded) stays whole."""
    scheme, _, rest = spec.partition("://")
    if "@" not in rest:
        return scheme + "://", None, None, rest
    userinfo, _, host = rest.rpartition("@")
    user, colon, password = userinfo.partition(":")
    return scheme + "://", user, password if colon else None, host


def redact(spec: str) -> str:
    """The spec with its password replaced by ``***`` (in the user information and in ``?password=``).

    The URL is taken apart at its last '@' (so a password with any character, encoded or not, is hidden
    whole) and rendered by SQLAlchemy's URL parser with ``hide_password=True``.
    """
    if not isinstance(spec, str) or "://" not in spec:
        return spec
    head, user, password, host = _split_userinfo(spec)
    if password is not None:
        spec = f"{head}{user}:{REDACTED}@{host}"
    try:
        from sqlalchemy.engine import make_url

        rendered = make_url(spec).render_as_string(hide_password=True)
        spec = rendered if REDACTED in rendered or password is None else spec
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy reads: the manual form above stands
        pass
    return _QUERY_SECRET.sub(r"\1" + REDACTED, spec)


def secrets_of(spec: str) -> set[str]:
    """The spec's password in the spellings it may appear in (as given, percent-decoded, percent-encoded)."""
    from urllib.parse import quote, unquote, unquote_plus

    if not isinstance(spec, str) or "://" not in spec:
        return set()
    _, _, password, _ = _split_userinfo(spec)
    found = [password] if password else []
    found += [m.group(0).split("=", 1)[1] for m in _QUERY_SECRET.finditer(spec)]
    out = set()
    for pw in filter(None, found):
        out |= {pw, unquote(pw), unquote_plus(pw), quote(unquote(pw), safe=""), quote(pw, safe="")}
    return {p for p in out if len(p) >= 4}   # shorter ones would blank out ordinary text; the spec itself is replaced whole


def remember_secrets(spec: str | None) -> None:
    """Let ``scrub`` hide this spec's password from now on in this process (``open_storage`` calls it)."""
    if spec:
        _secrets.update(secrets_of(spec))
        _secrets.add(spec)


def scrub(text: str, spec: str | None = None) -> str:
    """``text`` with the storage spec (``spec``, and every spec this process opened) and its password hidden:
    for commands, error messages and tracebacks that are written or printed."""
    if not isinstance(text, str):
        return text
    specs = sorted({spec, *(s for s in _secrets if "://" in s)} - {None}, key=len, reverse=True)
    for sp in specs:
        text = text.replace(sp, redact(sp))
    for pw in sorted(secrets_of(spec or "") | {s for s in _secrets if "://" not in s}, key=len, reverse=True):
        text = text.replace(pw, REDACTED)
    return text


def _where(spec: str) -> str:
    """host:port of a URL, for messages (never the password)."""
    _, _, _, rest = _split_userinfo(spec)
    try:
        parts = urlsplit("//" + re.split(r"[/?#]", rest, maxsplit=1)[0])
        host = parts.hostname or "localhost"
        port = parts.port
    except ValueError:
        return redact(spec)
    if port is None:
        port = 5432 if storage_kind(spec) == "postgresql" else None
    return f"{host}:{port}" if port is not None else host


def open_storage(spec: str):
    """The Optuna storage of ``spec`` (see the module doc), opened once per process."""
    if not isinstance(spec, str) or not spec.strip():
        raise UserError("the Optuna storage is empty; give a sqlite:/// or postgresql:// URL or a journal file path")
    remember_secrets(spec)
    kind = storage_kind(spec)
    if kind == "sqlite":
        return spec
    key_spec = os.path.abspath(os.path.expanduser(spec)) if kind == "journal" else spec
    key = (os.getpid(), key_spec)   # a forked child opens its own connections
    with _lock:
        if key not in _cache:
            _cache[key] = _open_journal(key_spec) if kind == "journal" else _open_rdb(spec, kind)
        return _cache[key]


def close_storage(spec: str | None = None) -> None:
    """Forget this process's storage of ``spec`` (None: of every spec), closing its connections."""
    with _lock:
        for key in [k for k in _cache if spec is None or k[1] in (spec, os.path.abspath(os.path.expanduser(spec)))]:
            engine = getattr(_cache.pop(key), "engine", None)
            if engine is not None:
                engine.dispose()


def _open_journal(path: str):
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise UserError(f"Optuna journal file {path}: the folder {folder} does not exist; create it or give another path")
    if os.path.isfile(path):
        with open(path, "rb") as f:
            if f.read(16) == b"SQLite format 3\x00":
                raise UserError(f"{path} is an SQLite database, not a journal file; give --storage sqlite:///{path}")
    try:
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
    except ImportError:  # pragma: no cover - optuna < 4
        from optuna.storages import JournalFileOpenLock, JournalFileStorage as JournalFileBackend
    return optuna.storages.JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))


def _open_rdb(spec: str, kind: str):
    url = normalise_url(spec)
    kwargs: dict = {}
    engine_kwargs: dict = {}
    if kind == "postgresql":
        if url.startswith("postgresql+psycopg://"):
            try:
                import psycopg  # noqa: F401
            except ImportError:
                raise UserError('a PostgreSQL storage needs psycopg 3, which is not installed; '
                                'run pip install -e ".[cluster]"') from None
        kwargs = {"heartbeat_interval": HEARTBEAT_S, "grace_period": GRACE_S}
        engine_kwargs = {"pool_pre_ping": True}
        if "connect_timeout" not in url:
            engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs or None, **kwargs)
    except ImportError as exc:
        raise UserError(f"the Optuna storage {redact(spec)} needs a database driver that is not installed "
                        f"({_first_line(exc, spec)}); install it (PostgreSQL: pip install -e \".[cluster]\")") from None
    except Exception as exc:
        if not _is_db_error(exc):
            raise
        what = "PostgreSQL" if kind == "postgresql" else "the database"
        raise UserError(f"cannot open the Optuna storage ({what} at {_where(spec)}): {_first_line(exc, spec)}; check that the "
                        f"server is running and reachable from this machine and that the user, password and "
                        f"database in --storage are right") from None


def _is_db_error(exc: BaseException) -> bool:
    try:
        import sqlalchemy.exc
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError,
                            sqlalchemy.exc.ArgumentError, sqlalchemy.exc.ProgrammingError))


def _first_line(exc: BaseException, spec: str) -> str:
    """The gist of a driver error in one line, without the password."""
    inner = getattr(exc, "orig", None) or exc
    text = " ".join(str(inner).split())
    text = re.sub(r"\(Background on this error at: [^)]*\)", "", text).strip()
    return scrub(text or "the driver gave no message", spec)[:300]
