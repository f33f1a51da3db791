"""Errors raised by the emulator.

Two kinds: :class:`EmulatorError` is raised to the *test* (or terminal chat) when it asks for
something the real Discord client would never let a user do; :class:`APIError` is turned into
the JSON error body Discord sends to the *bot*.
"""

from __future__ import annotations

from typing import Any


class EmulatorError(Exception):
    """A driving call that a real Discord user could not perform (or a bot that never answered)."""


class APIError(Exception):
    """A Discord REST error: rendered as ``{"code", "message", "errors"?}`` with ``status``."""

    def __init__(
        self, status: int, code: int, message: str, errors: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors:
            body["errors"] = self.errors
        return body


def unknown(entity: str, code: int) -> APIError:
    """Discord's 404 for a missing object, e.g. ``unknown("Channel", 10003)``."""
    return APIError(404, code, f"Unknown {entity}")


UNAUTHORIZED = APIError(401, 0, "401: Unauthorized")
MISSING_ACCESS = APIError(403, 50001, "Missing Access")
MISSING_PERMISSIONS = APIError(403, 50013, "Missing Permissions")
EMPTY_MESSAGE = APIError(400, 50006, "Cannot send an empty message")
CANNOT_DM = APIError(403, 50007, "Cannot send messages to this user")
ALREADY_ACKNOWLEDGED = APIError(400, 40060, "Interaction has already been acknowledged.")
UNKNOWN_INTERACTION = APIError(404, 10062, "Unknown interaction")
UNKNOWN_WEBHOOK = APIError(404, 10015, "Unknown Webhook")
INVALID_WEBHOOK_TOKEN = APIError(401, 50027, "Invalid Webhook Token")
UNKNOWN_MESSAGE = APIError(404, 10008, "Unknown Message")
