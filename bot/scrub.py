"""Scrub known secrets from text before it leaves for Slack or GitHub, and cut it to size."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

# Token shapes that must never be echoed even when we don't know the exact value.
SECRET_PATTERNS = [
    re.compile(r"xox[abposr]-[0-9A-Za-z-]{10,}"),
    re.compile(r"xapp-[0-9A-Za-z-]{10,}"),
    re.compile(r"gh[pousr]_[0-9A-Za-z]{20,}"),
    re.compile(r"github_pat_[0-9A-Za-z_]{20,}"),
    re.compile(r"sk-ant-[0-9A-Za-z_-]{10,}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
]
_ENV_HINTS = ("TOKEN", "SECRET", "KEY", "PASSWORD", "DATABASE_URL")
MASK = "[redacted]"

# Slack: 40,000 characters per message text, 3,000 per section block text.
SLACK_TEXT_LIMIT = 39_000
SLACK_BLOCK_LIMIT = 2_900
# GitHub: 65,536 characters per issue comment body.
GITHUB_COMMENT_LIMIT = 65_000


class Scrubber:
    """Replaces every known secret value and token-shaped string with a mask."""

    def __init__(self, secrets: Iterable[str], *, include_env: bool = True) -> None:
        values = {s for s in secrets if s and len(s) >= 8}
        if include_env:
            values |= {
                v
                for k, v in os.environ.items()
                if v and len(v) >= 8 and any(h in k.upper() for h in _ENV_HINTS)
            }
        # Longest first, so a secret containing another is masked whole.
        self._values = sorted(values, key=len, reverse=True)

    def add(self, secret: str | None) -> None:
        """Also mask this value (e.g. a token fetched at run time)."""
        if secret and len(secret) >= 8 and secret not in self._values:
            self._values.append(secret)
            self._values.sort(key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, MASK)
        for pattern in SECRET_PATTERNS:
            text = pattern.sub(MASK, text)
        return text


def truncate(text: str, limit: int, marker: str = "… (truncated)") -> str:
    """Cut text to at most `limit` characters, saying so."""
    if len(text) <= limit:
        return text
    return text[: max(limit - len(marker), 0)] + marker
