"""A throwaway PostgreSQL server for the tests and CI (no Docker, no system service).

    url = start("/tmp/aff-pg")    # initdb, listen on 127.0.0.1:<free port>, database aff_test
    ...                           # postgresql://<user>@127.0.0.1:<port>/aff_test (trust auth)
    stop("/tmp/aff-pg")

    python tests/postgres_server.py start DIR     # prints the URL (and nothing else) on stdout
    python tests/postgres_server.py stop DIR

The binaries come from ``pg_config --bindir``, else ``/usr/lib/postgresql/<version>/bin``, else
the PATH. PostgreSQL refuses to run as root: as root the server runs as the system user
``postgres`` (created with ``useradd`` when missing), which owns DIR; DIR's parents must be
traversable by it (``/tmp`` is). The socket directory is DIR itself. DIR must be missing,
empty or an earlier data directory of this script (which is stopped and wiped): anything
else is refused. Failures raise ``PostgresUnavailable`` (the command line: a message on
stderr, exit status 1).
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

DATABASE = "aff_test"
SERVICE_USER = "postgres"
_MARK = ".aff-throwaway"   # a file in DIR: this script made it, so it may wipe it


class PostgresUnavailable(RuntimeError):
    """PostgreSQL cannot be started (or stopped) here; the message says why."""


def find_bindir() -> Path:
    """The folder holding initdb, pg_ctl and postgres."""
    candidates = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                candidates.append(out.stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass

    def version(path: str) -> tuple:
        return tuple(int(x) for x in re.findall(r"\d+", path)) or (0,)

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).resolve().parent))
    for folder in candidates:
        if all((Path(folder) / tool).exists() for tool in ("initdb", "pg_ctl", "postgres")):
            return Path(folder)
    raise PostgresUnavailable("PostgreSQL binaries (initdb, pg_ctl, postgres) not found; "
                              "install them (Debian: apt-get install postgresql)")


def _service_user() -> pwd.struct_passwd:
    """The user the server runs as: this one, or ``postgres`` when this is root."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd")
    if not useradd:
        raise PostgresUnavailable(f"running as root and there is no user {SERVICE_USER!r} to run PostgreSQL as "
                                  f"(and no useradd to create one)")
    nologin = shutil.which("nologin") or "/bin/false"
    out = subprocess.run([useradd, "--system", "--no-create-home", "--shell", nologin, SERVICE_USER],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise PostgresUnavailable(f"could not create the user {SERVICE_USER!r}: {out.stderr.strip()}")
    return pwd.getpwnam(SERVICE_USER)


def _run(cmd: list, user: pwd.struct_passwd, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a PostgreSQL tool as ``user`` (cwd /, its own HOME, C locale)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(HOME=user.pw_dir or "/", USER=user.pw_name, LOGNAME=user.pw_name, LC_ALL="C", LANG="C")
    kwargs: dict = {}
    if os.geteuid() == 0 and user.pw_uid != 0:
        kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    try:
        return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd="/", env=env,
                              stdin=subprocess.DEVNULL, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired as exc:
        raise PostgresUnavailable(f"{Path(str(cmd[0])).name} took more than {timeout:.0f} s") from exc
    except OSError as exc:
        raise PostgresUnavailable(f"could not run {cmd[0]}: {exc}") from exc


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 5) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(lines[-n:])


def _prepare_dir(datadir: Path, user: pwd.struct_passwd, bindir: Path) -> None:
    if datadir.exists():
        entries = list(datadir.iterdir())
        if entries:
            if not (datadir / _MARK).exists():
                raise PostgresUnavailable(f"{datadir} is not empty and was not made by this script; give a new folder")
            stop(datadir, bindir=bindir, quiet=True)
            shutil.rmtree(datadir)
    datadir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0 and user.pw_uid != 0:
        os.chown(datadir, user.pw_uid, user.pw_gid)
    os.chmod(datadir, 0o700)
    probe = _run(["test", "-w", datadir], user, timeout=10)
    if probe.returncode != 0:
        raise PostgresUnavailable(f"the user {user.pw_name!r} cannot write {datadir} (a parent folder closed to it?); "
                                  f"use a folder under /tmp")


def start(datadir: str | os.PathLike, *, timeout_s: float = 60) -> str:
    """Create and start a server in ``datadir``; the URL of its empty database ``aff_test``."""
    bindir = find_bindir()
    user = _service_user()
    datadir = Path(datadir).absolute()
    _prepare_dir(datadir, user, bindir)
    init = _run([bindir / "initdb", "-D", datadir, "-U", user.pw_name, "-A", "trust", "-E", "UTF8",
                 "--no-locale", "--no-sync", "--no-instructions"], user, timeout=timeout_s)
    if init.returncode != 0:
        raise PostgresUnavailable(f"initdb failed: {(init.stderr or init.stdout).strip().splitlines()[-1:]}")
    (datadir / _MARK).write_text("a throwaway PostgreSQL data directory of tests/postgres_server.py\n")
    log = datadir / "server.log"
    last = ""
    for _ in range(3):   # a free port can be taken between the probe and the start
        port = _free_port()
        # The socket lives in DATADIR unless its path is too long for a Unix socket (then TCP only).
        sockdir = str(datadir) if len(str(datadir)) < 90 else ""
        options = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='{sockdir}' "
                   f"-c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        out = _run([bindir / "pg_ctl", "-D", datadir, "-l", log, "-w", "-t", str(int(timeout_s)), "-o", options,
                    "start"], user, timeout=timeout_s + 10)
        if out.returncode == 0:
            break
        last = _tail(log) or (out.stderr or out.stdout).strip()
    else:
        raise PostgresUnavailable(f"the server did not start: {last}")
    (datadir / "port").write_text(f"{port}\n")
    created = _run([bindir / "createdb", "-h", "127.0.0.1", "-p", port, "-U", user.pw_name, DATABASE], user)
    if created.returncode != 0:
        stop(datadir, bindir=bindir, quiet=True)
        raise PostgresUnavailable(f"createdb failed: {created.stderr.strip()}")
    return f"postgresql://{user.pw_name}@127.0.0.1:{port}/{DATABASE}"


def stop(datadir: str | os.PathLike, *, bindir: Path | None = None, quiet: bool = False) -> None:
    """Stop the server of ``datadir`` (fast shutdown); nothing to do when none runs."""
    datadir = Path(datadir).absolute()
    if not (datadir / "postmaster.pid").exists():
        return
    bindir = bindir or find_bindir()
    user = pwd.getpwuid(datadir.stat().st_uid)
    out = _run([bindir / "pg_ctl", "-D", datadir, "-m", "fast", "-w", "-t", "30", "stop"], user, timeout=45)
    if out.returncode != 0 and (datadir / "postmaster.pid").exists() and not quiet:
        raise PostgresUnavailable(f"pg_ctl stop failed: {(out.stderr or out.stdout).strip()}")


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: python tests/postgres_server.py start|stop DIR", file=sys.stderr)
        return 1
    try:
        if argv[0] == "start":
            print(start(argv[1]), flush=True)
        else:
            stop(argv[1])
    except (PostgresUnavailable, OSError) as exc:
        print(f"postgres_server {argv[0]}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
