"""A real PostgreSQL server for the end-to-end suite: the one named by ENTENTE_TEST_PG_URL.

`./scripts/test` starts a private, throwaway server (scripts/pg-test-instance) and exports
ENTENTE_TEST_PG_URL=postgres://entente@127.0.0.1:PORT/entente. Each test gets a fresh database
on it (`fresh_database`), created and dropped through `psql`, which is also how tests look at
the rows Entente wrote.

To run these tests by hand:

    d=$(mktemp -d); export ENTENTE_TEST_PG_URL=$(../../scripts/pg-test-instance start "$d")
    ... pytest test_postgres.py ...
    ../../scripts/pg-test-instance stop "$d"
"""
import contextlib
import glob
import os
import shutil
import subprocess
import urllib.parse
import uuid

PG_URL = os.environ.get("ENTENTE_TEST_PG_URL", "")


def psql_bin():
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"),
                      key=lambda p: [int(x) for x in p.split("/")[4].split(".") if x.isdigit()])
    return versions[-1] if versions else shutil.which("psql")


def with_database(url, db):
    """`url` with its database (the path) replaced by `db`."""
    u = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(u._replace(path="/" + db))


def psql(url, sql):
    """Runs `sql` on the database at `url`; returns the rows as tuples of strings."""
    r = subprocess.run(
        [psql_bin(), "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-d", url,
         "-c", sql],
        capture_output=True, text=True, timeout=30,
    )
    if r.returncode != 0:
        raise AssertionError(f"psql {sql!r} failed: {r.stderr}")
    return [tuple(line.split("\t")) for line in r.stdout.splitlines() if line]


@contextlib.contextmanager
def fresh_database(server_url=PG_URL):
    """A new, empty database on the server at `server_url`; yields its URL; dropped after."""
    name = "entente_e2e_" + uuid.uuid4().hex[:12]
    psql(server_url, f"CREATE DATABASE {name}")
    try:
        yield with_database(server_url, name)
    finally:
        psql(server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
