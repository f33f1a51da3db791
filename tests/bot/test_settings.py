from __future__ import annotations

from pathlib import Path

import pytest

from bot.settings import SettingsError, load_settings
from bot.vault import generate_key_spec


def test_defaults(tmp_path) -> None:
    s = load_settings()
    assert s.discord_api_base == "https://discord.com/api/v10"
    assert s.discord_gateway_url == "wss://gateway.discord.gg/"
    assert s.web_host == "127.0.0.1" and s.web_port == 8080
    assert s.public_url == "http://127.0.0.1:8080"
    assert s.local_mode
    assert s.resolved_database_url.startswith("sqlite+aiosqlite:///")
    assert s.resolved_database_url.endswith("data/tradecord.db")


def test_dotenv_is_read(tmp_path) -> None:
    (tmp_path / ".env").write_text("WEB_PORT=9090\nPUBLIC_URL=https://trade.example.org\n")
    s = load_settings()
    assert s.web_port == 9090 and s.public_url == "https://trade.example.org"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("WEB_PORT", "eighty", "WEB_PORT: a TCP port number"),
        ("WEB_PORT", "70000", "WEB_PORT: a TCP port number"),
        ("PUBLIC_URL", "trade.example.org", "PUBLIC_URL: expected an absolute http or https URL"),
        ("DISCORD_GATEWAY_URL", "https://x", "DISCORD_GATEWAY_URL: expected an absolute ws or wss"),
        ("DATABASE_URL", "mysql://x/y", "DATABASE_URL: expected sqlite+aiosqlite"),
        ("DATABASE_URL", "postgresql+asyncpg://u@h:port/db", "DATABASE_URL: expected sqlite+"),
        ("TRADECORD_KEYS", "k1:not-base64!", "TRADECORD_KEYS: key 'k1' is not valid base64"),
        ("TRADECORD_KEYS", "k1:AAAA", "TRADECORD_KEYS: key 'k1' must decode to 32 bytes"),
        ("TRADECORD_KEYS", "nocolon", "TRADECORD_KEYS: entries must look like key_id:base64key"),
        ("DISCORD_DEV_GUILD_ID", "general", "DISCORD_DEV_GUILD_ID: a Discord guild id"),
        ("DISCORD_DEV_GUILD_ID", "-1", "DISCORD_DEV_GUILD_ID: a Discord guild id (a positive"),
        ("DISCORD_DEV_GUILD_ID", "0", "DISCORD_DEV_GUILD_ID: a Discord guild id (a positive"),
        ("DISCORD_MEMBERS_INTENT", "maybe", "DISCORD_MEMBERS_INTENT: true or false"),
        ("TRADECORD_TRADESTATION_PKCE", "sure", "TRADECORD_TRADESTATION_PKCE: true or false"),
        ("JOB_LEASE_SECONDS", "a minute", "JOB_LEASE_SECONDS: a number of seconds from 10 to 3600"),
        ("JOB_LEASE_SECONDS", "5", "JOB_LEASE_SECONDS: a number of seconds from 10 to 3600"),
        ("SIGNAL_LOG_DAYS", "a year", "SIGNAL_LOG_DAYS: a number of days from 0 (keep them all)"),
        ("SIGNAL_LOG_DAYS", "-1", "SIGNAL_LOG_DAYS: a number of days from 0 (keep them all)"),
        ("DATABASE_POOL_SIZE", "five", "DATABASE_POOL_SIZE: a number of connections from 1 to"),
        ("DATABASE_POOL_SIZE", "0", "DATABASE_POOL_SIZE: a number of connections from 1 to 100"),
        ("DATABASE_MAX_OVERFLOW", "101", "DATABASE_MAX_OVERFLOW: a number of connections from 0"),
        ("PLAN_LIMITS", "free=1", "PLAN_LIMITS: expected plan:limit pairs"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL: expected one of"),
        ("TRUSTED_PROXIES", "10.0.0.0/8,proxy", "TRUSTED_PROXIES: expected comma-separated IP"),
        ("PAPER_STARTING_CASH", "1e30", "PAPER_STARTING_CASH: a positive amount"),
        ("PAPER_STARTING_CASH", "NaN", "PAPER_STARTING_CASH: a positive amount"),
        ("PUBLIC_URL", "https://trade.example.org:99999", "PUBLIC_URL: expected an absolute"),
        ("PUBLIC_URL", "https://:443", "PUBLIC_URL: expected an absolute http or https URL"),
        ("PUBLIC_URL", "https://trade.example.org/?a=1", "PUBLIC_URL: expected no ?query"),
        ("PUBLIC_URL", "https://trade.example.org/#top", "PUBLIC_URL: expected no ?query"),
        ("TRADECORD_ALPACA_API_URL", "https://api.example:x/v2", "TRADECORD_ALPACA_API_URL: exp"),
    ],
)
def test_malformed_setting_names_itself_in_one_line(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as e:
        load_settings()
    assert e.value.user_message.startswith(expected)
    assert "\n" not in e.value.user_message


def test_duplicate_key_ids_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    line = generate_key_spec("a")
    monkeypatch.setenv("TRADECORD_KEYS", f"{line},{line}")
    with pytest.raises(SettingsError, match="appears twice"):
        load_settings()


def test_plan_default_must_be_a_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLAN_DEFAULT", "gold")
    with pytest.raises(SettingsError, match="PLAN_DEFAULT"):
        load_settings()


def test_plan_named_twice_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # Plan names ignore case; a second limit for one plan would silently win.
    monkeypatch.setenv("PLAN_LIMITS", "free:1,pro:25,Free:3")
    with pytest.raises(SettingsError) as e:
        load_settings()
    assert e.value.user_message == "PLAN_LIMITS: plan 'free' appears twice"


def test_plan_default_is_matched_like_the_plan_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLAN_LIMITS", "Basic:1,Pro:10")
    monkeypatch.setenv("PLAN_DEFAULT", "Basic")
    s = load_settings()
    assert s.plan_default == "basic" and s.plans[s.plan_default] == 1


def test_broker_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADECORD_TRADIER_CLIENT_ID", "abc")
    monkeypatch.setenv("TRADECORD_TRADIER_CLIENT_SECRET", "shh")
    monkeypatch.setenv("TRADECORD_TRADIER_API_URL", "http://127.0.0.1:9/v1")
    s = load_settings()
    cfg = s.broker("tradier")
    assert cfg.client_id == "abc" and cfg.client_secret == "shh"
    assert cfg.url("api_url", "https://api.tradier.com/v1") == "http://127.0.0.1:9/v1"
    assert cfg.url("token_url", "https://real") == "https://real"
    assert "shh" not in repr(cfg)
    assert s.broker_client_id("alpaca") is None


@pytest.mark.parametrize(
    ("public_url", "ok"),
    [
        ("https://trade.example.org", True),
        ("http://127.0.0.1:8080", True),
        ("http://localhost:8080", True),
        ("http://[::1]:8080", True),
        ("http://trade.example.org", False),
        ("http://203.0.113.9:8080", False),
        ("HTTP://trade.example.org", False),
    ],
)
def test_on_discord_the_public_url_is_https_unless_loopback(
    monkeypatch: pytest.MonkeyPatch, public_url: str, ok: bool
) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "x" * 60)
    monkeypatch.setenv("PUBLIC_URL", public_url)
    if ok:
        assert load_settings().public_url == public_url
    else:
        with pytest.raises(SettingsError, match="PUBLIC_URL must start with https://") as e:
            load_settings()
        assert e.value.user_message.startswith("PUBLIC_URL ")  # named first, like the others
    monkeypatch.delenv("DISCORD_TOKEN")
    assert load_settings().public_url == public_url  # local mode: the built-in Discord


@pytest.mark.parametrize(
    "name",
    [
        "TRADECORD_TRADIER_TOKEN_URL",
        "TRADECORD_ALPACA_API_URL",
        "TRADECORD_TRADESTATION_AUTHORIZE_URL",
        "DISCORD_API_BASE",
        "DISCORD_AUTHORIZE_URL",
        "DISCORD_GATEWAY_URL",
    ],
)
@pytest.mark.parametrize("token", [None, "x" * 60])
def test_secrets_never_go_to_a_plain_http_endpoint_off_this_machine(
    monkeypatch: pytest.MonkeyPatch, name: str, token: str | None
) -> None:
    # Client secrets, broker tokens and the bot token travel to these URLs.
    scheme = "ws" if name == "DISCORD_GATEWAY_URL" else "http"
    if token:
        monkeypatch.setenv("DISCORD_TOKEN", token)
        monkeypatch.setenv("PUBLIC_URL", "https://trade.example.org")
    monkeypatch.setenv(name, f"{scheme}://broker.example.org/v1")
    with pytest.raises(SettingsError) as e:
        load_settings()
    assert e.value.user_message.startswith(f"{name}: expected {scheme}s://")
    for host in ("127.0.0.1:9000", "localhost:9000", "[::1]:9000"):
        monkeypatch.setenv(name, f"{scheme}://{host}/v1")
        load_settings()


def test_repr_of_settings_shows_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {
        "DISCORD_TOKEN": "bot-token-" + "x" * 50,
        "DISCORD_CLIENT_SECRET": "discord-client-secret",
        "TRADECORD_ALPACA_CLIENT_SECRET": "alpaca-client-secret",
        "DATABASE_URL": "postgresql+asyncpg://tc:db-password-hunter2@db.internal/tc",
        "TRADECORD_KEYS": generate_key_spec("k1"),
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PUBLIC_URL", "https://trade.example.org")
    s = load_settings()
    shown = repr(s) + str(s)
    for needle in ("bot-token-", "discord-client-secret", "alpaca-client-secret", "hunter2"):
        assert needle not in shown
    assert secrets["TRADECORD_KEYS"].split(":")[1] not in shown


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "http://127.0.0.1:4321"),
        ({"WEB_HOST": "0.0.0.0"}, "http://127.0.0.1:4321"),  # noqa: S104 - a value, not a bind
        ({"WEB_HOST": "::1"}, "http://[::1]:4321"),
        ({"WEB_HOST": "192.168.1.50"}, "http://192.168.1.50:4321"),  # local mode, on the LAN
        ({"WEB_HOST": "192.168.1.50", "DISCORD_TOKEN": "x" * 60}, "http://127.0.0.1:4321"),
        ({"PUBLIC_URL": "https://trade.example.org"}, "https://trade.example.org"),
        ({"PUBLIC_URL": "http://127.0.0.1:8080"}, "http://127.0.0.1:8080"),  # given: kept
    ],
)
def test_public_url_not_given_names_the_port_bound(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    """Before: the default http://127.0.0.1:8080 whatever WEB_PORT was (0 included)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = load_settings(web_port=0)
    assert s.public_url_set == ("PUBLIC_URL" in env)
    assert s.bound_to(4321).public_url == expected
    assert s.bound_to(4321).public_url_set == s.public_url_set


def test_env_example_as_dotenv_leaves_public_url_to_the_bound_port(tmp_path) -> None:
    """Before: .env.example's PUBLIC_URL=http://127.0.0.1:8080, copied to .env, gave every
    link port 8080 whatever WEB_PORT was; and an empty PUBLIC_URL= was refused."""
    example = Path(__file__).resolve().parents[2] / ".env.example"
    (tmp_path / ".env").write_text(example.read_text().replace("WEB_PORT=8080", "WEB_PORT=9090"))
    s = load_settings()
    assert not s.public_url_set
    assert s.bound_to(9090).public_url == "http://127.0.0.1:9090"
    assert not load_settings(public_url=" ").public_url_set


def test_a_blank_web_host_listens_on_this_machine_only() -> None:
    """ "WEB_HOST=" bound every interface ("" to asyncio), though every other blank line of
    .env.example means unset."""
    assert load_settings(web_host="").web_host == "127.0.0.1"
    assert load_settings(web_host="  ").web_host == "127.0.0.1"
    assert load_settings(web_host="0.0.0.0").web_host == "0.0.0.0"  # noqa: S104 - said on purpose
