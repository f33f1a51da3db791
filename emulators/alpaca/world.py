"""Alpaca's world: users, accounts (one live and any number of paper accounts per user),
assets, quotes, orders, and a matching engine that fills like Alpaca's paper trading.

Everything the HTTP layer answers comes from here, in Alpaca's shapes: numbers as strings on
the Trading API, nanosecond RFC 3339 timestamps, 8-digit error codes. Rejections raise
``AlpacaError`` with the status and body Alpaca sends (observed bodies where we have them,
see ``emulators/specs/alpaca/observed-error-payloads.json``; the rest are marked [infer]).
"""

from __future__ import annotations

import secrets
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any
from zoneinfo import ZoneInfo

ET = ZoneInfo("America/New_York")
ZERO = Decimal(0)
CENT = Decimal("0.01")
NANO = Decimal("1e-9")
PDT_EQUITY = Decimal(25000)

# Statuses in which an order still works or waits; everything else has ended.
FINAL = frozenset({"filled", "canceled", "expired", "replaced", "rejected"})
# An order whose cancel has not landed yet may still fill, and holds its shares meanwhile.
WORKING = frozenset({"new", "partially_filled", "pending_cancel"})
RESERVING = WORKING | {"accepted", "pending_new"}
ADVANCED = frozenset({"bracket", "oto", "oco"})
# Auction orders: market-on/limit-on open (opg) and close (cls); they trade only in their
# auction. [spec TimeInForce] "OPG orders submitted after 9:28am but before 7:00pm ET will be
# rejected", CLS ones "after 3:50pm but before 7:00pm ET": the cut-off and Alpaca's words for it.
AUCTIONS = frozenset({"opg", "cls"})
AUCTION_CUTOFFS = {"opg": (time(9, 28), "9:28am"), "cls": (time(15, 50), "3:50pm")}
AUCTION_REOPENS = time(19, 0)


class AlpacaError(Exception):
    """A rejection as Alpaca answers it: HTTP status and JSON body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("message", ""))
        self.status, self.body = status, body


def err(status: int, code: int, message: str, **extra: str) -> AlpacaError:
    return AlpacaError(status, {"code": code, "message": message, **extra})


def num(d: Decimal) -> str:
    """Alpaca's string numbers: no exponent, no trailing zeros ("100", "174.78")."""
    if d == 0:
        return "0"
    if d == d.to_integral_value():
        return str(d.quantize(Decimal(1)))
    return format(d.normalize(), "f")


def rfc3339(t: float) -> str:
    """UTC with up to nine fraction digits, trailing zeros dropped, as Alpaca writes them."""
    whole = int(t)
    nanos = round((t - whole) * 1e9)
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, 0
    base = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{nanos:09d}".rstrip("0")
    return f"{base}.{frac}Z" if frac else f"{base}Z"


def parse_time(value: str) -> float:
    text = value.strip()
    if len(text) == 10:  # a date: Alpaca reads it as midnight New York time
        return datetime.fromisoformat(text).replace(tzinfo=ET).timestamp()
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


@dataclass
class Asset:
    symbol: str  # "AAPL", or "BTC/USD" for crypto
    asset_class: str  # us_equity | crypto
    exchange: str
    name: str
    tradable: bool = True
    marginable: bool = True
    shortable: bool = True
    easy_to_borrow: bool = True
    fractionable: bool = True
    status: str = "active"

    @property
    def id(self) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"alpaca-asset:{self.symbol}"))

    @property
    def crypto(self) -> bool:
        return self.asset_class == "crypto"

    @property
    def position_symbol(self) -> str:
        # Positions name crypto without the slash ("BTCUSD") while orders keep it.
        return self.symbol.replace("/", "")


@dataclass
class Quote:
    bid: Decimal
    ask: Decimal
    last: Decimal
    t: float
    bid_size: int = 100
    ask_size: int = 100


@dataclass
class User:
    id: str
    name: str


@dataclass
class Position:
    asset: Asset
    qty: Decimal  # negative when short
    cost_basis: Decimal  # signed like qty: what the open quantity cost
    lastday_price: Decimal

    @property
    def avg_entry_price(self) -> Decimal:
        return (self.cost_basis / self.qty).quantize(NANO).normalize()


@dataclass
class Account:
    id: str
    account_number: str
    environment: str  # live | paper
    user_id: str
    cash: Decimal
    multiplier: str  # "1" cash, "2" RegT margin, "4" PDT margin
    created_at: float
    last_equity: Decimal
    status: str = "ACTIVE"
    crypto_status: str = "ACTIVE"
    shorting_enabled: bool = True
    pattern_day_trader: bool = False
    daytrade_count: int = 0
    trading_blocked: bool = False
    account_blocked: bool = False
    transfers_blocked: bool = False
    trade_suspended_by_user: bool = False
    positions: dict[str, Position] = field(default_factory=dict)
    opened_today: set[str] = field(default_factory=set)


@dataclass(eq=False)
class Order:
    id: str
    seq: int
    client_order_id: str
    account_id: str
    asset: Asset
    side: str
    type: str
    time_in_force: str
    qty: Decimal | None
    notional: Decimal | None
    limit_price: Decimal | None
    stop_price: Decimal | None
    order_class: str
    status: str
    created_at: float
    extended_hours: bool = False
    filled_qty: Decimal = ZERO
    filled_avg_price: Decimal | None = None
    updated_at: float | None = None
    submitted_at: float | None = None
    filled_at: float | None = None
    expired_at: float | None = None
    canceled_at: float | None = None
    failed_at: float | None = None
    replaced_at: float | None = None
    replaced_by: str | None = None
    replaces: str | None = None
    legs: list[Order] = field(default_factory=list)
    parent: Order | None = field(default=None, repr=False)
    triggered: bool = False
    # A trailing stop: one of the two, and the high (a sell) or low (a buy) water mark.
    trail_price: Decimal | None = None
    trail_percent: Decimal | None = None
    hwm: Decimal | None = None
    # An extended-hours day order still working at the regular close: it works on through the
    # after-market, whose end (8pm ET) the emulator's one closed state does not mark, so it
    # expires when the next session opens instead.
    past_close: bool = False

    def trail_to(self, mark: Decimal) -> None:
        """Move a trailing stop's water mark (only ever in its favour) and its stop price."""
        sell = self.side == "sell"
        self.hwm = mark if self.hwm is None else (max if sell else min)(self.hwm, mark)
        if self.trail_price is not None:
            offset = self.trail_price
        else:
            assert self.trail_percent is not None
            offset = self.hwm * self.trail_percent / 100
        stop = self.hwm - offset if sell else self.hwm + offset
        self.stop_price = stop.quantize(Decimal("0.01"))

    @property
    def final(self) -> bool:
        return self.status in FINAL

    def remaining(self) -> Decimal | None:
        return None if self.qty is None else self.qty - self.filled_qty


Listener = Callable[[Account, dict[str, Any]], None]

DEFAULT_ASSETS: tuple[tuple[str, str, str, str, Decimal], ...] = (
    # symbol, class, exchange, name, reference price
    ("AAPL", "us_equity", "NASDAQ", "Apple Inc. Common Stock", Decimal("190.00")),
    ("MSFT", "us_equity", "NASDAQ", "Microsoft Corporation Common Stock", Decimal("420.00")),
    ("NVDA", "us_equity", "NASDAQ", "NVIDIA Corporation Common Stock", Decimal("130.00")),
    ("TSLA", "us_equity", "NASDAQ", "Tesla, Inc. Common Stock", Decimal("250.00")),
    ("AMZN", "us_equity", "NASDAQ", "Amazon.com, Inc. Common Stock", Decimal("185.00")),
    ("GOOGL", "us_equity", "NASDAQ", "Alphabet Inc. Class A Common Stock", Decimal("170.00")),
    ("QQQ", "us_equity", "NASDAQ", "Invesco QQQ Trust, Series 1", Decimal("480.00")),
    ("SPY", "us_equity", "ARCA", "SPDR S&P 500 ETF Trust", Decimal("590.00")),
    ("F", "us_equity", "NYSE", "Ford Motor Company Common Stock", Decimal("10.00")),
    ("BTC/USD", "crypto", "CRYPTO", "Bitcoin / US Dollar", Decimal("95000.00")),
    ("ETH/USD", "crypto", "CRYPTO", "Ethereum / US Dollar", Decimal("3400.00")),
    ("SOL/USD", "crypto", "CRYPTO", "Solana / US Dollar", Decimal("190.00")),
    ("DOGE/USD", "crypto", "CRYPTO", "Dogecoin / US Dollar", Decimal("0.32")),
    ("LTC/USD", "crypto", "CRYPTO", "Litecoin / US Dollar", Decimal("100.00")),
)


def _sub_penny(price: Decimal) -> bool:
    """Stocks of $1 or more trade in whole cents, cheaper ones in 1/100 of a cent."""
    step = CENT if price >= 1 else Decimal("0.0001")
    return price % step != 0


def _check_sub_penny(*prices: tuple[str, Decimal | None]) -> None:
    """[doc orders-at-alpaca] 422 {"code": 42210000, "message": "invalid limit_price 290.123.
    sub-penny increment does not fulfill minimum pricing criteria"}; [obs] the same text with
    stop_price and with take_profit.limit_price (third-party logs and tests); the stop_loss
    field names are [infer] by analogy."""
    for name, price in prices:
        if price is not None and _sub_penny(price):
            raise err(
                422,
                42210000,
                f"invalid {name} {num(price)}. sub-penny increment "
                "does not fulfill minimum pricing criteria",
            )


class Broker:
    """The state behind both trading hosts and the data host."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.users: dict[str, User] = {}
        self.accounts: dict[str, Account] = {}
        self.assets: dict[str, Asset] = {}
        self.quotes: dict[str, Quote] = {}
        self.orders: dict[str, Order] = {}
        self.market_open = True
        self.listeners: list[Listener] = []
        self._seq = 0

    # -- seeding ---------------------------------------------------------------------------

    def add_asset(
        self,
        symbol: str,
        asset_class: str = "us_equity",
        *,
        exchange: str | None = None,
        name: str | None = None,
        price: Decimal | None = None,
        **flags: bool,
    ) -> Asset:
        crypto = asset_class == "crypto"
        asset = Asset(
            symbol.upper(),
            asset_class,
            exchange or ("CRYPTO" if crypto else "NYSE"),
            name or symbol.upper(),
            **flags,
        )
        if crypto:  # crypto is never marginable nor shortable at Alpaca
            asset.marginable = asset.shortable = asset.easy_to_borrow = False
        self.assets[asset.symbol] = asset
        if price is not None:
            self.set_quote(asset.symbol, price - CENT, price + CENT, price)
        return asset

    def add_user(self, user_id: str, name: str | None = None) -> User:
        user = self.users[user_id] = User(user_id, name or user_id)
        return user

    def add_account(
        self,
        user_id: str,
        environment: str = "paper",
        *,
        cash: Decimal = Decimal(100000),
        multiplier: str | None = None,
        account_number: str | None = None,
        **flags: Any,
    ) -> Account:
        if user_id not in self.users:
            self.add_user(user_id)
        if multiplier is None:
            # Alpaca's defaults: paper accounts are PDT margin; live ones below $2,000 are cash.
            multiplier = "4" if environment == "paper" else ("2" if cash >= 2000 else "1")
        if account_number is None:
            alphabet = string.ascii_uppercase + string.digits
            tail = "".join(secrets.choice(alphabet) for _ in range(8))
            account_number = (
                ("PA" + tail)
                if environment == "paper"
                else str(600000000 + secrets.randbelow(99999999))
            )
        flags.setdefault("shorting_enabled", multiplier != "1")
        acct = Account(
            id=str(uuid.uuid4()),
            account_number=account_number,
            environment=environment,
            user_id=user_id,
            cash=Decimal(cash),
            multiplier=multiplier,
            created_at=self.clock(),
            last_equity=Decimal(cash),
            **flags,
        )
        self.accounts[acct.id] = acct
        return acct

    def set_position(
        self, account: Account, symbol: str, qty: Decimal, avg_entry_price: Decimal
    ) -> None:
        asset = self.resolve(symbol)
        assert asset is not None, f"unknown asset {symbol}"
        if qty == 0:
            account.positions.pop(asset.symbol, None)
            return
        qty = Decimal(qty)
        account.positions[asset.symbol] = Position(
            asset, qty, qty * Decimal(avg_entry_price), self.quote(asset).last
        )

    def accounts_of(self, user_id: str, environment: str) -> list[Account]:
        return [
            a
            for a in self.accounts.values()
            if a.user_id == user_id and a.environment == environment
        ]

    # -- quotes ----------------------------------------------------------------------------

    def resolve(self, symbol: str) -> Asset | None:
        s = symbol.strip().upper()
        if s in self.assets:
            return self.assets[s]
        # Crypto is also accepted in the legacy form without a slash ("BTCUSD").
        for quote_ccy in ("USDT", "USDC", "USD", "BTC"):
            if s.endswith(quote_ccy) and len(s) > len(quote_ccy):
                pair = f"{s[: -len(quote_ccy)]}/{quote_ccy}"
                if pair in self.assets:
                    return self.assets[pair]
        return None

    def quote(self, asset: Asset) -> Quote:
        q = self.quotes.get(asset.symbol)
        if q is None:
            q = self.quotes[asset.symbol] = Quote(
                Decimal(100) - CENT, Decimal(100) + CENT, Decimal(100), self.clock()
            )
        return q

    def set_quote(
        self, symbol: str, bid: Decimal, ask: Decimal, last: Decimal | None = None
    ) -> None:
        asset = self.resolve(symbol)
        key = asset.symbol if asset else symbol.upper()
        bid, ask = Decimal(bid), Decimal(ask)
        self.quotes[key] = Quote(
            bid, ask, Decimal(last) if last is not None else (bid + ask) / 2, self.clock()
        )
        if asset is not None:
            for o in sorted(self.orders.values(), key=lambda o: o.seq):
                if o.asset is asset and o.status in WORKING:
                    self._try_fill(o)

    # -- account figures ---------------------------------------------------------------------

    def figures(self, acct: Account) -> dict[str, Decimal]:
        long_mv = short_mv = initial = maint = ZERO
        for p in acct.positions.values():
            mv = p.qty * self.quote(p.asset).last
            if mv >= 0:
                long_mv += mv
            else:
                short_mv += mv
            # Crypto is not marginable: it needs its full value.
            rate = Decimal(1) if p.asset.crypto or not p.asset.marginable else Decimal("0.5")
            initial += abs(mv) * rate
            maint += abs(mv) * (
                Decimal(1) if p.asset.crypto else Decimal("0.3") if mv < 0 else Decimal("0.25")
            )
        equity = acct.cash + long_mv + short_mv
        reserved_equity = reserved_crypto = ZERO
        for o in self.orders.values():
            if o.account_id != acct.id or o.side != "buy" or o.status not in RESERVING:
                continue
            if o.qty is None:
                cost = o.notional or ZERO
            else:
                q = self.quote(o.asset)
                cost = (o.remaining() or ZERO) * (o.limit_price or q.ask)
            if o.asset.crypto:
                reserved_crypto += cost
            else:
                reserved_equity += cost
        excess = max(equity - initial, ZERO)
        if acct.multiplier == "1":
            regt = max(acct.cash, ZERO)
            dtbp = ZERO
            bp = regt
            non_marginable = max(acct.cash, ZERO)
        else:
            regt = excess * 2
            dtbp = max(equity - maint, ZERO) * 4 if acct.multiplier == "4" else ZERO
            bp = dtbp if acct.multiplier == "4" else regt
            non_marginable = excess
        return {
            "long_market_value": long_mv,
            "short_market_value": short_mv,
            "equity": equity,
            "initial_margin": initial,
            "maintenance_margin": maint,
            "buying_power": max(bp - reserved_equity - reserved_crypto, ZERO),
            "regt_buying_power": max(regt - reserved_equity - reserved_crypto, ZERO),
            "daytrading_buying_power": max(dtbp - reserved_equity, ZERO) if dtbp else ZERO,
            "non_marginable_buying_power": max(non_marginable - reserved_crypto, ZERO),
        }

    # -- orders -------------------------------------------------------------------------------

    def orders_of(self, acct: Account) -> list[Order]:
        return sorted(
            (o for o in self.orders.values() if o.account_id == acct.id), key=lambda o: o.seq
        )

    def reserved(self, acct: Account, asset: Asset, side: str) -> Decimal:
        """Quantity that working orders on ``side`` already claim; the exits of one bracket
        claim the same shares, so they count once."""
        claims: dict[str, Decimal] = {}
        for o in self.orders_of(acct):
            if o.asset is asset and o.side == side and o.status in RESERVING:
                key = o.parent.id if o.parent is not None else o.id
                claims[key] = max(claims.get(key, ZERO), o.remaining() or ZERO)
        return sum(claims.values(), ZERO)

    def by_client_id(self, acct: Account, client_order_id: str) -> Order | None:
        for o in self.orders.values():
            if o.account_id == acct.id and o.client_order_id == client_order_id:
                return o
        return None

    def submit(self, acct: Account, body: dict[str, Any]) -> tuple[Order, dict[str, Any]]:
        """Check an order as Alpaca does, book it, route it; returns the order and its JSON as
        of acceptance (what POST answers; fills happen right after, as on paper)."""
        if acct.trading_blocked or acct.account_blocked or acct.trade_suspended_by_user:
            raise err(403, 40310000, "account is not authorized to trade")  # [infer]
        symbol = str(body["symbol"])
        asset = self.resolve(symbol)
        if asset is None or asset.status != "active":
            raise err(422, 42210000, f'asset "{symbol}" not found')
        if not asset.tradable:
            raise err(422, 42210000, f'asset "{symbol}" is not tradable')  # [infer]
        side, otype, tif = body["side"], body["type"], body["time_in_force"]
        qty = Decimal(body["qty"]) if "qty" in body else None
        notional = Decimal(body["notional"]) if "notional" in body else None
        limit = Decimal(body["limit_price"]) if body.get("limit_price") else None
        stop = Decimal(body["stop_price"]) if body.get("stop_price") else None
        order_class = body.get("order_class", "")
        if qty is not None and qty <= 0:
            raise err(422, 40010001, "qty must be > 0")  # [infer]
        if order_class == "oco":
            raise err(422, 42210000, "oco orders are not emulated")
        trail_price = Decimal(body["trail_price"]) if body.get("trail_price") else None
        trail_percent = Decimal(body["trail_percent"]) if body.get("trail_percent") else None
        if otype == "trailing_stop":
            if (trail_price is None) == (trail_percent is None):
                raise err(422, 42210000, "trailing stop needs one of trail_price or trail_percent")
            if limit is not None or stop is not None:
                raise err(422, 42210000, "trailing stop takes no limit_price or stop_price")
            if tif not in ("day", "gtc"):
                raise err(422, 42210000, "trailing stop orders must be DAY or GTC")  # [infer]
            if order_class in ADVANCED:
                raise err(422, 42210000, "trailing stop orders must be simple orders")  # [infer]
        elif trail_price is not None or trail_percent is not None:
            raise err(422, 42210000, f"trail_price/trail_percent is not allowed for {otype} order")
        if otype in ("limit", "stop_limit") and limit is None:
            raise err(422, 40010001, "limit_price is required")  # [infer]
        if otype in ("stop", "stop_limit") and stop is None:
            raise err(422, 40010001, "stop_price is required")  # [infer]
        extended = body.get("extended_hours") is True
        if extended and (otype != "limit" or tif != "day"):
            # [doc Create an Order] extended_hours "only works with type limit and
            # time_in_force day"; the message is [obs] in third-party client logs with code
            # 42210000 (2020 servers answered 40010001 'only type="limit" is allowed for
            # extended hours orders'; newer ones "... must be DAY or GTC limit orders").
            raise err(422, 42210000, "extended hours order must be DAY limit orders")
        if asset.crypto:
            if acct.crypto_status != "ACTIVE":
                raise err(403, 40310000, "account is not allowed to trade crypto")  # [infer]
            if tif not in ("gtc", "ioc"):
                raise err(422, 42210000, "invalid crypto time_in_force")
            if otype not in ("market", "limit", "stop_limit"):
                raise err(422, 42210000, "invalid crypto order type")  # [infer]
        elif tif in AUCTIONS:
            if otype not in ("market", "limit"):
                # [spec TimeInForce] "Use this TIF with a market/limit order type"; the
                # message is [infer] in the style of the window's below.
                raise err(422, 42210000, f"{tif} orders must be market or limit orders")
            self._check_auction_window(tif)
        fractional = notional is not None or (qty is not None and qty != qty.to_integral_value())
        if fractional and not asset.crypto:
            if not asset.fractionable:
                raise err(422, 42210000, f'asset "{symbol}" is not fractionable')  # [infer]
            if tif != "day":
                raise err(422, 42210000, "fractional orders must be DAY orders")
            if order_class in ADVANCED:
                raise err(422, 42210000, "fractional orders must be simple orders")  # [infer]
        client_order_id = body.get("client_order_id") or str(uuid.uuid4())
        if self.by_client_id(acct, client_order_id) is not None:
            raise err(422, 40010001, "client_order_id must be unique")
        if not asset.crypto:
            _check_sub_penny(("limit_price", limit), ("stop_price", stop))
        quote = self.quote(asset)
        if otype in ("stop", "stop_limit") and stop is not None:
            if side == "buy" and stop <= quote.last:
                raise err(
                    422,
                    42210000,
                    "stop price must be greater than current price",
                    market_price=num(quote.last),
                    stop_price=num(stop),
                )
            if side == "sell" and stop >= quote.last:
                raise err(
                    422,
                    42210000,
                    "stop price must be less than current price",
                    market_price=num(quote.last),
                    stop_price=num(stop),
                )
        if order_class in ADVANCED:
            self._check_advanced(asset, body, side, otype, tif, limit, stop, quote)
        if not asset.crypto:
            self._check_wash(acct, asset, side, otype, limit)
        est_qty = qty if qty is not None else (notional or ZERO) / (quote.ask or Decimal(1))
        covered = self._check_sell(acct, asset, side, est_qty, fractional)
        self._check_pdt(acct, asset, side)
        if not covered:
            price = (
                limit
                if otype in ("limit", "stop_limit") and limit
                else (quote.ask if side == "buy" else quote.bid)
            )
            self._check_buying_power(acct, asset, side, est_qty, price, notional)

        now = self.clock()
        # The emulator's closed market is the pre- and after-market sessions: an extended-hours
        # order goes to the exchange at once, any other stock order queues until the open.
        routed = asset.crypto or self.market_open or extended
        order = self._book(
            acct,
            asset,
            client_order_id,
            side,
            otype,
            tif,
            qty,
            notional,
            limit,
            stop,
            order_class,
            "pending_new" if routed else "accepted",
            now,
            extended,
        )
        if otype == "trailing_stop":
            order.trail_price, order.trail_percent = trail_price, trail_percent
            order.trail_to(quote.last)
        if order_class in ADVANCED:
            self._add_legs(acct, order, body)
        snapshot = self.order_json(order, nested=True)
        if routed:
            self._route(order)
        else:
            self._emit(acct, "pending_new", order)
        return order, snapshot

    def _check_auction_window(self, tif: str) -> None:
        """Alpaca refuses an opg order from 9:28am, a cls one from 3:50pm, until 7:00pm ET: its
        auction of the day is too near or over, the next day's not yet taken. The message and
        the 403 40310000 are [obs] in third-party logs (QuantConnect/Lean#8374 and others:
        "opg orders must be submitted after 7:00pm and before 9:28am"; one paper log reads
        "... before 3:55pm" for cls, the docs say 3:50pm, which is used here). [infer] The
        window holds on trading days only (the emulator's are Monday to Friday): at a weekend
        no auction is near, and the order waits for the next session's."""
        now = datetime.fromtimestamp(self.clock(), ET)
        cutoff, words = AUCTION_CUTOFFS[tif]
        if now.weekday() < 5 and cutoff <= now.time() < AUCTION_REOPENS:
            raise err(
                403, 40310000, f"{tif} orders must be submitted after 7:00pm and before {words}"
            )

    def replace(
        self, acct: Account, order_id: str, body: dict[str, Any]
    ) -> tuple[Order, dict[str, Any]]:
        """PATCH /v2/orders/{id}: a new order takes the old one's place. Each field sent
        overrides the old order's, the rest carry over (qty too: Alpaca keeps the original qty
        even when part of it filled). The old order ends ``replaced`` with ``replaced_by``; the
        new one has a new id, its own client order id and ``replaces``. Returns the new order
        and its JSON as of acceptance, as POST does."""
        old = self.orders.get(order_id)
        if old is None or old.account_id != acct.id:
            raise err(404, 40410000, "order not found")
        if old.final:
            raise err(422, 42210000, f'order is already in "{old.status}" state')  # [infer]
        if old.status in ("accepted", "pending_new"):
            # [obs message] alpaca-trade-api-python#306; the code is [infer]
            raise err(422, 42210000, "unable to replace order, order isn't sent to exchange yet")
        if old.status in ("pending_cancel", "pending_replace"):
            raise err(422, 42210000, f'order is already in "{old.status}" state')  # [infer]
        if old.legs or old.parent is not None or old.order_class in ADVANCED:
            raise err(422, 42210000, "replacing orders of a bracket is not emulated")
        if old.notional is not None:
            # [doc] "Notional orders cannot be replaced"; the message is [infer]
            raise err(422, 42210000, "notional orders cannot be replaced")
        if body.get("qty") and not old.asset.crypto:
            # [doc] "You can only patch full shares" and "Qty of equity fractional orders are
            # not allowed to change"; the messages are [infer]
            if old.qty is not None and old.qty != old.qty.to_integral_value():
                raise err(422, 42210000, "qty of a fractional order cannot be changed")
            if Decimal(body["qty"]) != Decimal(body["qty"]).to_integral_value():
                raise err(422, 42210000, "qty must be a whole number of shares")
        trail = Decimal(body["trail"]) if body.get("trail") else None
        if trail is not None and old.type != "trailing_stop":
            # [doc] trail "works only for type=trailing_stop"; the message is [infer]
            raise err(422, 42210000, f"trail is not allowed for {old.type} order")
        qty = Decimal(body["qty"]) if body.get("qty") else old.qty
        tif = str(body.get("time_in_force") or old.time_in_force)
        limit = Decimal(body["limit_price"]) if body.get("limit_price") else old.limit_price
        stop = Decimal(body["stop_price"]) if body.get("stop_price") else old.stop_price
        trail_price, trail_percent = old.trail_price, old.trail_percent
        if trail is not None:  # the new value of whichever of the two the order trails by
            if trail_price is not None:
                trail_price = trail
            else:
                trail_percent = trail
        if (qty, tif, limit, stop, trail_price, trail_percent) == (
            old.qty,
            old.time_in_force,
            old.limit_price,
            old.stop_price,
            old.trail_price,
            old.trail_percent,
        ):
            # [obs] alpaca-py#412 (422 since 2024; 403 40310000 in 2021)
            raise err(422, 42210000, "order parameters are not changed")
        if qty is not None and qty <= 0:
            raise err(422, 40010001, "qty must be > 0")  # [infer]
        if limit != old.limit_price and old.type not in ("limit", "stop_limit"):
            raise err(422, 42210000, f"limit_price is not allowed for {old.type} order")  # [infer]
        if stop != old.stop_price and old.type not in ("stop", "stop_limit"):
            raise err(422, 42210000, f"stop_price is not allowed for {old.type} order")  # [infer]
        if not old.asset.crypto:
            _check_sub_penny(("limit_price", limit), ("stop_price", stop))
        client_order_id = body.get("client_order_id") or str(uuid.uuid4())
        if self.by_client_id(acct, client_order_id) is not None:
            raise err(422, 40010001, "client_order_id must be unique")
        now = self.clock()
        new = self._book(
            acct,
            old.asset,
            client_order_id,
            old.side,
            old.type,
            tif,
            qty,
            old.notional,
            limit,
            stop,
            old.order_class,
            "pending_new",
            now,
            old.extended_hours,
        )
        new.replaces, new.triggered, new.past_close = old.id, old.triggered, old.past_close
        if old.type == "trailing_stop":
            # The replacement trails from the mark the old order reached.
            new.trail_price, new.trail_percent, new.hwm = trail_price, trail_percent, old.hwm
            assert old.hwm is not None
            new.trail_to(old.hwm)
        old.status, old.updated_at = "replaced", now
        old.replaced_at, old.replaced_by = now, new.id
        # The stream's ``replaced`` event carries the old order; the new one follows as ``new``.
        self._emit(acct, "replaced", old)
        snapshot = self.order_json(new)
        self._route(new)
        return new, snapshot

    def _book(
        self,
        acct: Account,
        asset: Asset,
        client_order_id: str,
        side: str,
        otype: str,
        tif: str,
        qty: Decimal | None,
        notional: Decimal | None,
        limit: Decimal | None,
        stop: Decimal | None,
        order_class: str,
        status: str,
        now: float,
        extended_hours: bool = False,
        parent: Order | None = None,
    ) -> Order:
        self._seq += 1
        order = Order(
            id=str(uuid.uuid4()),
            seq=self._seq,
            client_order_id=client_order_id,
            account_id=acct.id,
            asset=asset,
            side=side,
            type=otype,
            time_in_force=tif,
            qty=qty,
            notional=notional,
            limit_price=limit,
            stop_price=stop,
            order_class=order_class,
            status=status,
            created_at=now,
            updated_at=now,
            submitted_at=now,
            extended_hours=extended_hours,
            parent=parent,
        )
        self.orders[order.id] = order
        return order

    def _check_advanced(
        self,
        asset: Asset,
        body: dict[str, Any],
        side: str,
        otype: str,
        tif: str,
        limit: Decimal | None,
        stop: Decimal | None,
        quote: Quote,
    ) -> None:
        order_class = body["order_class"]
        if asset.crypto:
            raise err(
                422, 42210000, f"crypto orders not allowed for advanced order_class: {order_class}"
            )
        tp, sl = body.get("take_profit"), body.get("stop_loss")
        if order_class == "bracket" and not (tp and sl):
            raise err(422, 40010001, "bracket orders require take_profit and stop_loss")
        if order_class == "oto" and bool(tp) == bool(sl):
            raise err(422, 40010001, "oto orders require one of take_profit and stop_loss")
        if tif not in ("day", "gtc"):
            raise err(422, 42210000, "only day and gtc are allowed for advanced orders")
        leg_prices = (
            ("take_profit.limit_price", (tp or {}).get("limit_price")),
            ("stop_loss.stop_price", (sl or {}).get("stop_price")),
            ("stop_loss.limit_price", (sl or {}).get("limit_price")),
        )
        _check_sub_penny(*((name, Decimal(str(v))) for name, v in leg_prices if v))
        base = limit if otype in ("limit", "stop_limit") and limit else (stop or quote.last)
        buy = side == "buy"
        if tp:
            tp_price = Decimal(tp["limit_price"])
            if buy and tp_price < base + CENT:
                raise err(422, 42210000, "take_profit.limit_price must be >= base_price + 0.01")
            if not buy and tp_price > base - CENT:
                raise err(422, 42210000, "take_profit.limit_price must be <= base_price - 0.01")
        if sl:
            sl_price = Decimal(sl["stop_price"])
            if buy and sl_price > base - CENT:
                raise err(422, 42210000, "stop_loss.stop_price must be <= base_price - 0.01")
            if not buy and sl_price < base + CENT:
                raise err(422, 42210000, "stop_loss.stop_price must be >= base_price + 0.01")

    def _add_legs(self, acct: Account, parent: Order, body: dict[str, Any]) -> None:
        exit_side = "sell" if parent.side == "buy" else "buy"
        now = parent.created_at
        if tp := body.get("take_profit"):
            parent.legs.append(
                self._book(
                    acct,
                    parent.asset,
                    str(uuid.uuid4()),
                    exit_side,
                    "limit",
                    parent.time_in_force,
                    parent.qty,
                    None,
                    Decimal(tp["limit_price"]),
                    None,
                    parent.order_class,
                    "held",
                    now,
                    parent=parent,
                )
            )
        if sl := body.get("stop_loss"):
            sl_limit = Decimal(sl["limit_price"]) if sl.get("limit_price") else None
            parent.legs.append(
                self._book(
                    acct,
                    parent.asset,
                    str(uuid.uuid4()),
                    exit_side,
                    "stop_limit" if sl_limit else "stop",
                    parent.time_in_force,
                    parent.qty,
                    None,
                    sl_limit,
                    Decimal(sl["stop_price"]),
                    parent.order_class,
                    "held",
                    now,
                    parent=parent,
                )
            )

    def _check_wash(
        self, acct: Account, asset: Asset, side: str, otype: str, limit: Decimal | None
    ) -> None:
        for o in self.orders_of(acct):
            if (
                o.asset is not asset
                or o.side == side
                or o.parent is not None
                or o.status not in RESERVING
            ):
                continue
            if o.type in ("market", "stop"):
                reason = "opposite side market/stop order exists"
            elif otype in ("market", "stop") or (
                limit is not None
                and o.limit_price is not None
                and (
                    (side == "buy" and limit >= o.limit_price)
                    or (side == "sell" and limit <= o.limit_price)
                )
            ):
                reason = "opposite side limit order exists"
            else:
                continue
            raise AlpacaError(
                403,
                {
                    "code": 40310000,
                    "existing_order_id": o.id,
                    "message": "potential wash trade detected. use complex orders",
                    "reject_reason": reason,
                },
            )

    def _check_sell(
        self, acct: Account, asset: Asset, side: str, qty: Decimal, fractional: bool
    ) -> bool:
        """Sell-side rules; True when the order only closes what the account holds."""
        pos = acct.positions.get(asset.symbol)
        held = pos.qty if pos else ZERO
        if side == "buy":
            return held < 0 and qty <= -held
        available = max(held - self.reserved(acct, asset, "sell"), ZERO)
        if asset.crypto:
            if qty > available:
                base = asset.symbol.split("/")[0]
                raise err(
                    403,
                    40310000,
                    f"insufficient balance for {base} "
                    f"(requested: {num(qty)}, available: {num(available)})",
                )
            return True
        if held > 0:
            if qty > available:
                raise err(
                    403,
                    40310000,
                    f"insufficient qty available for order (requested: "
                    f"{num(qty)}, available: {num(available)})",
                    available=num(available),
                    symbol=asset.symbol,
                )
            return True
        if fractional:
            raise err(422, 42210000, "fractional orders cannot be sold short")
        if not acct.shorting_enabled:
            raise err(403, 40310000, "account is not allowed to short")
        if not asset.shortable:
            raise err(422, 42210000, f'asset "{asset.symbol}" cannot be sold short')
        return False

    def _check_pdt(self, acct: Account, asset: Asset, side: str) -> None:
        if asset.crypto or acct.daytrade_count < 3 or asset.symbol not in acct.opened_today:
            return
        pos = acct.positions.get(asset.symbol)
        closing = pos is not None and ((side == "sell") == (pos.qty > 0))
        if closing and self.figures(acct)["equity"] < PDT_EQUITY:
            raise err(403, 40310000, "trade denied due to pattern day trading protection")

    def _check_buying_power(
        self,
        acct: Account,
        asset: Asset,
        side: str,
        qty: Decimal,
        price: Decimal,
        notional: Decimal | None,
    ) -> None:
        cost = notional if notional is not None else qty * price
        figures = self.figures(acct)
        available = figures["non_marginable_buying_power" if asset.crypto else "buying_power"]
        if cost > available:
            raise AlpacaError(
                403,
                {
                    "buying_power": num(available),
                    "code": 40310000,
                    "cost_basis": num(cost),
                    "message": "insufficient buying power",
                },
            )

    # -- the matching engine --------------------------------------------------------------------

    def _route(self, order: Order) -> None:
        order.status, order.updated_at = "new", self.clock()
        self._emit(self.accounts[order.account_id], "new", order)
        self._try_fill(order)
        if order.time_in_force in ("ioc", "fok") and order.status in WORKING:
            self._end(order, "canceled")

    def _executable_price(self, order: Order) -> Decimal | None:
        q = self.quote(order.asset)
        if not order.asset.crypto and not self.market_open and not order.extended_hours:
            return None
        buy = order.side == "buy"
        if order.type == "trailing_stop" and not order.triggered:
            order.trail_to(q.last)
            assert order.stop_price is not None
            if (buy and q.last < order.stop_price) or (not buy and q.last > order.stop_price):
                return None
            order.triggered = True
        if order.type in ("stop", "stop_limit") and not order.triggered:
            assert order.stop_price is not None
            if (buy and q.last < order.stop_price) or (not buy and q.last > order.stop_price):
                return None
            order.triggered = True
        price = q.ask if buy else q.bid
        if order.type in ("limit", "stop_limit"):
            assert order.limit_price is not None
            if (buy and price > order.limit_price) or (not buy and price < order.limit_price):
                return None
        return price

    def _try_fill(self, order: Order) -> None:
        # An auction order never trades in the continuous session: only in run_auction.
        if order.status not in WORKING or order.time_in_force in AUCTIONS:
            return
        price = self._executable_price(order)
        if price is None:
            return
        self._fill_rest(order, price)

    def _fill_rest(self, order: Order, price: Decimal) -> None:
        if order.qty is None:  # notional: the whole amount at once, 9 decimals
            qty = ((order.notional or ZERO) / price).quantize(NANO, rounding=ROUND_DOWN)
        else:
            qty = order.remaining() or ZERO
        self.execute(order, qty, price)

    def run_auction(self, tif: str) -> None:
        """The opening (``opg``) or closing (``cls``) auction: each stock order of that time in
        force still waiting trades in full at the auction's one price if it is a market order
        or its limit reaches that price; the rest are ``canceled`` ([spec TimeInForce] "Any
        unfilled orders after the open will be cancelled", and [spec OrderStatus] canceled
        covers "canceled by the exchanges due to its time-in-force"). [infer] The auction's
        price is the symbol's last trade as quoted then, and an auction fills all or nothing
        (the emulator has no auction book to fill part of an order against).

        An opg order queued (``accepted``) since the close is for this opening auction; a cls
        order queued while the market was shut is for the next session's close, not this one,
        so the closing auction takes only orders routed in the session."""
        waiting = RESERVING if tif == "opg" else WORKING
        for order in sorted(self.orders.values(), key=lambda o: o.seq):
            if order.time_in_force != tif or order.asset.crypto or order.status not in waiting:
                continue
            if order.status in ("accepted", "pending_new"):
                self._route(order)  # queued until now, it reaches the exchange for the auction
            price = self.quote(order.asset).last
            limit = order.limit_price
            buy = order.side == "buy"
            if limit is None or (buy and price <= limit) or (not buy and price >= limit):
                self._fill_rest(order, price)
            else:
                self._end(order, "canceled")

    def execute(self, order: Order, qty: Decimal, price: Decimal) -> None:
        """One execution of ``qty`` at ``price``: order, position and cash move together."""
        acct = self.accounts[order.account_id]
        now = self.clock()
        total = order.filled_qty + qty
        avg_before = order.filled_avg_price or ZERO
        order.filled_avg_price = (
            ((avg_before * order.filled_qty + price * qty) / total).quantize(NANO).normalize()
        )
        order.filled_qty = total
        full = order.qty is None or total >= order.qty
        order.status = "filled" if full else "partially_filled"
        order.updated_at = now
        if full:
            order.filled_at = now
        signed = qty if order.side == "buy" else -qty
        position_qty = self._apply_position(acct, order.asset, signed, price)
        acct.cash -= signed * price
        self._emit(
            acct,
            "fill" if full else "partial_fill",
            order,
            execution_id=str(uuid.uuid4()),
            price=num(price),
            qty=num(qty),
            position_qty=num(position_qty),
        )
        if not full:
            return
        for leg in order.legs:
            if leg.status == "held":
                leg.qty = order.filled_qty
                self._route(leg)
        if order.parent is not None:
            for sibling in order.parent.legs:
                if sibling is not order and not sibling.final:
                    self._end(sibling, "canceled")

    def _apply_position(
        self, acct: Account, asset: Asset, signed: Decimal, price: Decimal
    ) -> Decimal:
        pos = acct.positions.get(asset.symbol)
        if pos is None or pos.qty == 0:
            acct.positions[asset.symbol] = Position(
                asset, signed, signed * price, self.quote(asset).last
            )
            acct.opened_today.add(asset.symbol)
            return signed
        old = pos.qty
        new = old + signed
        if (old > 0) == (signed > 0):
            pos.cost_basis += signed * price
        else:
            if asset.symbol in acct.opened_today and not asset.crypto:
                acct.daytrade_count += 1
            if new != 0 and (new > 0) != (old > 0):
                pos.cost_basis = new * price  # flipped: a new position at this price
                acct.opened_today.add(asset.symbol)
            else:  # reduced: the rest keeps its average price
                pos.cost_basis = pos.cost_basis * new / old
        if new == 0:
            del acct.positions[asset.symbol]
        else:
            pos.qty = new
        return new

    def _end(self, order: Order, status: str) -> None:
        now = self.clock()
        order.status, order.updated_at = status, now
        if status == "canceled":
            order.canceled_at = now
        elif status == "expired":
            order.expired_at = now
        elif status == "rejected":
            order.failed_at = now
        self._emit(self.accounts[order.account_id], status, order)
        for leg in order.legs:  # an entry that ends unfilled takes its exits with it
            if not leg.final:
                self._end(leg, "canceled")

    def cancel(self, acct: Account, order_id: str, *, pending: bool = False) -> Order:
        """``pending``: the cancel is only requested (``pending_cancel``, the order still holds
        what it reserved) until ``finish_cancel``, as at Alpaca when it does not land at once."""
        order = self.orders.get(order_id)
        if order is None or order.account_id != acct.id:
            raise err(404, 40410000, "order not found")
        if order.final:
            raise err(422, 42210000, f'order is already in "{order.status}" state')
        if pending:
            order.status, order.updated_at = "pending_cancel", self.clock()
            self._emit(acct, "pending_cancel", order)
            return order
        self.finish_cancel(order)
        return order

    def finish_cancel(self, order: Order) -> None:
        if order.final:
            return
        self._end(order, "canceled")
        if order.parent is not None:  # the exits of a bracket are one-cancels-other
            for sibling in order.parent.legs:
                if not sibling.final:
                    self._end(sibling, "canceled")

    # -- clock -------------------------------------------------------------------------------

    def open_market(self) -> None:
        """The session opens with its opening auction (opg orders fill or are canceled), then
        queued orders are routed and resting ones may fill."""
        self.market_open = True
        self.run_auction("opg")
        for order in sorted(self.orders.values(), key=lambda o: o.seq):
            if order.past_close and order.status in WORKING:
                self._end(order, "expired")  # its day ended with the after-market
            elif order.status == "accepted":
                self._route(order)
            elif order.status in WORKING:
                self._try_fill(order)

    def close_market(self) -> None:
        """The regular session ends with its closing auction (working cls orders fill or are
        canceled; queued ones wait for the next session's). Working day orders expire, but
        extended-hours ones work on through the after-market ([spec TimeInForce] "if marked as
        eligible for extended hours, the order can also execute during supported extended
        hours"); new stock orders queue unless extended. An opg order still working waits for
        the next opening auction."""
        self.run_auction("cls")
        self.market_open = False
        for order in sorted(self.orders.values(), key=lambda o: o.seq):
            if order.time_in_force == "day" and order.status in WORKING and not order.asset.crypto:
                if order.extended_hours:
                    order.past_close = True
                else:
                    self._end(order, "expired")
        for acct in self.accounts.values():
            acct.opened_today.clear()
            acct.last_equity = self.figures(acct)["equity"]

    def clock_json(self) -> dict[str, Any]:
        now = datetime.fromtimestamp(self.clock(), ET)

        def session(day: datetime) -> tuple[datetime, datetime]:
            return (
                day.replace(hour=9, minute=30, second=0, microsecond=0),
                day.replace(hour=16, minute=0, second=0, microsecond=0),
            )

        def next_weekday(day: datetime) -> datetime:
            day += timedelta(days=1)
            while day.weekday() >= 5:
                day += timedelta(days=1)
            return day

        opens, closes = session(now)
        if self.market_open:
            next_close = closes if now < closes else now + timedelta(hours=1)
            next_open, _ = session(next_weekday(now))
        else:
            day = now if now.weekday() < 5 and now < opens else next_weekday(now)
            next_open, next_close = session(day)
        stamp = now.isoformat(timespec="microseconds")
        return {
            "timestamp": stamp,
            "is_open": self.market_open,
            "next_open": next_open.isoformat(),
            "next_close": next_close.isoformat(),
        }

    # -- JSON --------------------------------------------------------------------------------

    def _emit(self, acct: Account, event: str, order: Order, **extra: str) -> None:
        data: dict[str, Any] = {"event": event, "order": self.order_json(order)}
        if event != "new":
            data["timestamp"] = rfc3339(self.clock())
        data.update(extra)
        for listener in list(self.listeners):
            listener(acct, data)

    def order_json(self, order: Order, *, nested: bool = False) -> dict[str, Any]:
        def t(v: float | None) -> str | None:
            return rfc3339(v) if v is not None else None

        def d(v: Decimal | None) -> str | None:
            return num(v) if v is not None else None

        return {
            "id": order.id,
            "client_order_id": order.client_order_id,
            "created_at": rfc3339(order.created_at),
            "updated_at": t(order.updated_at),
            "submitted_at": t(order.submitted_at),
            "filled_at": t(order.filled_at),
            "expired_at": t(order.expired_at),
            "canceled_at": t(order.canceled_at),
            "failed_at": t(order.failed_at),
            "replaced_at": t(order.replaced_at),
            "replaced_by": order.replaced_by,
            "replaces": order.replaces,
            "asset_id": order.asset.id,
            "symbol": order.asset.symbol,
            "asset_class": order.asset.asset_class,
            "notional": d(order.notional),
            "qty": d(order.qty),
            "filled_qty": num(order.filled_qty),
            "filled_avg_price": d(order.filled_avg_price),
            "order_class": order.order_class,
            "order_type": order.type,
            "type": order.type,
            "side": order.side,
            "time_in_force": order.time_in_force,
            "limit_price": d(order.limit_price),
            "stop_price": d(order.stop_price),
            "status": order.status,
            "extended_hours": order.extended_hours,
            "legs": [self.order_json(leg) for leg in order.legs] if nested and order.legs else None,
            "trail_percent": d(order.trail_percent),
            "trail_price": d(order.trail_price),
            "hwm": d(order.hwm),
        }

    def account_json(self, acct: Account) -> dict[str, Any]:
        f = self.figures(acct)
        return {
            "id": acct.id,
            "account_number": acct.account_number,
            "status": acct.status,
            "crypto_status": acct.crypto_status,
            "currency": "USD",
            "buying_power": num(f["buying_power"]),
            "regt_buying_power": num(f["regt_buying_power"]),
            "daytrading_buying_power": num(f["daytrading_buying_power"]),
            "non_marginable_buying_power": num(f["non_marginable_buying_power"]),
            "cash": num(acct.cash),
            "accrued_fees": "0",
            "portfolio_value": num(f["equity"]),
            "pattern_day_trader": acct.pattern_day_trader,
            "trading_blocked": acct.trading_blocked,
            "transfers_blocked": acct.transfers_blocked,
            "account_blocked": acct.account_blocked,
            "created_at": rfc3339(acct.created_at),
            "trade_suspended_by_user": acct.trade_suspended_by_user,
            "multiplier": acct.multiplier,
            "shorting_enabled": acct.shorting_enabled,
            "equity": num(f["equity"]),
            "last_equity": num(acct.last_equity),
            "long_market_value": num(f["long_market_value"]),
            "short_market_value": num(f["short_market_value"]),
            "initial_margin": num(f["initial_margin"]),
            "maintenance_margin": num(f["maintenance_margin"]),
            "last_maintenance_margin": num(f["maintenance_margin"]),
            "sma": "0",
            "daytrade_count": acct.daytrade_count,
            "balance_asof": datetime.fromtimestamp(self.clock(), ET).date().isoformat(),
            "crypto_tier": 1,
            "options_trading_level": 0,
        }

    def position_json(self, acct: Account, pos: Position) -> dict[str, Any]:
        q = self.quote(pos.asset)
        price = q.last
        mv = pos.qty * price
        cost = pos.cost_basis
        upl = mv - cost
        intraday = (price - pos.lastday_price) * pos.qty
        reserved = self.reserved(acct, pos.asset, "sell" if pos.qty > 0 else "buy")

        def ratio(a: Decimal, b: Decimal) -> str:
            return num((a / b).quantize(Decimal("1e-16"))) if b else "0"

        return {
            "asset_id": pos.asset.id,
            "symbol": pos.asset.position_symbol,
            "exchange": pos.asset.exchange,
            "asset_class": pos.asset.asset_class,
            "asset_marginable": pos.asset.marginable,
            "qty": num(pos.qty),
            "qty_available": num(pos.qty - reserved if pos.qty > 0 else pos.qty + reserved),
            "avg_entry_price": num(pos.avg_entry_price),
            "side": "long" if pos.qty > 0 else "short",
            "market_value": num(mv),
            "cost_basis": num(cost),
            "unrealized_pl": num(upl),
            "unrealized_plpc": ratio(upl, abs(cost)),
            "unrealized_intraday_pl": num(intraday),
            "unrealized_intraday_plpc": ratio(intraday, abs(pos.qty * pos.lastday_price)),
            "current_price": num(price),
            "lastday_price": num(pos.lastday_price),
            "change_today": ratio(price - pos.lastday_price, pos.lastday_price),
        }
