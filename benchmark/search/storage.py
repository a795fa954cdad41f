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

``redact(spec)`` is the spec with its password replaced by ``***``, for logs and manifests.
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


_PASSWORD = re.compile(r"^(?P<head>[^:/?#]+://[^:/?#@]*:)(?P<pw>[^@/?#]*)(?P<tail>@.*)$", re.S)


REDACTED = "***"   # what stands for a password in a redacted spec


def redact(spec: str) -> str:
    """The spec with its password (``user:password@``, ``?password=``) replaced by ``***``."""
    if not isinstance(spec, str) or "://" not in spec:
        return spec
    m = _PASSWORD.match(spec)
    if m and m.group("pw"):
        spec = m.group("head") + REDACTED + m.group("tail")
    return re.sub(r"([?&]password=)[^&#]*", r"\1" + REDACTED, spec, flags=re.I)


def _where(spec: str) -> str:
    """host:port of a URL, for messages (never the password)."""
    try:
        parts = urlsplit(spec)
        host = parts.hostname or "localhost"
        port = parts.port
    except ValueError:
        return redact(spec)
    if port is None:
        port = 5432 if storage_kind(spec) == "postgresql" else None
    return f"{host}:{port}" if port is not None else host


def _password(spec: str) -> str | None:
    try:
        return urlsplit(spec).password
    except ValueError:
        return None


def open_storage(spec: str):
    """The Optuna storage of ``spec`` (see the module doc), opened once per process."""
    if not isinstance(spec, str) or not spec.strip():
        raise UserError("the Optuna storage is empty; give a sqlite:/// or postgresql:// URL or a journal file path")
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
    pw = _password(spec)
    if pw:
        text = text.replace(pw, REDACTED)
    return (text or type(inner).__name__)[:300]
