"""One deployment per module: two web, two worker and two bot processes on a fresh PostgreSQL
database (see harness.py). Starting six interpreters costs seconds, so the tests share them;
each works on its own members, strategies and rows.

A failing test shows the tail of every process's log under its report.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from typing import Any

import pytest
import pytest_asyncio

from tests.conftest import TEST_DB
from tests.scale.harness import Cluster, RefreshGate, running_cluster


@pytest.fixture(scope="module")
def refresh_gate() -> RefreshGate:
    return RefreshGate()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    refresh_gate: RefreshGate,
) -> AsyncIterator[Cluster]:
    if TEST_DB != "postgresql":
        pytest.skip("several processes share one database only on PostgreSQL")
    from tests.pg import fresh_database

    with fresh_database(request.getfixturevalue("postgres")) as url:
        async with running_cluster(
            url, tmp_path_factory.mktemp("scale"), ts=refresh_gate.emulator()
        ) as running:
            yield running


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[Any]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    cluster = getattr(item, "funcargs", {}).get("cluster")
    if report.failed and isinstance(cluster, Cluster):
        for proc in cluster.procs.values():
            code = proc.process.returncode if proc.process else None
            state = "running" if code is None else f"exited with {code}"
            report.sections.append((f"{proc.name} ({state}), last lines", proc.tail(80)))
    return report
