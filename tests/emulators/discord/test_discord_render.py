"""The terminal rendering of messages used by local mode's chat."""

from __future__ import annotations

from typing import Any

from emulators.discord import Message, components_index, render_message
from emulators.discord.state import FLAG_EPHEMERAL, FLAG_LOADING


def _message(**fields: Any) -> Message:
    return Message(id=1, channel_id=2, author_id=3, **fields)


def test_embed_fields_render_as_aligned_tables() -> None:
    message = _message(
        content="Order preview",
        embeds=[
            {
                "title": "Buy 10 AAPL",
                "description": "Limit order, good till cancelled",
                "fields": [
                    {"name": "Account", "value": "Margin ••••1234", "inline": True},
                    {"name": "Limit", "value": "$187.20", "inline": True},
                    {"name": "Est. cost", "value": "$1,872.00", "inline": True},
                    {"name": "Buying power after", "value": "$8,128.00", "inline": False},
                    {"name": "Warning", "value": "Market is closed", "inline": False},
                ],
                "footer": {"text": "Expires in 60 s"},
            }
        ],
    )
    lines = render_message(message).splitlines()
    assert lines[0] == "Order preview"
    assert lines[1].startswith("┌") and lines[-1].startswith("└")
    assert "│ BUY 10 AAPL" in lines
    names = next(line for line in lines if "Account" in line)
    values = lines[lines.index(names) + 1]
    # Inline fields sit side by side with each value under its name.
    for name, value in (("Account", "Margin"), ("Limit", "$187.20"), ("Est. cost", "$1,872.00")):
        assert names.index(name) == values.index(value)
    table = [line for line in lines if "Buying power after" in line or "Warning" in line]
    # Non-inline fields form a two-column name/value table with aligned values.
    assert table[0].index("$8,128.00") == table[1].index("Market is closed")
    assert lines[-2] == "│ Expires in 60 s"


def test_components_are_numbered_in_reading_order() -> None:
    message = _message(
        content="Confirm?",
        flags=FLAG_EPHEMERAL,
        components=[
            {
                "type": 1,
                "components": [
                    {"type": 2, "style": 3, "label": "Confirm", "custom_id": "ok"},
                    {"type": 2, "style": 2, "label": "Cancel", "custom_id": "no", "disabled": True},
                    {"type": 2, "style": 5, "label": "Docs", "url": "https://example.org/docs"},
                ],
            },
            {
                "type": 1,
                "components": [
                    {
                        "type": 3,
                        "custom_id": "acct",
                        "placeholder": "Choose an account",
                        "options": [
                            {"label": "Margin", "value": "m", "description": "Reg-T"},
                            {"label": "Futures", "value": "f", "default": True},
                        ],
                    }
                ],
            },
        ],
    )
    text = render_message(message, author="Tradecord")
    assert text.splitlines()[0] == "Tradecord (only you can see this)"
    assert "[1] Confirm  [2] Cancel (disabled)  [3] Docs ↗ https://example.org/docs" in text
    assert "[4] ▾ Choose an account (pick 1 option)" in text
    assert "    1) Margin — Reg-T" in text and "    2) Futures (selected)" in text
    index = components_index(message)
    assert [(c.number, c.kind, c.custom_id, c.disabled) for c in index] == [
        (1, "button", "ok", False),
        (2, "button", "no", True),
        (3, "link", None, False),
        (4, "select", "acct", False),
    ]


def test_loading_and_components_v2() -> None:
    assert "is thinking" in render_message(_message(flags=FLAG_LOADING))
    message = _message(
        components=[
            {
                "type": 17,
                "components": [
                    {"type": 10, "content": "## Positions"},
                    {
                        "type": 9,
                        "components": [{"type": 10, "content": "AAPL 10 @ 187.20"}],
                        "accessory": {
                            "type": 2,
                            "style": 4,
                            "label": "Close",
                            "custom_id": "close:AAPL",
                        },
                    },
                    {"type": 14},
                ],
            }
        ]
    )
    text = render_message(message)
    assert "│ ## Positions" in text and "│ [1] Close" in text
    assert [c.custom_id for c in components_index(message)] == ["close:AAPL"]
    assert message.text() == "## Positions\nAAPL 10 @ 187.20"


def test_mentions_and_timestamps_render_as_discord_shows_them() -> None:
    # /alerts-channel and /killswitch answers carry <#id>, <@id> and <t:…:R>; Discord shows
    # #general, @owner and a date, never the markup.
    known = {("channel", 11): "general", ("user", 22): "owner", ("role", 33): "Traders"}
    message = _message(
        content="Trade alerts for all strategies go to <#11>.",
        embeds=[
            {
                "description": "Last changed <t:1795708700:R> by <@22>.",
                "fields": [{"name": "Who", "value": "<@&33> and <@!99>"}],
            }
        ],
    )
    text = render_message(message, names=lambda kind, i: known.get((kind, i)))
    assert "go to #general." in text
    assert "Last changed 2026-11-26 15:58 UTC by @owner." in text
    assert "@Traders and <@!99>" in text  # an unknown id stays as it is
    assert "<#11>" in render_message(message)  # without names, as before


def test_markdown_shows_as_a_reader_sees_it() -> None:
    table = "Symbol  Side  Qty" + " " * 70 + "P&L"  # wider than the terminal
    url = "http://127.0.0.1:8080/webhook/2cb098f8-bba6-4960-891c-05efaf55e001/" + "k" * 32
    message = _message(
        content=f"**BUY 10 AAPL** · __day__ · ~~old~~ · `**kept**` · \\*not bold\\*\n{url}",
        embeds=[
            {
                "description": f"```\n{table}\nAAPL    long   10\n```\n```one line```",
                "fields": [
                    {"name": "Commands", "value": "`/help` — help"},
                    {"name": "\u200b", "value": "`/trade` — trade"},
                ],
            }
        ],
    )
    lines = render_message(message).splitlines()
    assert lines[0] == "BUY 10 AAPL · day · old · **kept** · *not bold*"
    assert lines[1] == url  # whole, not broken at a hyphen, so it can be copied
    # A code block keeps its lines as they are, without the fences; Discord scrolls it.
    assert f"│ {table}" in lines and "│ AAPL    long   10" in lines
    assert "│ one line" in lines
    assert not any("```" in line for line in lines)
    commands = next(i for i, line in enumerate(lines) if "/help" in line)
    assert lines[commands] == "│ Commands  /help — help"
    assert lines[commands + 1] == "│           /trade — trade"  # a blank name shows nothing


def test_text_right_after_a_closing_fence_is_shown() -> None:
    """/strategy create ends its JSON template with ```/strategy test sends …: the chat
    dropped that sentence with the fence."""
    message = _message(
        content='Created **X**.\n```json\n{"ticker": "{{ticker}}"}\n```/strategy test sends a '
        "test signal to **X** now: nothing is placed."
    )
    text = render_message(message, author="Tradecord")
    assert '{"ticker": "{{ticker}}"}' in text
    assert "/strategy test sends a test signal to X now" in text, text
    assert "json" not in text.replace('"', " ").split()  # an opening fence's language is not
