"""End-to-end tests reuse the Slack tests' fake and harness, imported as `tests.slack.…`."""

from __future__ import annotations

import sys
from pathlib import Path

# `python -m pytest` (scripts/test) has the repository root on sys.path already; a bare
# `pytest tests/e2e` does not, and the Slack harness is imported as a package from there.
ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
