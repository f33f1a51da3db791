"""Secret scanning (security requirement 30): no tracked file holds a secret that is not in
``.secrets.baseline``, the reviewed list of fake ones (emulators' client secrets, test
fixtures, example URLs). Runs in the suite, so CI runs it on every submission."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from detect_secrets import SecretsCollection
from detect_secrets.settings import default_settings

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / ".secrets.baseline"


def tracked_files() -> list[str]:
    git = shutil.which("git")
    try:
        assert git is not None
        out = subprocess.run(  # noqa: S603 - git, with fixed arguments
            [git, "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
    except (AssertionError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: nothing tells which files are tracked")
    return [f for f in out.splitlines() if f != BASELINE.name and (ROOT / f).is_file()]


@pytest.mark.first
def test_no_tracked_file_holds_an_unreviewed_secret() -> None:
    reviewed = {
        (name, found["hashed_secret"])
        for name, results in json.loads(BASELINE.read_text())["results"].items()
        for found in results
    }
    secrets = SecretsCollection(root=str(ROOT))
    with default_settings():
        secrets.scan_files(*tracked_files(), num_processors=2)
    new = sorted(
        f"{name}:{s.line_number} ({s.type})"
        for name, s in secrets
        if (name, s.secret_hash) not in reviewed
    )
    assert not new, (
        "Possible secrets in tracked files: "
        + ", ".join(new)
        + ". Remove them; if one is a fake (a test fixture), review it and add it with "
        "`detect-secrets scan --baseline .secrets.baseline $(git ls-files)`."
    )
