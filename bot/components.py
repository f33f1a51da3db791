"""Discord components that services and web pages send (as JSON) and cogs handle.

Custom ids start with ``tc:`` and carry only ids: the handler re-checks ownership and state
in the database, so a click works in whichever bot process receives it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.models import Account, Environment
from adapters.registry import get_adapter_class
from bot.models import Connection

ACCOUNT_SELECT = r"tc:acct:(?P<connection>\d+):(?P<mode>live|paper)"
TYPE_WORDS = {"cash": "Cash", "margin": "Margin", "futures": "Futures", "crypto": "Crypto"}


def tradable(broker: str, account: Account) -> bool:
    """Whether ``broker`` lets Tradecord trade anything in an account of this type."""
    return bool(get_adapter_class(broker).capabilities.asset_classes.get(account.type))


def account_select_id(connection_id: int, mode: str) -> str:
    return f"tc:acct:{connection_id}:{mode}"


def _trades(account_type: str, futures_here: bool) -> str:
    if account_type == "futures":
        return " · futures trade here"
    if futures_here and account_type in ("cash", "margin"):
        return " · stocks and ETFs, no futures"
    return ""


MENU_OPTIONS = 25  # Discord's most for a select


def account_menus(
    connection: Connection, accounts: list[Account], held: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """One select per environment that has accounts: type and masked number, nothing more.
    ``held``: account id → the member's other connection trading in it (said, as choosing it
    here is refused)."""
    held = held or {}
    # An account the broker's API trades nothing in (TradeStation's crypto accounts) is not
    # offered: chosen, every order and balance there would be refused.
    accounts = [a for a in accounts if tradable(connection.broker, a)]
    rows: list[dict[str, Any]] = []
    for env in (Environment.LIVE, Environment.PAPER):
        # The classic mistake is a margin account chosen for futures: where both are offered,
        # each option says which trades futures and which does not.
        futures_here = any(a.environment is env and a.type.value == "futures" for a in accounts)
        options = [
            {
                "label": f"{TYPE_WORDS.get(a.type.value, a.type.value)} {a.masked}"[:100],
                "value": a.id,
                "description": (
                    f"{env.value} · {a.type.value} account"
                    + (
                        f" · already “{held[a.id]}”'s"
                        if a.id in held
                        else _trades(a.type.value, futures_here)
                    )
                )[:100],
                "default": bool(
                    (chosen := connection.account(env.value)) and chosen.account_id == a.id
                ),
            }
            for a in accounts
            if a.environment is env
        ]
        if not options:
            continue
        # A select holds 25 options: the chosen account is kept among them, and the menu says
        # how many are left out rather than leave a member looking for theirs.
        left_out = len(options) - MENU_OPTIONS
        if left_out > 0:
            options.sort(key=lambda o: not o["default"])
        options = options[:MENU_OPTIONS]
        shown = f" ({MENU_OPTIONS} of {MENU_OPTIONS + left_out} shown)" if left_out > 0 else ""
        rows.append(
            {
                "type": 1,
                "components": [
                    {
                        "type": 3,
                        "custom_id": account_select_id(connection.id, env.value),
                        "placeholder": (
                            f"Choose the {env.value} account for {connection.name}"[
                                : 150 - len(shown)
                            ]
                            + shown
                        ),
                        "min_values": 1,
                        "max_values": 1,
                        "options": options,
                    }
                ],
            }
        )
    return rows


APPROVAL_BUTTON = r"tc:appr:(?P<action>approve|reject):(?P<intent>[0-9a-f-]{36})"


def no_accounts_text(connection_name: str) -> str:
    """What to do when the login linked to a connection has no account to choose (in the modes
    it was linked for): said instead of menus that would be empty."""
    return (
        f"The login linked to “{connection_name}” has no account to choose yet, so it cannot "
        "trade. If you opened one just now, run /accounts again in a few minutes; if you signed "
        f"in with another login by mistake, /disconnect “{connection_name}” and /connect again "
        "with the right one."
    )


def approval_buttons(intent_id: str) -> list[dict[str, Any]]:
    """Approve / Reject for a signal waiting on its member (any draft id of it works)."""
    return [
        {
            "type": 1,
            "components": [
                {
                    "type": 2,
                    "style": 3,
                    "label": "Approve",
                    "custom_id": f"tc:appr:approve:{intent_id}",
                },
                {
                    "type": 2,
                    "style": 4,
                    "label": "Reject",
                    "custom_id": f"tc:appr:reject:{intent_id}",
                },
            ],
        }
    ]
