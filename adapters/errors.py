"""One error hierarchy for every broker. Vendor errors become these at the adapter's edge
(``raise ... from e``), each with a message that tells the member what to do."""

from __future__ import annotations

from bot.errors import TradecordError


class BrokerError(TradecordError):
    code = "broker-error"
    default_message = "The broker refused the request."

    def __init__(self, user_message: str | None = None, *, vendor_code: str | None = None) -> None:
        super().__init__(user_message)
        self.vendor_code = vendor_code


class AuthorizationExpired(BrokerError):
    code = "authorization-expired"
    default_message = (
        "Your authorization at the broker has expired or was revoked. "
        "Run /connect again for this broker to re-link it."
    )


class InsufficientBuyingPower(BrokerError):
    code = "insufficient-buying-power"
    default_message = (
        "Not enough buying power for this order. Lower the quantity, or check /balances."
    )


class MarketClosed(BrokerError):
    code = "market-closed"
    default_message = (
        "The market for this symbol is closed. Try again in trading hours, "
        "or use a GTC limit order that waits for the open."
    )


class AssetClassNotSupported(BrokerError):
    code = "asset-class-not-supported"
    default_message = "This account cannot trade that kind of instrument."


class InvalidOrder(BrokerError):
    code = "invalid-order"
    default_message = "The broker rejected the order as invalid. Check symbol, quantity and prices."


class SymbolNotFound(InvalidOrder):
    code = "unknown-symbol"
    default_message = "The broker does not know that symbol. Check the ticker and try again."


class OrderNotFound(BrokerError):
    code = "order-not-found"
    default_message = (
        "The broker has no such order. It may have filled or been cancelled; see /orders."
    )


class OrderNotCancelable(BrokerError):
    code = "order-not-cancelable"
    default_message = "That order can no longer be cancelled (it has filled or already ended)."


class OrderNotReplaceable(BrokerError):
    code = "order-not-replaceable"
    default_message = (
        "That order can no longer be changed: it has filled, ended, or a change or cancel of it "
        "is still being carried out. /orders shows what is still working."
    )


class RateLimited(BrokerError):
    code = "rate-limited"
    default_message = (
        "The broker is limiting how fast we can call it. Wait a few seconds and try again."
    )

    def __init__(
        self,
        user_message: str | None = None,
        *,
        retry_after: float | None = None,
        vendor_code: str | None = None,
    ) -> None:
        if user_message is None and retry_after is not None and retry_after > 10:
            # Longer than a call waits (adapters.base.MAX_RETRY_WAIT): "a few seconds" is wrong.
            user_message = (
                "The broker is limiting how fast we can call it, and asks us to wait "
                f"{wait_text(retry_after)} before the next request. Try again then."
            )
        super().__init__(user_message, vendor_code=vendor_code)
        self.retry_after = retry_after


def wait_text(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} seconds"
    minutes = round(seconds / 60)
    return f"{minutes} minutes" if minutes < 90 else f"{round(minutes / 60)} hours"


class BrokerUnavailable(BrokerError):
    """The broker did not answer usefully (timeout, connection error, 5xx).

    ``maybe_sent`` is true when a write may have reached the broker: the caller must look the
    order up before doing anything else, and must never resend blindly.
    """

    code = "broker-unavailable"
    default_message = "The broker is not answering right now. Try again in a minute."

    def __init__(
        self,
        user_message: str | None = None,
        *,
        maybe_sent: bool = False,
        vendor_code: str | None = None,
    ) -> None:
        super().__init__(user_message, vendor_code=vendor_code)
        self.maybe_sent = maybe_sent


class OrderStateUnknown(BrokerError):
    code = "order-state-unknown"
    default_message = (
        "We could not confirm whether the broker received this order. We will not resend it; "
        "we are checking with the broker and will tell you the outcome. See /orders meanwhile."
    )
