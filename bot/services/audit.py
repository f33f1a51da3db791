"""The audit trail: one row per thing that happened, never updated."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.db import insert_later
from bot.db_types import utcnow
from bot.models import AuditEvent


def record(
    session: AsyncSession,
    kind: str,
    *,
    member_id: int | None = None,
    connection_id: int | None = None,
    intent_id: str | None = None,
    at: datetime | None = None,
    **detail: Any,
) -> None:
    """Add an event to the caller's unit of work (it commits with the change it describes).

    ``at``: when it happened, when that was before now (a fill the broker reports late);
    a time ahead of ours (another clock's) is recorded as now."""
    now = utcnow()
    values = {
        "at": min(at, now) if at is not None else now,
        "kind": kind,
        "member_id": member_id,
        "connection_id": connection_id,
        "intent_id": intent_id,
        "detail": {k: _jsonable(v) for k, v in detail.items()},
    }
    insert_later(session, AuditEvent, values)


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)
