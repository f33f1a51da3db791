from __future__ import annotations

from tests.bot.signals.conftest import clock, core  # noqa: F401  (shared fixtures)
