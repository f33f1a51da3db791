"""What one subscription's run of a signal works with: the plan it follows (stored as JSON in
its intents, so a re-run follows the plan it started with), its context and its result. The
execution, its approval and its alerts share them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from adapters.models import Bracket, OrderType, Quote, Side, TimeInForce
from bot.automation_models import Subscription
from bot.models import Connection, OrderIntent
from bot.services.trading import bracket_json, bracket_of, order_terms, qty
from bot.signal_format import Signal, StopLoss, StopLossType, TakeProfit, exit_default
from bot.wording import plural


@dataclass(slots=True)
class Leg:
    name: str  # "exit" | "entry"
    side: Side
    quantity: Decimal
    order_type: OrderType = OrderType.MARKET
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    time_in_force: TimeInForce | None = None
    bracket: Bracket | None = None
    opens_position: bool = False  # an entry with no position in the ticker before it
    trail_amount: Decimal | None = None  # a trailing stop: one of these two
    trail_percent: Decimal | None = None
    # The quote a dollar or equity sized market entry was sized at: an approval card says it,
    # as the click may come at another price.
    sized_at: Decimal | None = None
    # An exit: the average price of the position it closes, so its fill can say the P&L.
    position_average: Decimal | None = None
    extended_hours: bool = False  # may fill before the open and after the close

    def to_json(self) -> dict[str, Any]:
        b = self.bracket
        return {
            "name": self.name,
            "side": self.side.value,
            "quantity": str(self.quantity),
            "order_type": self.order_type.value,
            "limit_price": decimal_text(self.limit_price),
            "stop_price": decimal_text(self.stop_price),
            "time_in_force": self.time_in_force.value if self.time_in_force else None,
            "bracket": bracket_json(b),
            "opens_position": self.opens_position,
            "trail_amount": decimal_text(self.trail_amount),
            "trail_percent": decimal_text(self.trail_percent),
            "sized_at": decimal_text(self.sized_at),
            "position_average": decimal_text(self.position_average),
            "extended_hours": self.extended_hours,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Leg:
        return cls(
            name=d["name"],
            side=Side(d["side"]),
            quantity=Decimal(d["quantity"]),
            order_type=OrderType(d["order_type"]),
            limit_price=_d(d.get("limit_price")),
            stop_price=_d(d.get("stop_price")),
            time_in_force=TimeInForce(d["time_in_force"]) if d.get("time_in_force") else None,
            bracket=bracket_of(d.get("bracket")),
            opens_position=bool(d.get("opens_position")),
            trail_amount=_d(d.get("trail_amount")),
            trail_percent=_d(d.get("trail_percent")),
            sized_at=_d(d.get("sized_at")),
            position_average=_d(d.get("position_average")),
            extended_hours=d.get("extended_hours") is True,
        )

    def describe(self, ticker: str) -> str:
        """buy 5 AAPL; buy 5 AAPL limit at $150.00: an approval shows the price it approves."""
        what = f"{self.side.value} {qty(self.quantity)} {ticker}"
        if self.order_type is OrderType.MARKET:
            return what
        terms = order_terms(
            self.order_type,
            self.limit_price,
            self.stop_price,
            self.trail_amount,
            self.trail_percent,
        )
        return f"{what} {terms}" + (", extended hours" if self.extended_hours else "")


@dataclass(slots=True)
class Plan:
    cancels: list[str] = field(default_factory=list)  # broker order ids of the ticker
    legs: list[Leg] = field(default_factory=list)
    # Why something the signal could have done is not done (entry refused, nothing to do).
    note_code: str | None = None
    note: str | None = None
    # The position it was planned from: an approval clicked later must find it unchanged.
    planned_from: Decimal | None = None

    def leg(self, name: str) -> Leg | None:
        return next((leg for leg in self.legs if leg.name == name), None)

    def summary(self, ticker: str) -> str:
        parts = []
        if self.cancels:
            parts.append(
                f"cancel {len(self.cancels)} open {ticker} order{plural(len(self.cancels))}"
            )
        for leg in self.legs:
            parts.append(f"{'exit: ' if leg.name == 'exit' else ''}{leg.describe(ticker)}")
        text = "; then ".join(parts) if parts else "nothing to do"
        return f"{text} ({self.note})" if self.note and parts else (self.note or text)

    def to_json(self) -> dict[str, Any]:
        return {
            "cancels": list(self.cancels),
            "legs": [leg.to_json() for leg in self.legs],
            "note_code": self.note_code,
            "note": self.note,
            **({"planned_from": str(self.planned_from)} if self.planned_from is not None else {}),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Plan:
        return cls(
            list(d.get("cancels") or []),
            [Leg.from_json(x) for x in d.get("legs") or []],
            d.get("note_code"),
            d.get("note"),
            Decimal(d["planned_from"]) if d.get("planned_from") is not None else None,
        )


@dataclass(slots=True)
class Result:
    status: str
    reason_code: str | None = None
    reason: str | None = None
    plan: Plan | None = None
    approval_expires_at: datetime | None = None
    orders: list[OrderIntent] = field(default_factory=list)


@dataclass(slots=True)
class ExecContext:
    signal_id: str
    signal: Signal
    strategy_id: str
    strategy_name: str
    guild_id: int
    max_quantity: Decimal | None
    execution_id: int
    subscription: Subscription
    connection: Connection | None
    member_discord_id: int
    public_name: str | None  # set only when the member opted in
    channel_id: int | None
    # The strategy's owner (a member id), who alone sends its signals; None: not looked up.
    owner_member_id: int | None = None
    approved: bool = False
    phases: list[dict[str, Any]] = field(default_factory=list)
    # Intents an earlier run left (looked up for the whole signal at once); None: look up.
    existing: dict[str, OrderIntent] | None = None
    # Part of a fan-out, which posts its subscribers' channel lines together once all ran.
    in_fanout: bool = False
    # This run's plan once made: a refusal raised before any order still says what it was.
    plan: Plan | None = None
    # Why the signal is too old to start trading on now (it waited in the queue), if it is.
    stale: str | None = None
    # When the webhook stored the signal: orders placed after it are not its to cancel.
    received_at: datetime | None = None
    # The price the last quote-priced size was worked out at (``Leg.sized_at``).
    sized_at: Decimal | None = None
    # The bracket a risk-sized entry was sized from: placed as it is, not priced again.
    sized_bracket: Bracket | None = None
    # What this run cancelled, for its result DM whatever the result (a refusal after the
    # cancels, an exit that did not fill): the orders get no DM of their own.
    cancelled: str | None = None
    cancelled_count: int = 0
    # The ticker's quote while the plan is made: sizing, the bracket and an entry limit price
    # from one moment, and one request to the broker instead of three.
    quote: Quote | None = None

    @property
    def take_profit(self) -> TakeProfit | None:
        """The signal's take-profit (unless the subscription ignores them, as TradersPost's
        "Use signal take profit" left off), else the subscription's own."""
        default = self._default_exit(self.subscription.take_profit)
        sent = self.signal.take_profit if self.subscription.signal_take_profit else None
        return sent or (cast(TakeProfit, exit_default(default, "take_profit")) if default else None)

    @property
    def stop_loss(self) -> StopLoss | None:
        """The signal's stop-loss, else the subscription's own for entries without one. A
        signal's distance without a type takes the subscription's type: with "trail 2%" set,
        ``{"percent": 5}`` trails by 5%."""
        default = self._default_exit(self.subscription.stop_loss)
        own = cast(StopLoss, exit_default(default, "stop_loss")) if default else None
        sent = self.signal.stop_loss
        if sent is None:
            return own
        trails = own is not None and own.type is StopLossType.TRAILING_STOP
        if trails and not sent.typed and sent.stop_price is None:
            return StopLoss(
                StopLossType.TRAILING_STOP, trail_amount=sent.amount, trail_percent=sent.percent
            )
        return sent

    def _default_exit(self, text: str | None) -> str | None:
        # An extended-hours order takes no bracket (the exits could not work before the open
        # or after the close): the subscription's defaults leave it as the signal sent it.
        return None if self.signal.extended_hours else text


def decimal_text(d: Decimal | None) -> str | None:
    return None if d is None else format(d, "f")


def _d(v: Any) -> Decimal | None:
    return None if v is None else Decimal(v)
