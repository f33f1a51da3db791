"""Members: created on first contact, each with the built-in paper connection."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from adapters.paper import paper_account_id
from bot.db import Database
from bot.errors import InvalidInput
from bot.models import Connection, ConnectionAccount, ConnectionStatus, Member
from bot.services import audit

PAPER_BROKER = "paper"
PAPER_CONNECTION_NAME = "Tradecord Paper"


class MemberService:
    def __init__(self, db: Database) -> None:
        self.db = db
        # Discord ids known to exist: a cache that saves one query per command, never the truth.
        self._known: dict[int, int] = {}

    async def ensure(self, discord_user_id: int) -> int:
        """The member's id, creating the member and their paper connection on first contact.

        Safe when two processes see the same new member at once: the unique Discord id makes
        one insert win and the other re-reads it.
        """
        member_id = self._known.get(discord_user_id)
        if member_id is not None:
            return member_id
        member_id = await self._find(discord_user_id)
        if member_id is None:
            try:
                member_id = await self._create(discord_user_id)
            except IntegrityError:
                member_id = await self._find(discord_user_id)
                assert member_id is not None
        self._known[discord_user_id] = member_id
        return member_id

    async def _find(self, discord_user_id: int) -> int | None:
        async with self.db.session() as s:
            return await s.scalar(
                select(Member.id).where(Member.discord_user_id == discord_user_id)
            )

    async def _create(self, discord_user_id: int) -> int:
        async with self.db.transaction() as s:
            member = Member(discord_user_id=discord_user_id)
            paper = Connection(
                broker=PAPER_BROKER,
                name=PAPER_CONNECTION_NAME,
                name_key=PAPER_CONNECTION_NAME.casefold(),
                status=ConnectionStatus.ACTIVE,
                builtin=True,
            )
            member.connections.append(paper)
            s.add(member)
            await s.flush()
            s.add(
                ConnectionAccount(
                    connection_id=paper.id,
                    mode="paper",
                    account_id=paper_account_id(paper.id),
                    account_type="margin",
                    label=PAPER_CONNECTION_NAME,
                )
            )
            audit.record(s, "member.created", member_id=member.id)
            return member.id

    async def get_with_connections(self, discord_user_id: int) -> Member:
        member_id = await self.ensure(discord_user_id)
        async with self.db.session() as s:
            member = await s.scalar(
                select(Member)
                .where(Member.id == member_id)
                .options(selectinload(Member.connections).selectinload(Connection.accounts))
            )
        assert member is not None
        return member

    async def set_plan(
        self, discord_user_id: int, plan: str, plans: dict[str, int], *, by: int
    ) -> tuple[str | None, str]:
        """(the plan stored before, None for never set; the plan now)."""
        name = plan.strip().lower()
        if name not in plans:
            raise InvalidInput(f"There is no plan “{plan}”. Plans: {', '.join(plans)}.")
        member_id = await self.ensure(discord_user_id)
        async with self.db.transaction() as s:
            member = await s.get(Member, member_id)
            assert member is not None
            old, member.plan = member.plan, name
            audit.record(
                s, "member.plan_set", member_id=member_id, old=old, new=name, by_discord_user_id=by
            )
        return old, name
