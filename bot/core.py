"""The application core: everything a bot, web or worker process shares, with no Discord in it.

One ``Core`` per process owns the database, the vault, the outbound HTTP session and the
services. The Discord client and the web app are front ends that call its services.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import aiohttp

from adapters.paper import SimulatedFeed
from bot.db import Database
from bot.errors import ConfigurationError
from bot.services.connections import ConnectionService
from bot.services.jobs import JobQueue
from bot.services.limits import LimitsService
from bot.services.linking import LinkingService
from bot.services.members import MemberService
from bot.services.notify import Notifier
from bot.services.signals import FANOUT_CONCURRENCY, SignalService
from bot.services.strategies import StrategyService
from bot.services.subscriptions import SubscriptionService
from bot.services.trading import TradingService
from bot.settings import KeySpec, Settings
from bot.vault import KEY_FILE_NAME, Vault, VaultError, load_or_create_local_key

log = logging.getLogger("tradecord.core")


class MissingKeyError(ConfigurationError):
    """No TRADECORD_KEYS with a real Discord token: the bot will not start."""


def resolve_keys(settings: Settings) -> list[KeySpec]:
    """Keys from ``TRADECORD_KEYS``; in local mode a key file is made on first start."""
    if settings.key_specs:
        return settings.key_specs
    if not settings.local_mode:
        raise MissingKeyError(
            "TRADECORD_KEYS: no encryption key is set, and Tradecord will not store broker tokens "
            "without one. Run `tradecord keys generate` and add the printed line to .env as "
            "TRADECORD_KEYS=<that line>."
        )
    try:
        keys, created = load_or_create_local_key(settings.tradecord_data_dir)
    except VaultError as e:  # readable by others: the message says how to fix it
        raise ConfigurationError(str(e)) from None
    except OSError as e:  # a file in the way of the folder, or no permission to it
        raise ConfigurationError(
            f"TRADECORD_DATA_DIR: cannot use {e.filename or settings.tradecord_data_dir} "
            f"({e.strerror}); point it at a folder Tradecord can write"
        ) from None
    except ValueError as e:  # never replaced: tokens stored under it would be lost with it
        path = settings.tradecord_data_dir / KEY_FILE_NAME
        raise ConfigurationError(
            f"{path}: {e}; restore it from a backup (broker tokens stored under it cannot be "
            "read without it)"
        ) from None
    if created:
        log.warning(
            "Local mode: created encryption key file %s (mode 0600). For a real deployment set "
            "TRADECORD_KEYS instead.",
            settings.tradecord_data_dir / "tradecord.key",
        )
    return keys


@dataclass
class Core:
    settings: Settings
    db: Database
    vault: Vault
    http: aiohttp.ClientSession
    members: MemberService = field(init=False)
    connections: ConnectionService = field(init=False)
    trading: TradingService = field(init=False)
    linking: LinkingService = field(init=False)
    limits: LimitsService = field(init=False)
    simulated_feed: SimulatedFeed = field(init=False)
    jobs: JobQueue = field(init=False)
    strategies: StrategyService = field(init=False)
    subscriptions: SubscriptionService = field(init=False)
    signals: SignalService = field(init=False)
    # Set by the front end that can reach Discord (bot process, or a REST-only client).
    notifier: Notifier | None = None

    def __post_init__(self) -> None:
        self.simulated_feed = SimulatedFeed()
        self.members = MemberService(self.db)
        self.connections = ConnectionService(self)
        self.trading = TradingService(self)
        self.linking = LinkingService(self)
        self.limits = LimitsService(self)
        self.jobs = JobQueue(self)
        self.strategies = StrategyService(self)
        self.subscriptions = SubscriptionService(self)
        self.signals = SignalService(self)  # registers its job handlers with self.jobs

    @classmethod
    async def open(
        cls, settings: Settings, *, migrate: bool = True, keys: list[KeySpec] | None = None
    ) -> Core:
        vault = Vault(keys or resolve_keys(settings))
        db = Database(
            settings.resolved_database_url,
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
            sqlite_synchronous=settings.sqlite_synchronous,
        )
        try:
            if migrate:
                await db.upgrade()
        except Exception:
            await db.close()
            raise
        # One pooled session for every broker call. Its socket limit lets a whole fan-out's
        # subscriptions wait on their brokers at once, and no more.
        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=FANOUT_CONCURRENCY))
        return cls(settings=settings, db=db, vault=vault, http=http)

    async def close(self) -> None:
        await self.strategies.settle()
        await self.http.close()
        await self.db.close()
