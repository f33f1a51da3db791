"""The command line for the person running Tradecord: options that would be silently ignored,
and commands that must work whatever else .env holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot import cli
from bot.settings import parse_keys
from bot.vault import generate_key_spec


@pytest.fixture
def real_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[object]:
    """A real-looking token and key; ``run_bot`` replaced by a recorder, never connecting."""
    monkeypatch.setenv("DISCORD_TOKEN", "MTAw.real.token")
    monkeypatch.setenv("TRADECORD_KEYS", generate_key_spec("k1"))
    monkeypatch.setenv("PUBLIC_URL", "https://trade.example.org")
    monkeypatch.setenv("TRADECORD_DATA_DIR", str(tmp_path / "data"))
    calls: list[object] = []

    async def fake_run_bot(settings: object, **options: object) -> int:
        calls.append(options)
        return 0

    monkeypatch.setattr(cli, "run_bot", fake_run_bot)
    return calls


def test_script_with_a_real_token_is_refused_before_connecting(
    real_token: list[object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The script was ignored and the bot went onto real Discord instead of local mode.
    script = tmp_path / "demo.txt"
    script.write_text("/help\n")
    assert cli.main(["run", "--script", str(script)]) == 2
    assert real_token == []
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "tradecord: --script: plays local mode's chat, but DISCORD_TOKEN is set; unset it "
        "(or run without --script to go on Discord)"
    ]


@pytest.mark.parametrize("role", ["web", "worker"])
def test_shards_with_a_role_that_owns_none_is_refused(
    real_token: list[object], capsys: pytest.CaptureFixture[str], role: str
) -> None:
    # Silently ignored: the admin believed those shards were served.
    assert cli.main(["run", "--role", role, "--shards", "0-3/8"]) == 2
    assert real_token == []
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "tradecord: --shards: only with --role bot (web and worker processes own no shards)"
    )


def test_part_of_the_shards_with_role_all_is_refused(
    real_token: list[object], capsys: pytest.CaptureFixture[str]
) -> None:
    # Each such process also served the web pages and ran every background job, and the
    # shards left for the other processes had no one else to take them.
    assert cli.main(["run", "--shards", "0-3/8"]) == 2
    assert real_token == []
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "tradecord: --shards 0-3/8: --role all is the only process, so it owns every shard "
        "(0-7/8); to split shards run --role bot processes"
    )


@pytest.mark.parametrize(
    ("args", "options"),
    [
        (["--role", "bot", "--shards", "0-3/8"], {"role": "bot", "shard_ids": [0, 1, 2, 3]}),
        (["--shards", "0-1/2"], {"role": "all", "shard_ids": [0, 1]}),
    ],
)
def test_shards_a_process_may_own_still_reach_the_bot(
    real_token: list[object],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    options: dict[str, object],
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://tc@127.0.0.1/tradecord")
    assert cli.main(["run", *args]) == 0
    assert len(real_token) == 1
    assert real_token[0] == options | {"shard_count": int(args[-1].split("/")[1])}


def test_keys_generate_works_while_settings_are_broken(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The key line is what fixes a broken TRADECORD_KEYS; refusing to print it for a bad
    # setting (this one or another) left no way out but writing a key by hand.
    monkeypatch.setenv("TRADECORD_KEYS", "k1:not-a-key")
    monkeypatch.setenv("WEB_PORT", "eighty")
    assert cli.main(["keys", "generate", "--id", "k2"]) == 0
    line = capsys.readouterr().out.strip()
    assert parse_keys(line)[0].key_id == "k2"


def test_script_with_a_split_role_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Local mode and no --role all: the script was ignored and a bare web server started.
    def no_web(settings: object) -> None:
        raise AssertionError("the web role started")

    monkeypatch.setattr("bot.roles.run_web", no_web)
    assert cli.main(["run", "--role", "web", "--script", "-"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "tradecord: --script: local mode runs as one process, not --role web"
    )
