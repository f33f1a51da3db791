"""Fixtures: an emulator, discord.py pointed at it, a real test bot, and failure guards.

discord.py only *logs* exceptions raised inside command handlers and views, and an
interaction that was never answered just times out. ``discord_errors`` turns every ERROR
record of the ``discord`` loggers into a test failure, and the ``emu`` fixture fails the
test if the bot called a route the emulator does not model.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import discord
import pytest
import yarl
from discord import app_commands
from discord.ext import commands

from emulators.discord import DiscordEmulator

TOKEN = "MTAwMDAwMDAwMDAwMDAwMDAw.emulated.bot-token-for-tests"


class ErrorLog(logging.Handler):
    """Collects ERROR records; a test that provokes one on purpose calls ``expect``."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self._expected: list[re.Pattern[str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def expect(self, pattern: str) -> None:
        self._expected.append(re.compile(pattern, re.S))

    @staticmethod
    def describe(record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f" | {type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        return f"{record.name}: {text}"

    def unexpected(self) -> list[str]:
        texts = [self.describe(r) for r in self.records]
        return [t for t in texts if not any(p.search(t) for p in self._expected)]


@pytest.fixture
def bot_token() -> str:
    return TOKEN


@pytest.fixture
def discord_errors() -> Iterator[ErrorLog]:
    handler = ErrorLog()
    logger = logging.getLogger("discord")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
    problems = handler.unexpected()
    if problems:
        pytest.fail("discord.py logged errors:\n" + "\n".join(problems))


@pytest.fixture
async def emu(discord_errors: ErrorLog) -> AsyncIterator[DiscordEmulator]:
    emulator = DiscordEmulator(bot_token=TOKEN)
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()
    if emulator.unmodelled_requests:
        pytest.fail(f"the bot called unmodelled Discord routes: {emulator.unmodelled_requests}")


BOT = {"Authorization": f"Bot {TOKEN}"}


@pytest.fixture
async def api() -> AsyncIterator[tuple[DiscordEmulator, aiohttp.ClientSession]]:
    """The emulator, and a session that calls its REST API as the bot does (token and all)."""
    async with (
        DiscordEmulator(bot_token=TOKEN) as emu,
        aiohttp.ClientSession(headers=BOT) as session,
    ):
        yield emu, session


def form_errors(body: dict[str, Any], *path: str | int) -> list[str]:
    """The codes of a 50035 Invalid Form Body answer's errors at ``path``."""
    node = body["errors"]
    for part in path:
        node = node[str(part)]
    return [e["code"] for e in node["_errors"]]


@contextlib.contextmanager
def _pointed_at(emulator: DiscordEmulator) -> Iterator[None]:
    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = emulator.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(emulator.gateway_url)
    try:
        yield
    finally:
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway


@pytest.fixture
def discord_at_emulator(emu: DiscordEmulator) -> Iterator[DiscordEmulator]:
    """Point discord.py's REST base and gateway at the emulator; restored afterwards."""
    with _pointed_at(emu):
        yield emu


@pytest.fixture
def pointed_at() -> Callable[[DiscordEmulator], contextlib.AbstractContextManager[None]]:
    """``with pointed_at(other_emulator):`` for tests that run a second emulator."""
    return _pointed_at


@contextlib.asynccontextmanager
async def _running(client: discord.Client, token: str = TOKEN) -> AsyncIterator[None]:
    timeout = 10.0
    task = asyncio.create_task(client.start(token))
    ready = asyncio.create_task(client.wait_until_ready())
    try:
        done, _ = await asyncio.wait(
            {task, ready}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            task.result()
            raise AssertionError("the bot stopped before it was ready")
        if ready not in done:
            raise AssertionError(f"the bot was not ready within {timeout}s")
        yield
    finally:
        ready.cancel()
        await client.close()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


@pytest.fixture
def run_bot() -> Callable[..., contextlib.AbstractAsyncContextManager[None]]:
    """``async with run_bot(bot): ...`` runs ``bot.start(token)`` for the block."""
    return _running


# ---------------------------------------------------------------------- the test bot


class ConfirmView(discord.ui.View):
    """Confirm/Cancel that only the member who asked may press (R. Danny style)."""

    def __init__(self, owner_id: int) -> None:
        super().__init__(timeout=60)
        self.owner_id = owner_id

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.user.id != self.owner_id:
            await interaction.response.send_message(
                "This confirmation is not yours.", ephemeral=True
            )
            return False
        return True

    @discord.ui.button(
        label="Confirm", style=discord.ButtonStyle.success, custom_id="trade:confirm"
    )
    async def confirm(
        self, interaction: discord.Interaction, button: discord.ui.Button[Any]
    ) -> None:
        for child in self.children:
            if isinstance(child, discord.ui.Button):
                child.disabled = True
        await interaction.response.edit_message(content="Order placed", view=self)
        self.stop()

    @discord.ui.button(
        label="Cancel", style=discord.ButtonStyle.secondary, custom_id="trade:cancel"
    )
    async def cancel(
        self, interaction: discord.Interaction, button: discord.ui.Button[Any]
    ) -> None:
        await interaction.response.edit_message(content="Cancelled", embed=None, view=None)
        self.stop()


class AccountSelect(discord.ui.View):
    @discord.ui.select(
        custom_id="account",
        placeholder="Choose an account",
        options=[
            discord.SelectOption(label="Margin", value="margin", description="Reg-T margin"),
            discord.SelectOption(label="Futures", value="futures"),
            discord.SelectOption(label="Cash", value="cash"),
        ],
    )
    async def pick(self, interaction: discord.Interaction, select: discord.ui.Select[Any]) -> None:
        await interaction.response.send_message(f"Using {select.values[0]}", ephemeral=True)


class RenameModal(discord.ui.Modal, title="Rename connection"):
    name: discord.ui.TextInput[Any] = discord.ui.TextInput(
        label="New name", custom_id="name", min_length=3, max_length=32
    )
    note: discord.ui.TextInput[Any] = discord.ui.TextInput(
        label="Note", custom_id="note", required=False, style=discord.TextStyle.paragraph
    )

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(
            f"Renamed to {self.name.value} ({self.note.value or 'no note'})", ephemeral=True
        )


class TestBot(commands.Bot):
    """A real discord.py bot with one of each interaction kind Tradecord uses."""

    __test__ = False

    def __init__(self, alerts_channel_id: int, **kwargs: Any) -> None:
        kwargs.setdefault("intents", discord.Intents.default())
        super().__init__(command_prefix=commands.when_mentioned, guild_ready_timeout=0.05, **kwargs)
        self.alerts_channel_id = alerts_channel_id
        self.seen: list[Any] = []
        self._add_commands()

    def confirm_view(self, owner_id: int) -> ConfirmView:
        return ConfirmView(owner_id)

    def _add_commands(self) -> None:
        tree = self.tree

        @tree.command(description="Check the bot is alive")
        async def ping(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("pong")

        @tree.command(description="Place an order")
        @app_commands.describe(symbol="Ticker", quantity="Shares", side="Buy or sell")
        @app_commands.choices(
            side=[
                app_commands.Choice(name="Buy", value="buy"),
                app_commands.Choice(name="Sell", value="sell"),
            ]
        )
        async def trade(
            interaction: discord.Interaction,
            symbol: str,
            quantity: app_commands.Range[int, 1, 10000],
            side: app_commands.Choice[str],
            limit: float | None = None,
        ) -> None:
            self.seen.append(("trade", symbol, quantity, side.value, limit))
            embed = discord.Embed(
                title=f"{side.name} {quantity} {symbol}", description="Confirm the order"
            )
            embed.add_field(name="Account", value="Paper", inline=True)
            embed.add_field(name="Limit", value=f"{limit:.2f}" if limit else "Market", inline=True)
            embed.set_footer(text="Expires in 60 s")
            await interaction.response.send_message(
                embed=embed, view=ConfirmView(interaction.user.id), ephemeral=True
            )

        @tree.command(description="Choose the account to trade with")
        async def account(interaction: discord.Interaction) -> None:
            await interaction.response.send_message(
                "Pick an account", view=AccountSelect(), ephemeral=True
            )

        @tree.command(description="Rename a connection")
        async def rename(interaction: discord.Interaction) -> None:
            await interaction.response.send_modal(RenameModal())

        orders = ["AAPL-1001", "MSFT-1002", "TSLA-1003", "AAPL-1004"]

        async def order_autocomplete(
            interaction: discord.Interaction, current: str
        ) -> list[app_commands.Choice[str]]:
            return [app_commands.Choice(name=o, value=o) for o in orders if current.upper() in o][
                :25
            ]

        @tree.command(description="Cancel an open order")
        @app_commands.autocomplete(order=order_autocomplete)
        async def cancel(interaction: discord.Interaction, order: str) -> None:
            await interaction.response.send_message(f"Cancelled {order}", ephemeral=True)

        @tree.command(description="A slow report")
        async def report(interaction: discord.Interaction) -> None:
            await interaction.response.defer(ephemeral=True, thinking=True)
            await interaction.followup.send("Crunching numbers")
            embed = discord.Embed(title="P&L", description="+$120.00")
            await interaction.edit_original_response(content="Report ready", embed=embed)
            await interaction.followup.send(
                "Details attached",
                file=discord.File(io.BytesIO(b"symbol,pnl\nAAPL,120\n"), "report.csv"),
                ephemeral=True,
            )

        @tree.command(description="Post a trade alert")
        async def alert(interaction: discord.Interaction, symbol: str) -> None:
            channel = self.get_channel(self.alerts_channel_id)
            assert isinstance(channel, discord.TextChannel)
            embed = discord.Embed(title=f"Alert: {symbol}", description="Filled 10 @ 187.20")
            await channel.send(embed=embed, allowed_mentions=discord.AllowedMentions.none())
            await interaction.response.send_message("Alert posted", ephemeral=True)

        @tree.command(description="Send me my positions privately")
        async def dmme(interaction: discord.Interaction) -> None:
            await interaction.user.send("Your positions: AAPL 10")
            await interaction.response.send_message("Sent you a DM", ephemeral=True)

        @tree.command(description="Who is this member")
        async def whois(interaction: discord.Interaction, member: discord.Member) -> None:
            roles = [r.name for r in member.roles if not r.is_default()]
            await interaction.response.send_message(
                f"{member.display_name}: {', '.join(roles) or 'no roles'}"
            )

        @tree.command(description="Server settings")
        @app_commands.default_permissions(manage_guild=True)
        @app_commands.guild_only()
        async def settings(interaction: discord.Interaction) -> None:
            perms = interaction.permissions
            self.seen.append(("settings", perms.manage_guild))
            await interaction.response.send_message("settings ok", ephemeral=True)

        paper = app_commands.Group(name="paper", description="Paper trading")

        @paper.command(name="reset", description="Reset the paper account")
        async def paper_reset(interaction: discord.Interaction, balance: int = 100000) -> None:
            await interaction.response.send_message(f"Paper reset to ${balance:,}", ephemeral=True)

        strategy = app_commands.Group(name="strategy", description="Strategies")
        signals = app_commands.Group(name="signals", description="Signals", parent=strategy)

        @strategy.command(name="create", description="Create a strategy")
        async def strategy_create(
            interaction: discord.Interaction, name: str, channel: discord.TextChannel
        ) -> None:
            await interaction.response.send_message(f"Strategy {name} posts to #{channel.name}")

        @signals.command(name="test", description="Send a test signal")
        async def signals_test(interaction: discord.Interaction, dry_run: bool) -> None:
            await interaction.response.send_message(f"dry_run={dry_run}")

        tree.add_command(paper)
        tree.add_command(strategy)


@pytest.fixture
def make_bot(discord_at_emulator: DiscordEmulator) -> Callable[..., TestBot]:
    def factory(emulator: DiscordEmulator | None = None, **kwargs: Any) -> TestBot:
        return TestBot((emulator or discord_at_emulator).trade_alerts.id, **kwargs)

    return factory


@pytest.fixture
async def bot(
    make_bot: Callable[..., TestBot],
    run_bot: Callable[..., contextlib.AbstractAsyncContextManager[None]],
) -> AsyncIterator[TestBot]:
    """The test bot, started against the emulator, with its commands synced."""
    client = make_bot()
    async with run_bot(client):
        await client.tree.sync()
        yield client
