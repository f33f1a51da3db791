"""Every setting is documented in .env.example with a one-line comment, and nothing else is."""

from __future__ import annotations

import re
from pathlib import Path

from bot.settings import Settings

EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"


def test_env_example_lists_every_setting_with_a_comment() -> None:
    lines = EXAMPLE.read_text().splitlines()
    names = []
    for i, line in enumerate(lines):
        m = re.match(r"^([A-Z0-9_]+)=", line)
        if m:
            names.append(m.group(1))
            previous = lines[i - 1] if i else ""
            assert previous.startswith("# ") or re.match(r"^[A-Z0-9_]+=", previous), (
                f"{m.group(1)} has no comment above it (or above its group)"
            )
    fields = {name.upper() for name in Settings.model_fields}
    assert set(names) == fields, (
        f"missing: {sorted(fields - set(names))}; unknown: {sorted(set(names) - fields)}"
    )
