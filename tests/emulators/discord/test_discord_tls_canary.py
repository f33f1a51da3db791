"""Canary: a bot that patches nothing reaches the emulator through DNS and TLS alone.

discord.py keeps its real ``https://discord.com/api/v10`` and ``wss://gateway.discord.gg``;
only the connector differs: a resolver that sends those names to 127.0.0.1 and an SSL
context trusting a throw-away certificate the emulator serves.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import discord
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from emulators.discord import DiscordEmulator

DISCORD_HOSTS = ("discord.com", "gateway.discord.gg", "cdn.discordapp.com")


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "discord-emulator")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    *(x509.DNSName(h) for h in DISCORD_HOSTS),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class ToEmulator(AbstractResolver):
    """Resolves Discord's host names to the emulator (and nothing else: tests stay offline)."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host not in DISCORD_HOSTS:
            raise OSError(f"{host} is not resolvable in tests")
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": self.port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        return None


async def test_unpatched_bot_over_tls(
    tmp_path: Path, make_bot: Any, discord_errors: Any, run_bot: Any
) -> None:
    cert, key = self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    token = "MTAw.tls.bot-token"
    async with DiscordEmulator(bot_token=token, ssl_context=server_ctx) as emu:
        alice = emu.add_user("alice")
        emu.add_member(emu.guild.id, alice.id)
        connector = aiohttp.TCPConnector(resolver=ToEmulator(emu.port), ssl=client_ctx)
        # make_bot points Route.BASE at the fixture's emulator; this test restores Discord's own.
        old_base, old_gateway = (
            discord.http.Route.BASE,
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY,
        )
        discord.http.Route.BASE = "https://discord.com/api/v10"
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL("wss://gateway.discord.gg/")
        try:
            bot = make_bot(emu, connector=connector)
            async with run_bot(bot, token):
                await bot.tree.sync()
                assert [s.resume_url for s in emu.sessions] == ["wss://gateway.discord.gg"]
                result = await emu.slash(alice.id, "ping")
                assert (await result.message()).content == "pong"
                result = await emu.slash(alice.id, "alert", {"symbol": "NVDA"})
                await result.message()
                assert emu.messages(emu.trade_alerts.id)[-1].embeds[0]["title"] == "Alert: NVDA"
        finally:
            discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = (
                old_base,
                old_gateway,
            )
        assert emu.unmodelled_requests == []
