"""Domain errors: each carries a message written for the member, saying what to do next.

Services raise these; the Discord error handler and the web layer render ``user_message``
verbatim, so it must never contain secrets or internal detail.
"""

from __future__ import annotations


class TradecordError(Exception):
    """Base of every error a member may see. ``code`` is stable and machine-readable."""

    code = "error"
    default_message = "Something went wrong."

    def __init__(self, user_message: str | None = None) -> None:
        self.user_message = user_message or self.default_message
        super().__init__(self.user_message)


class InvalidInput(TradecordError):
    code = "invalid-input"
    default_message = "That input is not valid."


class NotFound(TradecordError):
    code = "not-found"
    default_message = "Nothing matches that."


class PermissionDenied(TradecordError):
    code = "permission-denied"
    default_message = "You are not allowed to do that."


class LimitReached(TradecordError):
    code = "limit-reached"
    default_message = "You have reached a limit."


class Conflict(TradecordError):
    code = "conflict"
    default_message = "That conflicts with something that already exists."


class ConfigurationError(TradecordError):
    """A setting is missing or malformed; raised at start-up and printed as one line."""

    code = "configuration"
