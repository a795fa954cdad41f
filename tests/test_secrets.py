"""Database passwords stay secret: every storage URL is redacted with the URL parser wherever it is written or
printed, and the password may come from PGPASSWORD / ~/.pgpass instead of the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from benchmark.run.folder import RunConfig, manifest
from benchmark.search.profiles import get_profile
from benchmark.search.storage import redact

# passwords with @ # / ? : % space, unicode, and the characters URLs and shells treat specially
PASSWORDS = ["p@ss#w/rd?x", "sp ace pass", "c0l:on:s:", "per%cent%41", "ünïcødé€pass", "a@b@c@d", "qu?ery=1&x",
             "sl/ash/es//", "hash##tag", "mixed @#/?:% ü", "Lösenord123!", "пароль-секрет", "密码密码密码",
             "semi;colon", "plus+plus", "quote'dq\"", "back\\slash", "emoji🙂pass", "end@@", "@start", "::::",
             "%%%%", "  lead", "x/y?z#w@v:u%t s"]


def spellings(pw: str) -> set[str]:
    return {s for s in (pw, quote(pw, safe=""), quote_plus(pw), quote(pw)) if len(s) >= 4}


def urls(pw: str) -> list[str]:
    return [f"postgresql://aff_user:{quote(pw, safe='')}@db.example:5432/aff",       # percent-encoded, as it must be
            f"postgresql+psycopg://aff_user:{pw}@db.example:5432/aff?sslmode=require",  # as typed
            f"postgresql://aff_user@db.example/aff?password={quote(pw, safe='')}&sslmode=require"]


@pytest.mark.parametrize("pw", PASSWORDS)
def test_no_spelling_of_a_password_survives_redaction_or_the_manifest(pw, tiny_cohort, tmp_path):
    profile = get_profile("smoke")
    for url in urls(pw):
        shown = redact(url)
        assert "db.example" in shown and "***" in shown
        cmd = f"python -m benchmark run --storage {url} --seed 3"
        cfg = RunConfig(storage=url, command=cmd)
        text = json.dumps(manifest(tmp_path, cfg, profile, tiny_cohort, tiny_cohort.n_patients, "cpu", ["logreg"]),
                          ensure_ascii=False)
        for s in spellings(pw):
            assert s not in shown and s not in text, (url, s)
        assert "--seed 3" in text


def test_a_run_on_postgresql_writes_no_spelling_of_its_password_anywhere(fresh_pg_database, tmp_path, monkeypatch,
                                                                         capsys):
    from benchmark.cli import main
    from runner_helpers import write_register_dataset, write_spaces

    pw = "x/y?z#w@v:u%t s ü"
    head, rest = fresh_pg_database.split("://", 1)
    user_host = rest.split("@", 1)
    url = f"{head}://{user_host[0]}:{quote(pw, safe='')}@{user_host[1]}" if len(user_host) == 2 else fresh_pg_database
    data = write_register_dataset(tmp_path / "d", n=60, n_pos=15)
    spaces = write_spaces(tmp_path / "s", n_trials=1, outer_folds=2)
    argv = ["run", "--candidates", "probe", "--data", str(data), "--profile", "tiny", "--device", "cpu",
            "--spaces", str(spaces), "--results", str(tmp_path / "r"), "--run", "pg", "--storage", url]
    monkeypatch.setattr(sys, "argv", ["benchmark", *argv])
    assert main(argv) == 0
    printed = capsys.readouterr()
    files = [p for p in (tmp_path / "r" / "pg").rglob("*") if p.is_file()]
    assert len(files) > 5
    for s in spellings(pw):
        assert s not in printed.out and s not in printed.err
        for f in files:
            assert s.encode() not in f.read_bytes(), (f.name, s)
    man = json.loads((tmp_path / "r" / "pg" / "manifest.json").read_text())
    assert "***" in man["command"] and "***" in man["config"]["command"] and "***" in man["config"]["storage"]


def test_the_password_may_come_from_pgpassword_or_a_pgpass_file(fresh_pg_database, tmp_path, monkeypatch):
    from benchmark.search.storage import close_storage, open_storage

    def password_used() -> str:
        store = open_storage(fresh_pg_database)
        conn = store.engine.raw_connection()
        try:
            return conn.dbapi_connection.info.password
        finally:
            conn.close()
            close_storage(fresh_pg_database)

    assert ":" not in fresh_pg_database.split("://", 1)[1].split("@")[0]    # no password in the URL
    monkeypatch.setenv("PGPASSWORD", "from-the-environment")
    assert password_used() == "from-the-environment"
    monkeypatch.delenv("PGPASSWORD")
    pgpass = tmp_path / "pgpass"
    pgpass.write_text("*:*:*:*:from-the-pgpass-file\n")
    pgpass.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    assert password_used() == "from-the-pgpass-file"


def test_failure_reasons_and_error_messages_are_scrubbed_of_storage_passwords():
    from benchmark.run.folder import mark_failed
    from benchmark.search.storage import remember_secrets, scrub

    url = "postgresql://me:s3cret/with@chars@db:5432/aff"
    remember_secrets(url)
    man = mark_failed({}, RuntimeError(f"could not connect to {url}: s3cret/with@chars rejected"))
    assert "s3cret" not in man["reason"] and "db:5432" in man["reason"]
    assert scrub(f"tb ... {url}") == "tb ... postgresql://me:***@db:5432/aff"
