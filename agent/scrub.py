"""Mask secrets in what the agent program sends out (messages, error reports, logs)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import Any

MASK = "[redacted]"

# Token shapes masked even when their value is unknown to us.
PATTERNS = (
    re.compile(r"gh[pousr]_[0-9A-Za-z]{20,}"),
    re.compile(r"github_pat_[0-9A-Za-z_]{20,}"),
    re.compile(r"xox[a-z]-[0-9A-Za-z-]{10,}"),
    re.compile(r"xapp-[0-9A-Za-z-]{10,}"),
    re.compile(r"sk-ant-[0-9A-Za-z_-]{10,}"),
    re.compile(r"AKIA[0-9A-Z]{16}"),
    re.compile(
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|$)", re.S
    ),
)
# Shorter values are not worth masking: they would mangle ordinary text.
MIN_SECRET_LENGTH = 8


class Scrubber:
    """Replaces known secret values and token-shaped strings with a mask.

    Values can be added while another thread scrubs (the sender thread scrubs what the
    main thread queued, and a git token may be learnt in between).
    """

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._lock = threading.Lock()
        self._values: tuple[str, ...] = ()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        """Also mask this value from now on."""
        if not secret or len(secret) < MIN_SECRET_LENGTH:
            return
        with self._lock:
            if secret not in self._values:
                # Longest first, so a secret that contains another is masked whole.
                self._values = tuple(sorted((*self._values, secret), key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, MASK)
        for pattern in PATTERNS:
            text = pattern.sub(MASK, text)
        return text

    def deep(self, value: Any) -> Any:
        """Scrub every string inside a JSON-like value (keys included)."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {self(str(k)): self.deep(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.deep(v) for v in value]
        return value


def cut(text: str, limit: int, marker: str = "\n… (cut)") -> str:
    """At most `limit` characters of text, saying so when it was cut."""
    if len(text) <= limit:
        return text
    return text[: max(limit - len(marker), 0)] + marker


def tail(text: str, limit: int, marker: str = "… (cut)\n") -> str:
    """The last `limit` characters of text, saying so when it was cut."""
    if len(text) <= limit:
        return text
    return marker + text[-max(limit - len(marker), 0) :]
