"""Fixtures shared by the whole suite.

Databases: each test gets a fresh, migrated database. SQLite by default; the same tests run on
PostgreSQL when ``TRADECORD_TEST_DB=postgresql`` (see tests/pg.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sqlite3
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bot.db import Database
from bot.settings import Settings, load_settings
from bot.vault import Vault, generate_key_spec

SETTING_NAMES = (
    "DISCORD_TOKEN",
    "DISCORD_API_BASE",
    "DISCORD_GATEWAY_URL",
    "DISCORD_DEV_GUILD_ID",
    "TRADECORD_DATA_DIR",
    "DATABASE_URL",
    "TRADECORD_KEYS",
    "WEB_HOST",
    "WEB_PORT",
    "PUBLIC_URL",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never read the developer's .env or environment settings."""
    monkeypatch.chdir(tmp_path)
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def key_line() -> str:
    return generate_key_spec("test")


@pytest.fixture
def vault(key_line: str) -> Vault:
    from bot.settings import parse_keys

    return Vault(parse_keys(key_line))


TEST_DB = os.environ.get("TRADECORD_TEST_DB", "sqlite")
requires_sqlite = pytest.mark.skipif(TEST_DB != "sqlite", reason="inspects the SQLite file itself")


@pytest.fixture(scope="session")
def postgres() -> Iterator[object]:
    from tests.pg import postgres_cluster

    with postgres_cluster() as executor:
        yield executor


def _migrate(url: str) -> None:
    """Bring ``url`` to the head revision, on a loop of its own in another thread (so the
    test's event loop is never touched)."""

    async def upgrade() -> None:
        database = Database(url)
        try:
            await database.upgrade()
        finally:
            await database.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, upgrade()).result()


@pytest.fixture(scope="session")
def migrated_template(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A database at the head revision, migrated once per session: each test's database is
    a copy of it, which costs a file copy (SQLite) or a CREATE DATABASE … TEMPLATE
    (PostgreSQL) instead of running every migration again."""
    if TEST_DB == "postgresql":
        from tests.pg import fresh_database

        with fresh_database(request.getfixturevalue("postgres"), as_template=True) as url:
            _migrate(url)
            yield url.rsplit("/", 1)[1]
        return
    path = tmp_path_factory.mktemp("template") / "tradecord.db"
    _migrate(f"sqlite+aiosqlite:///{path}")
    with sqlite3.connect(path) as conn:  # everything in the main file, so one copy is whole
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    yield str(path)


@pytest.fixture
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, migrated_template: str
) -> Iterator[str]:
    """A fresh database of the test's own, already at the head revision."""
    if TEST_DB == "postgresql":
        from tests.pg import fresh_database

        with fresh_database(request.getfixturevalue("postgres"), template=migrated_template) as url:
            yield url
    else:
        path = tmp_path / "tradecord.db"
        shutil.copyfile(migrated_template, path)
        yield f"sqlite+aiosqlite:///{path}"


@pytest.fixture
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database with no tables: for tests of the migrations themselves."""
    if TEST_DB == "postgresql":
        from tests.pg import fresh_database

        with fresh_database(request.getfixturevalue("postgres")) as url:
            yield url
    else:
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    await database.upgrade()
    yield database
    await database.close()


@pytest.fixture
def settings(tmp_path: Path, database_url: str, key_line: str) -> Settings:
    return load_settings(
        tradecord_data_dir=tmp_path / "data",
        database_url=database_url,
        tradecord_keys=key_line,
        web_port=0,
        discord_token=None,
    )


@pytest.fixture
def caplog_all(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    yield caplog


@pytest.fixture
async def tradecord(settings: Settings, db: Database) -> AsyncIterator[object]:
    """The real bot on the local Discord, over the test database."""
    from tests.discord_harness import running_tradecord

    async with running_tradecord(settings) as harness:
        yield harness


# What reaches the database under test. A test that asks for none of these runs the same on
# either backend, so the PostgreSQL pass leaves it to the SQLite pass instead of running it twice.
DATABASE_FIXTURES = frozenset({"database_url", "empty_database_url", "postgres", "cluster"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests of many seconds start first: one left for the end runs alone on one core while
    # the other workers have finished (xdist hands out tests in this order).
    items.sort(key=lambda item: item.get_closest_marker("first") is None)
    if TEST_DB != "postgresql":
        return
    keep, drop = [], []
    for item in items:
        uses_db = DATABASE_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        (keep if uses_db else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
