"""Settings from the environment and ``.env``, validated once at start-up.

The environment variable names are a contract with deployments and tests. A malformed value
stops the start with one line naming the variable and what is expected (``SettingsError``).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field as PydField
from pydantic import (
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError

from bot.errors import ConfigurationError

KEY_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class SettingsError(ConfigurationError):
    """One line: ``NAME: what is expected``."""


@dataclass(frozen=True, slots=True)
class KeySpec:
    key_id: str
    key: bytes

    def __repr__(self) -> str:  # never print key material
        return f"KeySpec(key_id={self.key_id!r})"


def parse_keys(raw: str) -> list[KeySpec]:
    """Parse ``id:base64key[,id:base64key...]``; each key must be 32 bytes (AES-256)."""
    specs: list[KeySpec] = []
    seen: set[str] = set()
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        key_id, sep, b64 = part.partition(":")
        if not sep or not KEY_ID_RE.match(key_id):
            raise ValueError(
                "entries must look like key_id:base64key (key id: letters, digits, _ -)"
            )
        if key_id in seen:
            raise ValueError(f"key id {key_id!r} appears twice")
        try:
            key = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"key {key_id!r} is not valid base64") from None
        if len(key) != 32:
            raise ValueError(f"key {key_id!r} must decode to 32 bytes, got {len(key)}")
        seen.add(key_id)
        specs.append(KeySpec(key_id, key))
    if not specs:
        raise ValueError("no keys given")
    return specs


def _parse_plan_limits(raw: str) -> dict[str, int]:
    limits: dict[str, int] = {}
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        name, sep, value = part.partition(":")
        name = name.strip().lower()
        if not sep or not name or not value.strip().isdigit():
            raise ValueError("expected plan:limit pairs, e.g. free:1,starter:5,pro:25")
        if name in limits:  # otherwise the last limit would silently win
            raise ValueError(f"plan {name!r} appears twice")
        limits[name] = int(value)
    if not limits:
        raise ValueError("expected at least one plan, e.g. free:1")
    return limits


def _check_url(value: str, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 -- raises on a port that is not a number in 0..65535
    except ValueError:
        ok = False
    else:
        ok = parts.scheme in schemes and bool(parts.hostname)
    if not ok:
        raise ValueError(f"expected an absolute {' or '.join(schemes)} URL")
    return value.rstrip("/") if parts.path not in ("", "/") else value


def _check_secure_url(value: str, schemes: tuple[str, str]) -> str:
    """``_check_url`` for an endpoint secrets travel to (the bot token, client secrets, broker
    tokens): the encrypted scheme, or the plain one only to this machine (an emulator)."""
    value = _check_url(value, schemes)
    host = urlsplit(value).hostname or ""
    if urlsplit(value).scheme == schemes[0] and host != "localhost" and not _is_loopback(host):
        raise ValueError(
            f"expected {schemes[1]}:// (plain {schemes[0]}:// only to this machine: "
            "127.0.0.1, ::1 or localhost), since secrets travel to it"
        )
    return value


EXPECTATIONS: dict[str, str] = {
    "web_port": "a TCP port number between 1 and 65535 (0 picks a free port)",
    "discord_dev_guild_id": "a Discord guild id (a positive number), or empty for none",
    # pydantic's own words ("Input should be a valid boolean") name no value that works.
    "discord_members_intent": "true or false",
    "tradecord_tradestation_pkce": "true or false",
    "job_lease_seconds": "a number of seconds from 10 to 3600",
    "signal_log_days": "a number of days from 0 (keep them all) to 36500",
    "database_pool_size": "a number of connections from 1 to 100",
    "database_max_overflow": "a number of connections from 0 to 100",
    "paper_starting_cash": "a positive amount up to 1000000000000000, such as 100000",
    "limit_max_order_quantity": "a number of at least 0 (0 or empty = no limit), such as 1000",
    "limit_max_order_notional": "an amount of at least 0 in USD (0 or empty = no limit)",
    "limit_max_daily_notional": "an amount of at least 0 in USD (0 or empty = no limit)",
}

MAX_STARTING_CASH = Decimal("1e15")

LIMIT_FIELDS = ("limit_max_order_quantity", "limit_max_order_notional", "limit_max_daily_notional")


BROKERS = ("tradestation", "alpaca", "tradier")
BROKER_URLS = (
    "authorize_url",
    "token_url",
    "refresh_url",
    "revoke_url",
    "api_url",
    "paper_api_url",
)


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """Per-broker settings; a ``None`` URL means the vendor's real one."""

    client_id: str | None
    client_secret: str | None = field(repr=False, default=None)
    urls: dict[str, str | None] = field(default_factory=dict)
    pkce: bool = False  # the vendor has turned PKCE on for this client

    def url(self, name: str, default: str | None) -> str | None:
        return self.urls.get(name) or default


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    discord_token: SecretStr | None = None
    discord_api_base: str = "https://discord.com/api/v10"
    discord_gateway_url: str = "wss://gateway.discord.gg/"
    discord_dev_guild_id: int | None = None
    # "Login with Discord" on /connect pages: the application's OAuth2 client.
    discord_client_id: str | None = None
    discord_client_secret: SecretStr | None = None
    discord_authorize_url: str = "https://discord.com/oauth2/authorize"
    # Ask for the Server Members intent (privileged: turn it on for the application in the
    # Developer Portal first), so a member who leaves a server stops trading its strategies.
    discord_members_intent: bool = False

    tradecord_data_dir: Path = Path("./data")
    # May hold the database password: kept out of repr (and so out of any log of the settings).
    database_url: str | None = PydField(default=None, repr=False)
    database_pool_size: int = PydField(default=5, ge=1, le=100)
    database_max_overflow: int = PydField(default=10, ge=0, le=100)
    # SQLite only. normal: a commit survives the process being killed; full: a power loss too
    # (each commit waits for the disk).
    sqlite_synchronous: Literal["normal", "full"] = "normal"

    tradecord_keys: SecretStr | None = None

    web_host: str = "127.0.0.1"
    web_port: int = PydField(default=8080, ge=0, le=65535)
    public_url: str = "http://127.0.0.1:8080"
    # Reverse proxies whose X-Forwarded-For the webhook allow-lists may believe.
    trusted_proxies: str = ""

    log_level: str = "INFO"
    # How long a signal job stays a dead worker's before another worker takes it over (renewed
    # every third of it while the job runs). Shorter fails over sooner; a worker whose event
    # loop stalls longer than two thirds of it may see its job run a second time (harmlessly:
    # orders are idempotent per signal and subscription, but the member would wait).
    job_lease_seconds: int = PydField(default=60, ge=10, le=3600)
    # Days the signal log (/signal show) keeps a signal and its executions; 0 keeps them all.
    # Without a limit every webhook request stays in the database for good.
    signal_log_days: int = PydField(default=365, ge=0, le=36500)

    paper_starting_cash: Decimal = Decimal("100000")
    paper_fill_hours: str = "24/7"
    plan_limits: str = "free:1,starter:5,pro:25"
    plan_default: str = "free"
    # Server-wide pre-trade limits for every member (0 = none); members may set stricter ones.
    limit_max_order_quantity: Decimal = Decimal(0)
    limit_max_order_notional: Decimal = Decimal(0)
    limit_max_daily_notional: Decimal = Decimal(0)

    # Brokers: a client id turns the broker on; URLs default to the vendor's real ones.
    tradecord_tradestation_client_id: str | None = None
    tradecord_tradestation_client_secret: SecretStr | None = None
    tradecord_tradestation_authorize_url: str | None = None
    tradecord_tradestation_token_url: str | None = None
    tradecord_tradestation_refresh_url: str | None = None
    tradecord_tradestation_revoke_url: str | None = None
    tradecord_tradestation_api_url: str | None = None
    tradecord_tradestation_paper_api_url: str | None = None
    # TradeStation enables PKCE per API key on request: true once it has for this key.
    tradecord_tradestation_pkce: bool = False
    tradecord_alpaca_client_id: str | None = None
    tradecord_alpaca_client_secret: SecretStr | None = None
    tradecord_alpaca_authorize_url: str | None = None
    tradecord_alpaca_token_url: str | None = None
    tradecord_alpaca_refresh_url: str | None = None
    tradecord_alpaca_revoke_url: str | None = None
    tradecord_alpaca_api_url: str | None = None
    tradecord_alpaca_paper_api_url: str | None = None
    tradecord_tradier_client_id: str | None = None
    tradecord_tradier_client_secret: SecretStr | None = None
    tradecord_tradier_authorize_url: str | None = None
    tradecord_tradier_token_url: str | None = None
    tradecord_tradier_refresh_url: str | None = None
    tradecord_tradier_revoke_url: str | None = None
    tradecord_tradier_api_url: str | None = None
    tradecord_tradier_paper_api_url: str | None = None
    tradecord_alpaca_data_url: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _blank_public_url_is_unset(cls, values: Any) -> Any:
        # "PUBLIC_URL=" (as .env.example has it) means not given: the bound address is used.
        if isinstance(values, dict):
            for key in [k for k in values if str(k).lower() == "public_url"]:
                if isinstance(values[key], str) and not values[key].strip():
                    values = {k: v for k, v in values.items() if k != key}
        return values

    @field_validator("web_host", mode="before")
    @classmethod
    def _blank_host_is_loopback(cls, v: Any) -> Any:
        # "WEB_HOST=" reads as unset, as every blank line in .env.example does; passed on as ""
        # it bound every interface. Listening beyond this machine takes an explicit 0.0.0.0.
        return "127.0.0.1" if isinstance(v, str) and not v.strip() else v

    @field_validator("discord_token", mode="before")
    @classmethod
    def _blank_token_is_none(cls, v: Any) -> Any:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("discord_dev_guild_id", mode="before")
    @classmethod
    def _blank_guild_is_none(cls, v: Any) -> Any:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("discord_dev_guild_id")
    @classmethod
    def _positive_guild(cls, v: int | None) -> int | None:
        # 0 quietly meant "unset" and -1 went to Discord; no guild has either id.
        if v is not None and v <= 0:
            raise ValueError(EXPECTATIONS["discord_dev_guild_id"])
        return v

    @field_validator(
        *[f"tradecord_{b}_{u}" for b in BROKERS for u in BROKER_URLS], "tradecord_alpaca_data_url"
    )
    @classmethod
    def _broker_url(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        return _check_secure_url(v, ("http", "https"))

    @field_validator(*[f"tradecord_{b}_client_id" for b in BROKERS], mode="before")
    @classmethod
    def _blank_client_id(cls, v: Any) -> Any:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("discord_client_id", mode="before")
    @classmethod
    def _blank_discord_client(cls, v: Any) -> Any:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        return _check_url(v, ("http", "https"))

    @field_validator("discord_api_base", "discord_authorize_url")
    @classmethod
    def _discord_url(cls, v: str) -> str:
        return _check_secure_url(v, ("http", "https"))

    @field_validator("public_url")
    @classmethod
    def _public_base(cls, v: str) -> str:
        # Callback and webhook paths are appended to it: a query or fragment would swallow them.
        parts = urlsplit(v)
        if parts.query or parts.fragment or v.endswith(("?", "#")):
            raise ValueError(
                "expected no ?query or #fragment: the address of Tradecord itself, "
                "e.g. https://trade.example.org"
            )
        return v

    @field_validator("discord_gateway_url")
    @classmethod
    def _ws_url(cls, v: str) -> str:
        _check_secure_url(v, ("ws", "wss"))
        return v

    @field_validator("sqlite_synchronous", mode="before")
    @classmethod
    def _lower_synchronous(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _db_url(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        expected = (
            "expected sqlite+aiosqlite:///path/to/file.db or postgresql+asyncpg://user@host/db"
        )
        if not (v.startswith("sqlite+aiosqlite://") or v.startswith("postgresql+asyncpg://")):
            raise ValueError(expected)
        # Parse it now: SQLAlchemy would fail on a port that is not a number only when the first
        # connection is made, with a traceback (and its message is not ours to vet for secrets).
        try:
            port = make_url(v).port
        except (ValueError, ArgumentError):
            raise ValueError(expected) from None
        if port is not None and not 0 < port <= 65535:
            raise ValueError(expected)
        return v

    @field_validator("tradecord_keys")
    @classmethod
    def _keys(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None or not v.get_secret_value().strip():
            return None
        parse_keys(v.get_secret_value())
        return v

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, v: str) -> str:
        for part in (p.strip() for p in v.split(",")):
            if part:
                try:
                    ipaddress.ip_network(part, strict=False)
                except ValueError:
                    raise ValueError(
                        "expected comma-separated IP addresses or CIDR ranges, "
                        "e.g. 127.0.0.1,10.0.0.0/8"
                    ) from None
        return v

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        level = v.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("expected one of DEBUG, INFO, WARNING, ERROR")
        return level

    @field_validator("paper_starting_cash", mode="before")
    @classmethod
    def _cash(cls, v: Any) -> Any:
        try:
            amount = Decimal(str(v))
        except InvalidOperation:
            raise ValueError(EXPECTATIONS["paper_starting_cash"]) from None
        # The cap keeps every paper balance storable (NUMERIC(38, 18) on PostgreSQL, exact
        # text on SQLite): 1e30 passed here and failed at each member's first paper account.
        if not amount.is_finite() or not 0 < amount <= MAX_STARTING_CASH:
            raise ValueError(EXPECTATIONS["paper_starting_cash"])
        return amount

    @field_validator(*LIMIT_FIELDS, mode="before")
    @classmethod
    def _limit(cls, v: Any, info: ValidationInfo) -> Any:
        if v is None or (isinstance(v, str) and not v.strip()):
            return Decimal(0)
        try:
            amount = Decimal(str(v).strip())
        except InvalidOperation:
            raise ValueError(EXPECTATIONS[str(info.field_name)]) from None
        if not amount.is_finite() or amount < 0:
            raise ValueError(EXPECTATIONS[str(info.field_name)])
        return amount

    @field_validator("paper_fill_hours")
    @classmethod
    def _fill_hours(cls, v: str) -> str:
        if v not in ("24/7", "exchange"):
            raise ValueError("expected 24/7 (fill any time) or exchange (only in exchange hours)")
        return v

    @field_validator("plan_default")
    @classmethod
    def _plan_name(cls, v: str) -> str:
        return v.strip().lower()  # as PLAN_LIMITS' names are read

    @field_validator("plan_limits")
    @classmethod
    def _plans(cls, v: str) -> str:
        _parse_plan_limits(v)
        return v

    @model_validator(mode="after")
    def _https_on_discord(self) -> Settings:
        # Broker sign-ins and webhook secrets travel over PUBLIC_URL: plain HTTP only for local
        # mode or a loopback address (trying a real Discord application on one machine).
        url = urlsplit(self.public_url)
        if self.discord_token is not None and url.scheme == "http":
            host = url.hostname or ""
            if host != "localhost" and not _is_loopback(host):
                raise ValueError(
                    "PUBLIC_URL must start with https:// when the bot runs on Discord: /connect "
                    "sign-ins and webhook URLs travel over it. Serve Tradecord behind a TLS "
                    "terminator (a reverse proxy) and give its https:// address."
                )
        return self

    # -- derived values -------------------------------------------------------------------

    @property
    def local_mode(self) -> bool:
        """No Discord token: run against the built-in local Discord."""
        return self.discord_token is None

    @property
    def public_url_set(self) -> bool:
        """Whether PUBLIC_URL was given (environment, .env or argument), not its default."""
        return "public_url" in self.model_fields_set

    def bound_public_url(self, port: int) -> str:
        """PUBLIC_URL as given, or else the address the web server is bound to: the default's
        port 8080 was wrong in every webhook URL and /connect link when WEB_PORT was not."""
        if self.public_url_set:
            return self.public_url
        host = self.web_host
        # Off loopback with a real token, the default's 127.0.0.1 stays (plain http only to
        # this machine); any address works from this machine itself.
        if (
            not host
            or _is_unspecified(host)
            or not (self.local_mode or host == "localhost" or _is_loopback(host))
        ):
            host = "127.0.0.1"
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    def bound_to(self, port: int) -> Settings:
        """These settings with PUBLIC_URL derived from the bound port, when it was not given."""
        if self.public_url_set:
            return self
        copy = self.model_copy(update={"public_url": self.bound_public_url(port)})
        copy.__pydantic_fields_set__.discard("public_url")  # still not given: derived again
        return copy

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.tradecord_data_dir.resolve() / 'tradecord.db'}"

    @property
    def key_specs(self) -> list[KeySpec]:
        return parse_keys(self.tradecord_keys.get_secret_value()) if self.tradecord_keys else []

    @property
    def plans(self) -> dict[str, int]:
        return _parse_plan_limits(self.plan_limits)

    def broker(self, key: str) -> BrokerConfig:
        if key not in BROKERS:
            return BrokerConfig(client_id=None)
        secret = getattr(self, f"tradecord_{key}_client_secret")
        urls = {u: getattr(self, f"tradecord_{key}_{u}") for u in BROKER_URLS}
        if key == "alpaca":
            urls["data_url"] = self.tradecord_alpaca_data_url
        return BrokerConfig(
            client_id=getattr(self, f"tradecord_{key}_client_id"),
            client_secret=secret.get_secret_value() if secret else None,
            urls=urls,
            pkce=bool(getattr(self, f"tradecord_{key}_pkce", False)),
        )

    def broker_client_id(self, key: str) -> str | None:
        return self.broker(key).client_id


def load_settings(**overrides: Any) -> Settings:
    """Build settings or raise ``SettingsError`` with one line for the first bad variable."""
    try:
        settings = Settings(**overrides)
    except ValidationError as e:
        err = e.errors()[0]
        msg = str(err["msg"]).removeprefix("Value error, ")
        if not err["loc"]:  # a check across settings: its message names them itself
            raise SettingsError(msg) from None
        field = str(err["loc"][0])
        raise SettingsError(f"{field.upper()}: {EXPECTATIONS.get(field) or msg}") from None
    if settings.plan_default not in settings.plans:
        raise SettingsError(
            f"PLAN_DEFAULT: expected one of the plans in PLAN_LIMITS ({', '.join(settings.plans)})"
        )
    return settings


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_unspecified(host: str) -> bool:
    """0.0.0.0 or ::, every address of the machine: not one a browser can go to."""
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False
