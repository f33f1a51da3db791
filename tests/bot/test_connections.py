from __future__ import annotations

from bot.core import Core
from bot.db import Database
from bot.models import Connection
from bot.settings import Settings, load_settings


async def test_remote_adapters_take_every_url_from_settings(
    settings: Settings, db: Database
) -> None:
    values = {k: v for k, v in settings.model_dump().items() if v is not None}
    values.update(
        tradecord_alpaca_client_id="id",
        tradecord_alpaca_api_url="http://127.0.0.1:1/l",
        tradecord_alpaca_paper_api_url="http://127.0.0.1:1/p",
        tradecord_alpaca_data_url="http://127.0.0.1:1/d",
    )
    core = await Core.open(load_settings(**values), migrate=False)
    try:
        member_id = await core.members.ensure(9)
        conn = Connection(
            id=77,
            member_id=member_id,
            broker="alpaca",
            name="A",
            name_key="a",
            settings={"environment": "paper"},
        )
        adapter = await core.connections.adapter_for(conn)
        assert adapter.data_url == "http://127.0.0.1:1/d"  # type: ignore[attr-defined]
        # A token authorized for paper only reaches the paper host.
        assert {e.value: u for e, u in adapter.ctx.api_urls.items()} == {
            "paper": "http://127.0.0.1:1/p"
        }
    finally:
        await core.close()
