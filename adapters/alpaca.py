"""Alpaca: Trading API v2 through Alpaca Connect (OAuth 2.0).

What shapes this module:
- The host selects the environment (api.alpaca.markets live, paper-api.alpaca.markets paper);
  one token may reach the live account, the paper account, or both. There is no account
  list: ``GET /v2/account`` on each host the connection has is the list.
- Tokens never expire and come without a refresh token, so a 401 means the member must re-link
  (``TokenProvider.refresh`` raises ``AuthorizationExpired``; ``StaticToken`` already does).
- Quotes come from a third host, the market data API. Its base URL is
  ``AdapterContext.extra["data_url"]`` when set (settings / local mode), else
  ``default_data_url``.
- Stocks, ETFs and crypto trade in the same account; cash vs margin is the ``multiplier``.
  No futures at all.
- Errors are ``{"code": 8 digits, "message": ...}``; the message is what tells cases apart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any, ClassVar
from urllib.parse import quote

import aiohttp

from adapters import symbols
from adapters.base import (
    MAX_RETRY_WAIT,
    AdapterContext,
    AllReady,
    Capabilities,
    HttpBrokerAdapter,
    HttpResponse,
    OAuthSpec,
    RateLimit,
    dec,
)
from adapters.errors import (
    AssetClassNotSupported,
    AuthorizationExpired,
    BrokerError,
    BrokerUnavailable,
    InsufficientBuyingPower,
    InvalidOrder,
    OrderNotCancelable,
    OrderNotFound,
    OrderNotReplaceable,
    OrderStateUnknown,
    RateLimited,
    SymbolNotFound,
    wait_text,
)
from adapters.models import (
    Account,
    AccountRef,
    AccountType,
    AssetClass,
    Balance,
    Environment,
    Order,
    OrderChange,
    OrderRequest,
    OrderStatus,
    OrderType,
    OrderUpdate,
    Position,
    Quote,
    Side,
    SubmissionHint,
    TimeInForce,
    mask_account,
)
from adapters.registry import register

log = logging.getLogger("tradecord.adapters.alpaca")

ALL_TYPES = frozenset(OrderType)

ORDER_TYPES = {
    "market": OrderType.MARKET,
    "limit": OrderType.LIMIT,
    "stop": OrderType.STOP,
    "stop_limit": OrderType.STOP_LIMIT,
    "trailing_stop": OrderType.TRAILING_STOP,  # stop_price is where it stands now (hwm)
}
TIME_IN_FORCE = {
    "day": TimeInForce.DAY,
    "gtc": TimeInForce.GTC,
    "ioc": TimeInForce.IOC,
    "fok": TimeInForce.FOK,
    "opg": TimeInForce.OPG,  # market/limit on open: the opening auction only
    "cls": TimeInForce.CLS,  # market/limit on close: the closing auction only
}
ASSET_CLASSES = {
    "us_equity": AssetClass.EQUITY,
    "crypto": AssetClass.CRYPTO,
    "us_option": AssetClass.OPTION,
}
# Alpaca status -> ours; open-ish statuses become PARTIALLY_FILLED once anything filled.
STATUSES = {
    "new": OrderStatus.OPEN,
    "partially_filled": OrderStatus.PARTIALLY_FILLED,
    "filled": OrderStatus.FILLED,
    "done_for_day": OrderStatus.OPEN,  # resumes next session
    "canceled": OrderStatus.CANCELLED,
    "expired": OrderStatus.EXPIRED,
    "replaced": OrderStatus.REPLACED,  # superseded by the order in replaced_by
    "pending_cancel": OrderStatus.OPEN,  # still working until the cancel lands
    "pending_replace": OrderStatus.OPEN,
    "accepted": OrderStatus.PENDING,  # received, not routed (e.g. market closed)
    "pending_new": OrderStatus.PENDING,
    "accepted_for_bidding": OrderStatus.OPEN,
    "stopped": OrderStatus.OPEN,
    "rejected": OrderStatus.REJECTED,
    "suspended": OrderStatus.PENDING,
    "calculated": OrderStatus.FILLED,
    "held": OrderStatus.PENDING,  # a bracket exit waiting for its entry to fill
}
_WORKING = {OrderStatus.OPEN, OrderStatus.PENDING}


class DuplicateClientOrderId(InvalidOrder):
    """Alpaca already has an order under this client order id: this one, sent before."""


class NotEnoughToSell(InvalidOrder):
    """Alpaca's "insufficient qty available": a sell above what it can take now. Whether other
    open orders hold the rest, or the sell goes past the position, only the position tells
    (``_explain_not_enough`` reads it); this message says neither."""

    def __init__(
        self,
        user_message: str,
        *,
        detail: str,
        available: Decimal | None,
        vendor_code: str | None,
    ) -> None:
        super().__init__(user_message, vendor_code=vendor_code)
        self.detail, self.available = detail, available


_ASSET_RE = re.compile(r'asset "?([^"]+?)"? (?:not found|is not tradable|is not fractionable)')
_QTY_RE = re.compile(r"requested: ([\d.]+), available: ([\d.]+)")
_STATE_RE = re.compile(r'already in "?(\w+)"? state')
_SUB_PENNY_RE = re.compile(r"invalid ([\w.]+) ([\d.]+)\. sub-penny")
# "opg orders must be submitted after 7:00pm and before 9:28am" (403 40310000, seen in
# third-party logs); any other refusal naming "opg/cls order(s)" is about the auction too.
_AUCTION_WINDOW_RE = re.compile(
    r"\b(opg|cls) orders must be submitted after (\d\d?:\d\d ?[ap]m)"
    r"(?: and before (\d\d?:\d\d ?[ap]m))?"
)
_AUCTION_RE = re.compile(r"\b(opg|cls) orders?\b")
# Alpaca's documented cut-offs (TimeInForce): no opg order from 9:28am, no cls from 3:50pm,
# until 7:00pm ET.
_AUCTION_CUTOFFS = {"opg": "9:28am", "cls": "3:50pm"}
_AUCTION_WORDS = {"opg": "opening", "cls": "closing"}
_PRICE_WORDS = {
    "limit_price": "limit price",
    "stop_price": "stop price",
    "take_profit.limit_price": "take-profit price",
    "stop_loss.stop_price": "stop-loss price",
    "stop_loss.limit_price": "stop-loss limit price",
}
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
_REPLACEMENT_RE = re.compile(r"^(.*)-r(\d+)$")
CLIENT_ORDER_ID_MAX = 128


def parse_time(value: Any) -> datetime | None:
    """Alpaca timestamps: RFC 3339 with up to nine fraction digits, ``Z`` or an offset."""
    if not value or not isinstance(value, str):
        return None
    text = value.strip().replace("Z", "+00:00")
    m = re.match(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)$", text)
    if m and m.group(2) and len(m.group(2)) > 7:
        text = m.group(1) + m.group(2)[:7] + m.group(3)  # Python keeps microseconds
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def vendor_number(value: Decimal) -> str:
    """Decimal as Alpaca's string numbers: plain notation, no trailing zeros."""
    text = format(value.normalize(), "f")
    return text if text != "-0" else "0"


def our_symbol(symbol: str, asset_class: AssetClass) -> str:
    """Crypto as ``BASE/QUOTE`` everywhere (Alpaca's positions drop the slash)."""
    if asset_class is AssetClass.CRYPTO:
        pair = symbols.crypto_pair(symbol)
        if pair:
            return f"{pair[0]}/{pair[1]}"
    return symbol.upper()


def replacement_client_order_id(client_order_id: str) -> str:
    """The client order id Tradecord gives the order that replaces one with
    ``client_order_id``: ``-r<n>`` counts the replacements (``tc1`` -> ``tc1-r1`` ->
    ``tc1-r2``), so the new order of a PATCH whose answer was lost can be looked up by it.
    The base is cut where needed to stay within Alpaca's 128 characters."""
    m = _REPLACEMENT_RE.match(client_order_id)
    base, n = (m[1], int(m[2]) + 1) if m else (client_order_id, 1)
    suffix = f"-r{n}"
    return base[: CLIENT_ORDER_ID_MAX - len(suffix)] + suffix


def replacement_qty(order: Order, change: OrderChange) -> Decimal | None:
    """The ``qty`` a PATCH sends for ``change``, None for none. Alpaca's replacing order starts
    unfilled, so its qty is what is left of the new total; and when no qty is sent it takes the
    old order's original qty, its fills ignored (Alpaca-API#165), so once anything filled what
    is left is always sent: otherwise the filled part would trade a second time."""
    total = order.quantity if change.quantity is None else change.quantity
    if total == order.quantity and not order.filled_quantity:
        return None
    return total - order.filled_quantity


def _check_order_id(order_id: str) -> None:
    if not _UUID_RE.match(order_id):
        raise OrderNotFound(
            "Alpaca order ids look like 8-4-4-4-12 hex digits; that is not one. Copy the id "
            "from /orders."
        )


def _auction_refusal(tif: str, message: str) -> str:
    """Why Alpaca refused an opg/cls order, and when one can be placed. The window's times
    are Alpaca's own words when it gave them (a paper log has said 3:55pm for cls where the
    docs say 3:50pm), else the documented ones."""
    which = _AUCTION_WORDS[tif]
    m = _AUCTION_WINDOW_RE.search(message)
    opens = m[2] if m else "7:00pm"
    cutoff = m[3] if m and m[3] else _AUCTION_CUTOFFS[tif]
    when = (
        f"Alpaca takes {which}-auction ({tif}) orders from {opens} until {cutoff} New York "
        f"time, for the next {which} auction; from {cutoff} to {opens} it refuses them."
    )
    if m:
        return (
            f"Too late for today's {which} auction. {when} Place it again after {opens}, or "
            "use time in force day to trade in the regular session."
        )
    return (
        f"Alpaca refused this {which}-auction ({tif}) order: it must be a market or limit "
        f"order for a stock, without take-profit/stop-loss or extended hours. {when}"
    )


def _flip_refusal(held: Decimal, symbol: str) -> str:
    return (
        f"You hold {held.normalize():f} {symbol}; Alpaca cannot sell and go short in one order. "
        f"Sell {held.normalize():f} first, then sell short the rest."
    )


def _words(order_type: OrderType) -> str:
    return order_type.value.replace("_", "-")


def _ws_url(http_url: str) -> str:
    if http_url.startswith("https://"):
        return "wss://" + http_url[len("https://") :]
    if http_url.startswith("http://"):
        return "ws://" + http_url[len("http://") :]
    return http_url


@register
class AlpacaAdapter(HttpBrokerAdapter):
    key = "alpaca"
    display_name = "Alpaca"
    capabilities = Capabilities(
        # One account per environment trades stocks, ETFs and crypto; multiplier "1" is cash.
        asset_classes={
            AccountType.CASH: frozenset({AssetClass.EQUITY, AssetClass.CRYPTO}),
            AccountType.MARGIN: frozenset({AssetClass.EQUITY, AssetClass.CRYPTO}),
        },
        order_types=ALL_TYPES,
        order_types_by_asset={
            AssetClass.EQUITY: ALL_TYPES,
            AssetClass.CRYPTO: frozenset({OrderType.MARKET, OrderType.LIMIT, OrderType.STOP_LIMIT}),
        },
        time_in_force={
            # opg/cls: the opening/closing auction (market or limit; check_auction).
            AssetClass.EQUITY: frozenset(
                {
                    TimeInForce.DAY,
                    TimeInForce.GTC,
                    TimeInForce.IOC,
                    TimeInForce.FOK,
                    TimeInForce.OPG,
                    TimeInForce.CLS,
                }
            ),
            AssetClass.CRYPTO: frozenset({TimeInForce.GTC, TimeInForce.IOC}),
        },
        # Fractional shares: day orders only, no brackets (checked in check_order).
        fractional=frozenset({AssetClass.EQUITY, AssetClass.CRYPTO}),
        # Alpaca takes quantities to 9 decimals (check_order): a crypto position bought by
        # amount is often held to the 9th.
        quantity_decimals={AssetClass.EQUITY: 9, AssetClass.CRYPTO: 9},
        brackets=True,
        open_sells_hold_shares=True,
        # A bracket's exits are one-cancels-other, a cancel too: "Canceling one leg of a
        # bracket order will cancel the other leg too" (Alpaca staff, forum.alpaca.markets
        # /t/bracket-order-closing-positions/11938).
        exit_cancel_takes_bracket=True,
        environments=frozenset({Environment.LIVE, Environment.PAPER}),
        quotes=True,
        order_stream=True,
        rate_limits=(
            RateLimit("trading", 200, 60.0, "account"),
            RateLimit("data", 200, 60.0, "account"),
        ),
        # PATCH also takes time_in_force and a trailing stop's trail; Tradecord offers neither.
        replace=frozenset({"quantity", "limit_price", "stop_price"}),
        # POST's extended_hours: stock limit day orders only (the base class checks that).
        extended_hours=True,
    )
    oauth = OAuthSpec(
        authorize_url="https://app.alpaca.markets/oauth/authorize",
        token_url="https://api.alpaca.markets/oauth/token",  # noqa: S106 - a URL
        # Reading needs no scope; "trading" places and cancels, "data" reads quotes.
        # Never "account:write" (account settings and watchlists: not ours to change).
        scopes=("trading", "data"),
        revoke_url=None,  # none documented for Trading API OAuth
        pkce=False,  # not supported by Alpaca
        client_auth="client_secret_post",  # client_id and client_secret in the form
    )
    default_api_urls: ClassVar[Mapping[Environment, str]] = {
        Environment.LIVE: "https://api.alpaca.markets",
        Environment.PAPER: "https://paper-api.alpaca.markets",
    }
    default_data_url: ClassVar[str] = "https://data.alpaca.markets"

    def __init__(self, context: AdapterContext) -> None:
        super().__init__(context)
        # Whether each stock is ``fractionable`` (GET /v2/assets/{symbol}), as looked up by
        # this adapter: an asset's flags change rarely, an adapter lives for a command.
        self._fractionable: dict[str, bool] = {}

    @classmethod
    def authorize_params(cls, environment: str | None) -> dict[str, str]:
        # Without ``env`` Alpaca asks the member for one live and one paper account.
        return {"env": environment} if environment in ("live", "paper") else {}

    @property
    def data_url(self) -> str:
        return str(self.ctx.extra.get("data_url") or self.default_data_url)

    # -- checks Alpaca adds to the shared ones -------------------------------------------------

    def fraction_allowed(
        self,
        asset: AssetClass,
        side: Side,
        time_in_force: TimeInForce | None,
        *,
        bracket: bool,
        exiting: bool,
        symbol: str | None = None,
    ) -> bool:
        if asset is not AssetClass.EQUITY:
            return super().fraction_allowed(
                asset, side, time_in_force, bracket=bracket, exiting=exiting, symbol=symbol
            )
        # Fractional shares: simple day orders only (check_order), and never a short: a buy
        # that opens or adds, or a sell of shares held. A cover, a bracket or a GTC order must
        # be whole shares. So must a stock Alpaca marks not fractionable (once looked up).
        if time_in_force not in (None, TimeInForce.DAY) or bracket:
            return False
        if symbol is not None and self._fractionable.get(self._asset_key(symbol)) is False:
            return False
        return side is Side.SELL if exiting else side is Side.BUY

    def check_order(self, account: AccountRef, request: OrderRequest) -> None:
        super().check_order(account, request)
        # Sub-penny stock prices refused before the card, as at the other brokers.
        self.check_stock_prices(request)
        asset = request.asset_class
        if request.quantity <= 0:
            raise InvalidOrder("The quantity must be more than zero.")
        most = self.capabilities.max_quantity_decimals(asset or AssetClass.EQUITY)
        if -int(request.quantity.normalize().as_tuple().exponent) > most:
            raise InvalidOrder(f"Alpaca takes at most {most} decimals in a quantity; round it.")
        b = request.bracket
        prices = (
            request.limit_price,
            request.stop_price,
            *((b.take_profit, b.stop_loss, b.stop_loss_limit) if b else ()),
        )
        if any(p is not None and p <= 0 for p in prices):
            raise InvalidOrder("Prices must be more than zero.")
        if request.order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT) and (
            request.limit_price is None
        ):
            raise InvalidOrder(f"A {_words(request.order_type)} order needs a limit price.")
        if request.order_type in (OrderType.STOP, OrderType.STOP_LIMIT) and (
            request.stop_price is None
        ):
            raise InvalidOrder(f"A {_words(request.order_type)} order needs a stop price.")
        if request.order_type is OrderType.TRAILING_STOP:
            if (request.trail_amount is None) == (request.trail_percent is None):
                raise InvalidOrder(
                    "A trailing stop needs a trail price or a trail percent: one of the two."
                )
            if request.time_in_force not in (TimeInForce.DAY, TimeInForce.GTC):
                raise InvalidOrder("Alpaca takes trailing stops as day or gtc orders.")
        if request.client_order_id is not None and not re.fullmatch(
            r"[A-Za-z0-9_\-]{1,128}", request.client_order_id
        ):
            raise InvalidOrder("The client order id must be 1-128 letters, digits, - or _.")
        fractional = request.quantity != request.quantity.to_integral_value()
        if asset is AssetClass.EQUITY and fractional:
            self._check_fractionable(request)
            if request.time_in_force is not TimeInForce.DAY:
                raise InvalidOrder(
                    "Alpaca takes fractional share orders as day orders only: use time in "
                    "force day, or a whole number of shares."
                )
            if request.bracket:
                raise InvalidOrder(
                    "Alpaca cannot attach take-profit/stop-loss to a fractional share order: "
                    "use a whole number of shares for a bracket."
                )
        if b is not None:
            if asset is AssetClass.CRYPTO:
                raise InvalidOrder(
                    "Alpaca has no take-profit/stop-loss brackets for crypto: place the exit "
                    "orders separately."
                )
            if b.take_profit is None and b.stop_loss is None:
                raise InvalidOrder(
                    "A bracket needs a take-profit price, a stop-loss price, or both."
                )
            if request.time_in_force not in (TimeInForce.DAY, TimeInForce.GTC):
                raise InvalidOrder("Alpaca brackets take time in force day or gtc.")
            if b.stop_loss_limit is not None and b.stop_loss is None:
                raise InvalidOrder("A stop-loss limit price needs a stop-loss price too.")

    def check_position(self, account: AccountRef, request: OrderRequest, held: Decimal) -> None:
        # The last check a preview makes, after its quote looked the asset up: a fraction of a
        # stock that is not fractionable is refused before the card, not at Confirm.
        self._check_fractionable(request)
        super().check_position(account, request, held)
        # Shorts Alpaca never takes: the card said "this sell opens a short" above Confirm,
        # and Alpaca then refused it.
        have = max(held, Decimal(0))
        if request.side is not Side.SELL or request.quantity <= have:
            return
        holding = f"you hold {have.normalize():f}" if have else "you hold none"
        if request.asset_class is AssetClass.CRYPTO:
            raise InvalidOrder(
                f"Alpaca does not sell crypto short, and {holding} of {request.symbol}: a sell "
                "can be at most what you hold."
            )
        if request.quantity != request.quantity.to_integral_value():
            raise InvalidOrder(
                f"Alpaca does not sell a fraction of a share short, and {holding} of "
                f"{request.symbol}: sell at most what you hold, or a whole number of shares to "
                "go short."
            )
        if have:
            # Alpaca sells at most the long ("insufficient qty available"): never a flip.
            raise InvalidOrder(_flip_refusal(have, request.symbol))

    def _asset_key(self, symbol: str) -> str:
        return self.vendor_symbol(symbol, AssetClass.EQUITY)

    def _check_fractionable(self, request: OrderRequest) -> None:
        q = request.quantity
        if q == q.to_integral_value() or request.asset_class is not AssetClass.EQUITY:
            return
        name = self._asset_key(request.symbol)
        if self._fractionable.get(name) is False:
            whole = q.to_integral_value(ROUND_DOWN)
            instead = f"{whole:f} or {whole + 1:f}" if whole else "1"
            raise InvalidOrder(
                f"Alpaca trades {name} in whole shares only (it is not fractionable there), "
                f"so {q.normalize():f} cannot be sent: use a whole number of shares, such as "
                f"{instead}."
            )

    async def _look_up_fractionable(self, symbol: str, environment: Environment) -> None:
        """Learn whether a stock is fractionable (``GET /v2/assets/{symbol}``), once per
        adapter. A failed lookup teaches nothing: Alpaca's own refusal then says it."""
        name = self._asset_key(symbol)
        if name in self._fractionable:
            return
        try:
            resp = await self.request(
                "GET",
                f"/v2/assets/{quote(name, safe='')}",
                environment=environment,
                bucket="trading",
            )
        except BrokerError as e:
            log.info("alpaca: no asset details for %s: %s", name, type(e).__name__)
            return
        if isinstance(resp.body, dict) and isinstance(resp.body.get("fractionable"), bool):
            self._fractionable[name] = resp.body["fractionable"]

    def check_change(self, order: Order, change: OrderChange) -> None:
        super().check_change(order, change)
        if order.info.get("notional"):
            raise InvalidOrder(
                "Alpaca cannot change an order placed for a dollar amount: cancel it with "
                "/cancel and place a new one."
            )
        qty = replacement_qty(order, change)
        if qty is None or order.asset_class is not AssetClass.EQUITY:
            return
        # Alpaca changes share quantities in whole shares, and never a fractional order's.
        if order.quantity != order.quantity.to_integral_value():
            if change.quantity is not None:
                raise InvalidOrder(
                    "Alpaca cannot change the quantity of a fractional share order: cancel it "
                    "with /cancel and place a new one."
                )
            raise InvalidOrder(
                "Alpaca would replace this partly filled fractional share order for its whole "
                "first quantity: cancel it with /cancel and place a new one for the rest."
            )
        if qty != qty.to_integral_value():
            total = change.quantity if change.quantity is not None else order.quantity
            raise InvalidOrder(
                f"Alpaca changes share quantities in whole shares only; {total.normalize():f} "
                "has a fraction."
            )

    # -- mapping -------------------------------------------------------------------------------

    def map_account(self, body: Mapping[str, Any], environment: Environment) -> Account:
        multiplier = str(body.get("multiplier") or "1")
        blocked = body.get("trading_blocked") or body.get("account_blocked")
        status = "blocked" if blocked else str(body.get("status") or "unknown").lower()
        return Account(
            id=str(body.get("account_number") or body["id"]),
            # "1" is Alpaca's limited margin account with 1x buying power: no leverage, no
            # shorting, so it behaves as cash. "2" (RegT) and "4" (PDT) are margin.
            type=AccountType.MARGIN if multiplier in ("2", "4") else AccountType.CASH,
            environment=environment,
            currency=str(body.get("currency") or "USD"),
            status=status,
            info=dict(body),
        )

    def map_balance(self, body: Mapping[str, Any], account_id: str) -> Balance:
        zero = Decimal(0)
        long_mv = dec(body.get("long_market_value"), zero) or zero
        short_mv = dec(body.get("short_market_value"), zero) or zero
        equity = dec(body.get("equity"), zero) or zero
        # "Equity as of previous trading day at 16:00:00 ET" [spec Account]; none (0) before
        # an account's first close.
        last_equity = dec(body.get("last_equity"))
        return Balance(
            account_id=account_id,
            currency=str(body.get("currency") or "USD"),
            cash=dec(body.get("cash"), zero) or zero,
            buying_power=dec(body.get("buying_power"), zero) or zero,
            equity=equity,
            market_value=long_mv + short_mv,
            day_pnl=equity - last_equity if last_equity else None,
            info=dict(body),
        )

    def map_position(self, body: Mapping[str, Any]) -> Position:
        asset = ASSET_CLASSES.get(str(body.get("asset_class")), AssetClass.EQUITY)
        qty = dec(body.get("qty"), Decimal(0)) or Decimal(0)
        if body.get("side") == "short" and qty > 0:
            qty = -qty
        return Position(
            symbol=our_symbol(str(body["symbol"]), asset),
            asset_class=asset,
            quantity=qty,
            average_price=dec(body.get("avg_entry_price"), Decimal(0)) or Decimal(0),
            market_price=dec(body.get("current_price")),
            market_value=dec(body.get("market_value")),
            cost_basis=dec(body.get("cost_basis")),
            unrealized_pnl=dec(body.get("unrealized_pl")),
            info=dict(body),
        )

    def map_order(self, body: Mapping[str, Any], account_id: str) -> Order:
        asset = ASSET_CLASSES.get(str(body.get("asset_class")), AssetClass.EQUITY)
        filled = dec(body.get("filled_qty"), Decimal(0)) or Decimal(0)
        qty = dec(body.get("qty"))
        if qty is None:  # a notional (dollar) order: the quantity is what filled
            qty = filled
        vendor_status = str(body.get("status"))
        status = STATUSES.get(vendor_status)
        if status is None:
            log.warning("alpaca: unknown order status %r", vendor_status)
            status = OrderStatus.PENDING
        if status in _WORKING and filled > 0:
            status = OrderStatus.PARTIALLY_FILLED
        if vendor_status == "calculated" and filled < qty:
            # Done for the day with its settlement pending: partly filled, or not at all
            # (as done_for_day: it resumes next session).
            status = OrderStatus.PARTIALLY_FILLED if filled > 0 else OrderStatus.OPEN
        return Order(
            id=str(body["id"]),
            account_id=account_id,
            symbol=our_symbol(str(body["symbol"]), asset),
            side=Side(str(body["side"])),
            quantity=qty,
            order_type=ORDER_TYPES.get(
                str(body.get("type") or body.get("order_type")), OrderType.MARKET
            ),
            time_in_force=TIME_IN_FORCE.get(str(body.get("time_in_force")), TimeInForce.DAY),
            status=status,
            client_order_id=body.get("client_order_id"),
            asset_class=asset,
            limit_price=dec(body.get("limit_price")),
            stop_price=dec(body.get("stop_price")),
            filled_quantity=filled,
            average_fill_price=dec(body.get("filled_avg_price")),
            created_at=parse_time(body.get("created_at")),
            updated_at=parse_time(body.get("updated_at")),
            cancel_pending=vendor_status == "pending_cancel",
            replaced_by=_text(body.get("replaced_by")),
            replaces=_text(body.get("replaces")),
            # Nested in the entry (its create response, and lists asked for nested orders).
            exit_ids=tuple(
                str(leg["id"])
                for leg in body.get("legs") or ()
                if isinstance(leg, Mapping) and leg.get("id")
            ),
            trail_amount=dec(body.get("trail_price")),
            trail_percent=dec(body.get("trail_percent")),
            extended_hours=body.get("extended_hours") is True,
            info=dict(body),
        )

    def map_update(self, data: Mapping[str, Any], account: AccountRef) -> OrderUpdate:
        order = self.map_order(data["order"], account.id)
        return OrderUpdate(
            order=order,
            event=str(data.get("event")),
            execution_id=data.get("execution_id"),
            fill_quantity=dec(data.get("qty")),
            fill_price=dec(data.get("price")),
            at=parse_time(data.get("timestamp")) or order.updated_at,
        )

    def canonical_symbol(self, symbol: str) -> str:
        # Crypto as BASE/QUOTE, the form positions and orders are read back in: a held BTC/USD
        # is found whether the member typed BTCUSD, BTC-USD or BTC/USD.
        # A share class as Alpaca's assets write it: BRK.B, whether typed BRK-B or BRK/B.
        text = symbols.share_class(symbol, self.share_class_separator)
        return our_symbol(text, symbols.asset_class_of(text))

    def vendor_symbol(self, symbol: str, asset: AssetClass) -> str:
        if asset is AssetClass.CRYPTO:
            return our_symbol(symbol, asset)  # Alpaca's order symbol for crypto is BTC/USD
        return symbols.share_class(symbol, self.share_class_separator)

    # -- errors --------------------------------------------------------------------------------

    def vendor_error(self, resp: HttpResponse) -> BrokerError | None:
        body = resp.body if isinstance(resp.body, dict) else {}
        code = body.get("code")
        vcode = str(code) if code is not None else None
        message = str(body.get("message") or "")
        low = message.lower()
        status = resp.status
        data_call = not resp.path.startswith("/v2/") or resp.path.startswith("/v2/stocks")

        if status == 401:
            return AuthorizationExpired(
                "Alpaca no longer accepts Tradecord's access for this connection (the app was "
                "removed or the link was reset). Alpaca links do not renew on their own: run "
                "/connect again to re-link."
            )
        if status == 429:
            after = self.rate_limit_wait(resp)
            wait = (
                "a few seconds"
                if after is None or after <= MAX_RETRY_WAIT
                else wait_text(after)  # until its window resets: a call does not wait that long
            )
            return RateLimited(
                "Alpaca is limiting how fast Tradecord may call it (200 requests a minute per "
                f"account). Wait {wait} and try again.",
                retry_after=after,
                vendor_code=vcode,
            )
        if status == 403 and code is None:
            if data_call:
                return AuthorizationExpired(
                    "Alpaca refused market data for this connection. Run /connect again and "
                    "allow market data access."
                )
            return AuthorizationExpired(
                "Alpaca refused this request: the connection lacks trading permission. Run "
                "/connect again and approve trading access."
            )
        if resp.method == "DELETE" and status == 422:
            m = _STATE_RE.search(message)
            state = f" (it is {m.group(1)})" if m else ""
            return OrderNotCancelable(
                f"That order can no longer be cancelled at Alpaca{state}. See /orders.",
                vendor_code=vcode,
            )
        if resp.method == "PATCH" and status in (403, 422):
            # By message: Alpaca reuses 42210000 for every refusal of a replace.
            if "sent to exchange" in low:
                return OrderNotReplaceable(
                    "Alpaca cannot change that order until it has reached the exchange (it "
                    "waits for the market to open). Try again once the market is open, or "
                    "cancel it with /cancel and place a new one.",
                    vendor_code=vcode,
                )
            if m := _STATE_RE.search(message):
                return OrderNotReplaceable(
                    f"That order can no longer be changed at Alpaca (it is "
                    f"{m.group(1).replace('_', ' ')}). /orders shows what is still working.",
                    vendor_code=vcode,
                )
            if "parameters are not changed" in low:
                return InvalidOrder(
                    "Alpaca already has the order on these terms: there is nothing to change.",
                    vendor_code=vcode,
                )
        if "insufficient buying power" in low:
            cost, power = dec(body.get("cost_basis")), dec(body.get("buying_power"))
            detail = (
                f" This order needs about ${cost:,.2f}; the account has ${power:,.2f}."
                if cost is not None and power is not None
                else ""
            )
            return InsufficientBuyingPower(
                f"Not enough buying power at Alpaca.{detail} Lower the quantity, or check "
                "/balances.",
                vendor_code=vcode,
            )
        if low.startswith("insufficient qty available") or low.startswith("insufficient balance"):
            m = _QTY_RE.search(message)
            what = body.get("symbol") or "of this symbol"
            detail = (
                f" You asked to sell {m.group(1)}; {m.group(2)} {what} can be sold now."
                if m
                else ""
            )
            return NotEnoughToSell(
                f"Not enough to sell at Alpaca.{detail} Lower the quantity: /positions shows "
                "what you hold, and /orders the open orders that may hold some of it.",
                detail=detail,
                available=dec(m.group(2)) if m else None,
                vendor_code=vcode,
            )
        if "wash trade" in low:
            reason = body.get("reject_reason") or "an opposite-side order exists"
            return InvalidOrder(
                f"Alpaca blocked this as a potential wash trade ({reason}). Cancel the "
                "opposite-side order in this symbol first (see /orders), or use a bracket.",
                vendor_code=vcode,
            )
        if "pattern day trading" in low:
            return BrokerError(
                "Alpaca refused this trade under pattern day trading protection: accounts under "
                "$25,000 may make at most 3 day trades in 5 business days. Hold the position "
                "until the next session, or trade from another account.",
                vendor_code=vcode,
            )
        if "not allowed to short" in low:
            return InvalidOrder(
                "This Alpaca account cannot sell short (cash accounts never can). Sell only what "
                "you hold; see /positions.",
                vendor_code=vcode,
            )
        if "fractional orders cannot be sold short" in low:
            return InvalidOrder(
                "Alpaca cannot sell short a fractional quantity, and you hold none of this "
                "symbol. Use a whole number of shares, or check /positions.",
                vendor_code=vcode,
            )
        if "cannot be sold short" in low:
            return InvalidOrder(
                "Alpaca has no shares of this symbol to borrow, so it cannot be sold short. "
                "Sell only what you hold; see /positions.",
                vendor_code=vcode,
            )
        if "client_order_id must be unique" in low:
            return DuplicateClientOrderId(
                "Alpaca already has an order with this client order id, so it was not placed "
                "a second time. See /orders for the existing order.",
                vendor_code=vcode,
            )
        if m := _ASSET_RE.search(message):
            symbol = m.group(1)
            if "not fractionable" in low:
                return InvalidOrder(
                    f"Alpaca does not take fractional quantities of {symbol}. Use a whole "
                    "number of shares.",
                    vendor_code=vcode,
                )
            if "not tradable" in low:
                return InvalidOrder(
                    f"Alpaca does not allow trading {symbol} at the moment. Check the symbol "
                    "on Alpaca's site.",
                    vendor_code=vcode,
                )
            return SymbolNotFound(
                f"Alpaca does not know {symbol}. Check the ticker: Alpaca trades US stocks, "
                "ETFs and crypto (no futures).",
                vendor_code=vcode,
            )
        if "fractional orders must be day" in low:
            return InvalidOrder(
                "Alpaca takes fractional share orders as day orders only: use time in force "
                "day, or a whole number of shares.",
                vendor_code=vcode,
            )
        if "fractional orders must be simple" in low:
            return InvalidOrder(
                "Alpaca cannot attach take-profit/stop-loss to a fractional share order: use a "
                "whole number of shares for a bracket.",
                vendor_code=vcode,
            )
        if "crypto time_in_force" in low or "crypto order type" in low:
            return InvalidOrder(
                "Crypto at Alpaca takes market, limit or stop-limit orders with time in force "
                "gtc or ioc. Change the order and try again.",
                vendor_code=vcode,
            )
        if m := _AUCTION_RE.search(low):
            return InvalidOrder(_auction_refusal(m[1], low), vendor_code=vcode)
        if "stop price must be" in low:
            market, stop = body.get("market_price"), body.get("stop_price")
            where = f" (stop {stop}, market {market})" if market and stop else ""
            return InvalidOrder(
                f"The stop price is on the wrong side of the market{where}: a buy stop must be "
                "above the current price, a sell stop below. Adjust the stop price.",
                vendor_code=vcode,
            )
        # Before the bracket rule below: a leg's sub-penny refusal names take_profit too.
        if "sub-penny" in low:
            m = _SUB_PENNY_RE.search(message)
            which = f"The {_PRICE_WORDS.get(m[1], m[1])} {m[2]} is refused: " if m else ""
            return InvalidOrder(
                f"{which}Alpaca takes prices in whole cents for stocks of $1 or more (4 decimals "
                "below $1). Round the price and try again.",
                vendor_code=vcode,
            )
        if "take_profit" in low or "stop_loss" in low:
            return InvalidOrder(
                f"Alpaca rejected the bracket ({message}). For a buy, the take-profit must be "
                "above the entry price and the stop-loss below it; the reverse for a sell.",
                vendor_code=vcode,
            )
        if (
            "not authorized to trade" in low
            or "trading is not enabled" in low
            or ("not allowed to trade" in low)
        ):
            return BrokerError(
                f"Alpaca does not let this account trade right now ({message}). Check the "
                "account in Alpaca's dashboard or contact Alpaca support.",
                vendor_code=vcode,
            )
        if status == 404:
            if data_call:
                return SymbolNotFound(
                    "Alpaca has no market data for that symbol. Check the ticker.",
                    vendor_code=vcode,
                )
            return OrderNotFound(vendor_code=vcode)
        if status == 403:
            return BrokerError(
                f"Alpaca refused the request: {message or 'forbidden'}. Check the account in "
                "Alpaca's dashboard.",
                vendor_code=vcode,
            )
        if status in (400, 422):
            return InvalidOrder(
                f"Alpaca rejected the order: {message or 'invalid request'}. Check the symbol, "
                "quantity and prices.",
                vendor_code=vcode,
            )
        return None

    # -- reads ---------------------------------------------------------------------------------

    async def fetch_accounts(self) -> list[Account]:
        accounts: list[Account] = []
        envs = self.environments()
        # A grant may reach one environment only (the member authorized a paper or a live
        # account, not both): the other host's 401 is not a broken connection.
        probe = len(envs) > 1
        for env in envs:
            try:
                resp = await self.request(
                    "GET", "/v2/account", environment=env, bucket="trading", probe=probe
                )
            except AuthorizationExpired:
                if not probe:
                    raise
                continue
            accounts.append(self.map_account(resp.body, env))
        if not accounts and probe:
            # Refused everywhere: the token itself is bad. Asked once more the usual way, so
            # the connection is marked for re-linking and the member told.
            await self.request("GET", "/v2/account", environment=envs[0], bucket="trading")
        return accounts

    async def fetch_balance(self, account: AccountRef) -> Balance:
        resp = await self.request(
            "GET", "/v2/account", environment=account.environment, bucket="trading"
        )
        body = resp.body
        number = str(body.get("account_number") or body.get("id"))
        if number != account.id:
            raise BrokerError(
                f"This Alpaca connection now reaches account {mask_account(number)}, not "
                f"{mask_account(account.id)}. Run /accounts to choose the account again."
            )
        return self.map_balance(body, account.id)

    async def fetch_buying_power(
        self, account: AccountRef, asset: AssetClass | None = None
    ) -> Decimal:
        balance = await self.fetch_balance(account)
        if asset is AssetClass.CRYPTO:
            # "Cryptocurrencies are not eligible assets to be used as collateral for margin
            # accounts and will require the asset be traded using cash only" [spec Account].
            cash_only = dec(balance.info.get("non_marginable_buying_power"))
            if cash_only is not None:
                return cash_only
        return balance.buying_power

    async def fetch_positions(self, account: AccountRef) -> list[Position]:
        resp = await self.request(
            "GET", "/v2/positions", environment=account.environment, bucket="trading"
        )
        return [self.map_position(p) for p in resp.body]

    async def fetch_open_orders(self, account: AccountRef) -> list[Order]:
        # Flat (not nested): the working exits of a bracket are listed as orders of their own.
        resp = await self.request(
            "GET",
            "/v2/orders",
            environment=account.environment,
            bucket="trading",
            params={"status": "open", "limit": "500", "direction": "desc"},
        )
        return [self.map_order(o, account.id) for o in resp.body]

    async def fetch_orders(
        self, account: AccountRef, *, since: datetime | None = None, limit: int = 50
    ) -> list[Order]:
        # Orders that ended since ``since``. Alpaca's ``after`` is by submission time, which
        # would leave out a GTC order placed days before and filled today: the latest closed
        # orders (as many as one page holds) are read instead, and kept by when they ended.
        params = {"status": "closed", "limit": "500", "direction": "desc"}
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        resp = await self.request(
            "GET", "/v2/orders", environment=account.environment, bucket="trading", params=params
        )
        orders = [self.map_order(o, account.id) for o in resp.body]
        epoch = datetime.min.replace(tzinfo=UTC)
        ended = [
            o for o in orders if since is None or (o.updated_at or o.created_at or epoch) >= since
        ]
        ended.sort(key=lambda o: o.updated_at or o.created_at or epoch, reverse=True)
        return ended[: max(1, min(limit, 500))]

    async def _fetch_order_by_id(self, account: AccountRef, order_id: str) -> Order:
        _check_order_id(order_id)
        resp = await self.request(
            "GET", f"/v2/orders/{order_id}", environment=account.environment, bucket="trading"
        )
        return self.map_order(resp.body, account.id)

    async def _fetch_order_by_client_id(
        self,
        account: AccountRef,
        client_order_id: str,
        hint: SubmissionHint | None = None,
    ) -> Order:
        # Alpaca looks orders up by client_order_id itself: the hint is not needed.
        if not client_order_id or len(client_order_id) > 128:
            raise OrderNotFound()  # Alpaca cannot hold such a client order id
        resp = await self.request(
            "GET",
            "/v2/orders:by_client_order_id",
            environment=account.environment,
            bucket="trading",
            params={"client_order_id": client_order_id},
        )
        return self.map_order(resp.body, account.id)

    async def fetch_quote(self, symbol: str) -> Quote:
        asset = symbols.asset_class_of(symbol)
        if asset is AssetClass.FUTURE:
            raise AssetClassNotSupported(
                f"Alpaca has no futures, so it has no quote for {symbols.normalize(symbol)}. "
                "Use a futures broker connection for futures."
            )
        envs = self.environments()
        if not envs:
            raise BrokerUnavailable("Alpaca is not available to this connection.")
        name = self.vendor_symbol(symbol, asset)
        if asset is AssetClass.CRYPTO:
            resp = await self.request(
                "GET",
                "/v1beta3/crypto/us/snapshots",
                environment=envs[0],
                bucket="data",
                params={"symbols": name},
                base_url=self.data_url,
            )
            snap = (resp.body.get("snapshots") or {}).get(name)
        else:
            # Whether it is fractionable too, at once: sizing and checks after a quote need it.
            resp, _ = await asyncio.gather(
                self.request(
                    "GET",
                    "/v2/stocks/snapshots",
                    environment=envs[0],
                    bucket="data",
                    params={"symbols": name},
                    base_url=self.data_url,
                ),
                self._look_up_fractionable(symbol, envs[0]),
            )
            snap = resp.body.get(name)
        if not snap:
            raise SymbolNotFound(
                f"Alpaca has no market data for {name}. Check the ticker: Alpaca covers US "
                "stocks, ETFs and crypto."
            )
        q = snap.get("latestQuote") or {}
        t = snap.get("latestTrade") or {}
        bid = dec(q.get("bp"), Decimal(0)) or Decimal(0)
        ask = dec(q.get("ap"), Decimal(0)) or Decimal(0)
        last = dec(t.get("p")) or (bid + ask) / 2
        times = [x for x in (parse_time(q.get("t")), parse_time(t.get("t"))) if x]
        return Quote(
            symbol=name,
            bid=bid,
            ask=ask,
            last=last,
            time=max(times) if times else datetime.now(UTC),
            info=dict(snap),
        )

    # -- writes --------------------------------------------------------------------------------

    def order_body(self, request: OrderRequest) -> dict[str, Any]:
        asset = request.asset_class or symbols.asset_class_of(request.symbol)
        body: dict[str, Any] = {
            "symbol": self.vendor_symbol(request.symbol, asset),
            "qty": vendor_number(request.quantity),
            "side": request.side.value,
            "type": request.order_type.value,
            "time_in_force": request.time_in_force.value,
            "client_order_id": request.client_order_id,
        }
        if request.limit_price is not None:
            body["limit_price"] = vendor_number(request.limit_price)
        if request.stop_price is not None:
            body["stop_price"] = vendor_number(request.stop_price)
        if request.trail_amount is not None:
            body["trail_price"] = vendor_number(request.trail_amount)
        if request.trail_percent is not None:
            body["trail_percent"] = vendor_number(request.trail_percent)
        if request.extended_hours:
            # Only when asked: every other order's body stays as Alpaca has always had it.
            body["extended_hours"] = True
        b = request.bracket
        if b is not None:
            # Both exits: a bracket; one exit: one-triggers-other.
            both = b.take_profit is not None and b.stop_loss is not None
            body["order_class"] = "bracket" if both else "oto"
            if b.take_profit is not None:
                body["take_profit"] = {"limit_price": vendor_number(b.take_profit)}
            if b.stop_loss is not None:
                stop_loss = {"stop_price": vendor_number(b.stop_loss)}
                if b.stop_loss_limit is not None:
                    stop_loss["limit_price"] = vendor_number(b.stop_loss_limit)
                body["stop_loss"] = stop_loss
        return body

    async def create_order(self, account: AccountRef, request: OrderRequest) -> Order:
        asset = request.asset_class or symbols.asset_class_of(request.symbol)
        if asset is AssetClass.EQUITY and request.quantity != request.quantity.to_integral_value():
            # Refused with what to do, before sending, where no quote looked the asset up.
            await self._look_up_fractionable(request.symbol, account.environment)
        return await super().create_order(account, request)

    async def _create_order(self, account: AccountRef, request: OrderRequest) -> Order:
        if request.client_order_id is None:
            # Always send an idempotency key, so a lost response can be looked up.
            request.client_order_id = secrets.token_hex(11)
        try:
            resp = await self.request(
                "POST",
                "/v2/orders",
                environment=account.environment,
                bucket="trading",
                json_body=self.order_body(request),
                write=True,
            )
        except DuplicateClientOrderId:
            # This very order, sent before (its answer lost, sent again after a lookup that
            # came too early): the one Alpaca has is it.
            return await self.fetch_order(account, client_order_id=request.client_order_id)
        except NotEnoughToSell as e:
            raise await self._explain_not_enough(account, request.symbol, e) from e
        if not _is_order(resp.body):
            # A 2xx that cannot be read (cut short) may still have placed it: looked up by
            # its client order id, never taken for a rejection.
            raise OrderStateUnknown()
        return self.map_order(resp.body, account.id)

    async def _explain_not_enough(
        self, account: AccountRef, symbol: str, refusal: NotEnoughToSell
    ) -> InvalidOrder:
        """Alpaca's "insufficient qty available", with its reason read from the position:
        other open orders holding part of it only when less than the position is available;
        otherwise the sell goes past the position, which Alpaca never takes in one order.
        Where the position does not tell, the refusal as ``vendor_error`` worded it."""
        as_worded = InvalidOrder(refusal.user_message, vendor_code=refusal.vendor_code)
        try:
            position = await self.fetch_position(account, symbol)
        except BrokerError as e:
            log.info("alpaca: no position to explain a refused sell: %s", type(e).__name__)
            return as_worded
        held = position.quantity if position is not None else Decimal(0)
        if refusal.available is None or held <= 0:
            return as_worded
        if refusal.available < held:
            tail = (
                "Quantities held by other open orders do not count: lower the quantity, or "
                "cancel those orders in /orders."
            )
        elif position is not None and position.asset_class is AssetClass.CRYPTO:
            tail = f"Alpaca does not sell crypto short: sell at most the {held.normalize():f} held."
        else:
            tail = _flip_refusal(held, symbol)
        return InvalidOrder(
            f"Not enough to sell at Alpaca.{refusal.detail} {tail}",
            vendor_code=refusal.vendor_code,
        )

    async def cancel_order(self, account: AccountRef, order_id: str) -> None:
        _check_order_id(order_id)
        # DELETE is idempotent at Alpaca, so it may be retried like a read (security item 17).
        await self.request(
            "DELETE", f"/v2/orders/{order_id}", environment=account.environment, bucket="trading"
        )

    async def _replace_order(self, account: AccountRef, order: Order, change: OrderChange) -> Order:
        """PATCH: Alpaca answers with the new order (its own id, ``replaces`` the old one);
        the old one ends ``replaced`` naming it in ``replaced_by``."""
        _check_order_id(order.id)
        body: dict[str, Any] = {}
        qty = replacement_qty(order, change)
        if qty is not None:
            body["qty"] = vendor_number(qty)
        if change.limit_price is not None and change.limit_price != order.limit_price:
            body["limit_price"] = vendor_number(change.limit_price)
        if change.stop_price is not None and change.stop_price != order.stop_price:
            body["stop_price"] = vendor_number(change.stop_price)
        if order.client_order_id:
            # Left out, Alpaca makes up a random one, which a lost answer could not be found by.
            body["client_order_id"] = replacement_client_order_id(order.client_order_id)
        try:
            resp = await self.request(
                "PATCH",
                f"/v2/orders/{order.id}",
                environment=account.environment,
                bucket="trading",
                json_body=body,
                write=True,
            )
        except NotEnoughToSell as e:
            raise await self._explain_not_enough(account, order.symbol, e) from e
        if not _is_order(resp.body):
            # Accepted, but the answer cannot be read: the caller reads the order again.
            raise BrokerUnavailable(
                "Alpaca accepted the change but its answer could not be read.", maybe_sent=True
            )
        new = self.map_order(resp.body, account.id)
        new.replaces = new.replaces or order.id
        return new

    # -- the trade_updates stream ------------------------------------------------------------

    async def stream_order_updates(
        self, accounts: list[AccountRef], *, ready: asyncio.Event | None = None
    ) -> AsyncIterator[OrderUpdate]:
        """One websocket per environment, merged. Ends when any of them closes; the caller
        reconnects and reconciles. ``ready`` is set once every environment is listening."""
        by_env: dict[Environment, AccountRef] = {}
        for a in accounts:
            if a.environment in self.ctx.api_urls:
                by_env.setdefault(a.environment, a)
        refs = list(by_env.values())
        all_ready = AllReady(ready, by_env)
        if len(refs) <= 1:
            for ref in refs:
                async for update in self._stream(ref, all_ready.part(ref.environment)):
                    yield update
            return
        queue: asyncio.Queue[OrderUpdate | BaseException | None] = asyncio.Queue()

        async def pump(ref: AccountRef) -> None:
            try:
                async for update in self._stream(ref, all_ready.part(ref.environment)):
                    await queue.put(update)
                await queue.put(None)
            except Exception as e:  # handed to the consumer, which re-raises it
                await queue.put(e)

        tasks = [asyncio.create_task(pump(ref)) for ref in refs]
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _stream(
        self, account: AccountRef, listening: Callable[[], None]
    ) -> AsyncIterator[OrderUpdate]:
        """``listening`` is called when Alpaca confirms ``trade_updates``: it sends no
        snapshot, so only from then on is every change of this environment's orders sent."""
        if self.ctx.session is None or self.ctx.tokens is None:
            raise BrokerUnavailable("Alpaca's order stream is not available to this connection.")
        url = _ws_url(self.ctx.api_urls[account.environment].rstrip("/")) + "/stream"
        token = await self.ctx.tokens.access_token()
        try:
            async with self.ctx.session.ws_connect(
                url, heartbeat=30.0, timeout=aiohttp.ClientWSTimeout(ws_close=self.ctx.timeout)
            ) as ws:
                await ws.send_str(
                    json.dumps({"action": "authenticate", "data": {"oauth_token": token}})
                )
                reply = await _receive(ws)
                if reply is None:
                    return
                if reply.get("stream") != "authorization" or (
                    (reply.get("data") or {}).get("status") != "authorized"
                ):
                    # Alpaca tokens cannot be refreshed; the provider says AuthorizationExpired.
                    await self.ctx.tokens.refresh(token)
                    raise AuthorizationExpired()
                await ws.send_str(
                    json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}})
                )
                while True:
                    message = await _receive(ws)
                    if message is None:
                        log.info("alpaca %s stream closed", account.environment)
                        return
                    if message.get("stream") == "listening":
                        streams = (message.get("data") or {}).get("streams") or []
                        if "trade_updates" not in streams:
                            # Nothing would ever come: end it, so the caller polls and retries.
                            raise BrokerUnavailable(
                                "Alpaca did not subscribe the order stream; fills are still "
                                "checked by polling."
                            )
                        listening()
                    elif message.get("stream") == "trade_updates" and message.get("data"):
                        yield self.map_update(message["data"], account)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise BrokerUnavailable(
                "Alpaca's order stream is not reachable right now; fills are still checked "
                "by polling."
            ) from e


def _text(value: Any) -> str | None:
    return str(value) if value else None


def _is_order(body: Any) -> bool:
    """Whether a write's answer is an order to map (an object with its id)."""
    return isinstance(body, dict) and bool(body.get("id"))


async def _receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any] | None:
    """The next JSON message; the paper stream sends binary frames, live sends text.
    ``None`` when the connection closed."""
    while True:
        msg = await ws.receive()
        if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            raw = msg.data if isinstance(msg.data, str) else msg.data.decode("utf-8")
            try:
                parsed = json.loads(raw)
            except ValueError:
                log.warning("alpaca stream: a frame that is not JSON was skipped")
                continue
            if isinstance(parsed, dict):
                return parsed
            continue
        if msg.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSING,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.ERROR,
        ):
            return None
