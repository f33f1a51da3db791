"""A throw-away PostgreSQL cluster for the suite's PostgreSQL run, via pytest-postgresql.

The cluster lives in a directory the server user can reach (``scripts/pg_ctl`` runs the server
as ``postgres`` when the suite runs as root), listens on 127.0.0.1 only, trusts local logins,
and is removed at the end of the session. Each test gets a fresh database.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from pytest_postgresql.executors.proc import PostgreSQLExecutor

from tests.support import free_port

PG_CTL = str(Path(__file__).resolve().parent.parent / "scripts" / "pg_ctl")
USER = "postgres"
_counter = itertools.count()


# Each test's CREATE DATABASE makes some 350 files; on a journaled disk that is about 0.5 s a
# test, in memory a few ms. The cluster needs at most a few hundred MB (see max_wal_size).
SHM = Path("/dev/shm")
SHM_NEEDED = 1 << 30


def _scratch_parent() -> str | None:
    """A memory-backed directory with room for the cluster, or None for the default temp dir."""
    try:
        st = os.statvfs(SHM)
    except OSError:
        return None
    room = st.f_bavail * st.f_frsize
    return str(SHM) if room >= SHM_NEEDED and os.access(SHM, os.W_OK) else None


@contextmanager
def postgres_cluster() -> Iterator[PostgreSQLExecutor]:
    base = Path(tempfile.mkdtemp(prefix="tradecord-pg-", dir=_scratch_parent()))
    base.chmod(0o755)
    if os.getuid() == 0:
        server = pwd.getpwnam("postgres")
        os.chown(base, server.pw_uid, server.pw_gid)
    executor = PostgreSQLExecutor(
        executable=PG_CTL,
        host="127.0.0.1",
        port=free_port(),
        datadir=str(base / "data"),
        unixsocketdir=str(base),
        logfile=str(base / "server.log"),
        startparams="-w",
        dbname="tradecord",
        user=USER,
        # Tests create hundreds of short-lived databases; durability buys nothing here.
        postgres_options="-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
        "-c max_connections=300 -c max_wal_size=256MB",
    )
    try:
        executor.start()
        executor.wait_for_postgres()
        yield executor
    finally:
        try:
            executor.stop()
        finally:
            shutil.rmtree(base, ignore_errors=True)


def url_of(executor: PostgreSQLExecutor, name: str) -> str:
    return f"postgresql+asyncpg://{USER}@{executor.host}:{executor.port}/{name}"


def _admin(executor: PostgreSQLExecutor) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=executor.host, port=executor.port, user=USER, dbname="postgres", autocommit=True
    )


@contextmanager
def fresh_database(
    executor: PostgreSQLExecutor, *, template: str | None = None, as_template: bool = False
) -> Iterator[str]:
    """A new database, empty or a copy of ``template``; yields its SQLAlchemy URL and drops
    it afterwards. ``as_template`` marks it as a template others can be copied from."""
    name = f"t{os.getpid()}_{next(_counter)}"
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        # PostgreSQL 15's default strategy writes every page of the template to the WAL: for
        # these small databases copying the files is 2.5 times faster (26 ms to 10 ms).
        create += sql.SQL(" TEMPLATE {} STRATEGY FILE_COPY").format(sql.Identifier(template))
    if as_template:
        create += sql.SQL(" IS_TEMPLATE true")
    with _admin(executor) as admin:
        admin.execute(create)
    try:
        yield url_of(executor, name)
    finally:
        with _admin(executor) as admin:
            if as_template:
                admin.execute(
                    sql.SQL("ALTER DATABASE {} IS_TEMPLATE false").format(sql.Identifier(name))
                )
            # FORCE: a test that left a connection open must not keep its database.
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
