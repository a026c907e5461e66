"""The application's dependencies, made once at start-up and passed to every handler."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import aiohttp
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.metrics import Metrics
from bot.settings import Settings
from storage.crypto import Cipher, InvalidKeyError

log = logging.getLogger(__name__)


class NotConfiguredError(Exception):
    """A feature was used whose settings are missing; the message names them."""


@dataclass
class Services:
    """Everything a handler or job needs. Constructed by build_services, or by tests."""

    settings: Settings
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    metrics: Metrics = field(default_factory=Metrics)
    cipher: Cipher | None = None
    http: aiohttp.ClientSession | None = None

    def require_cipher(self) -> Cipher:
        """The cipher, or a clear error naming ENCRYPTION_KEY."""
        if self.cipher is None:
            raise NotConfiguredError("ENCRYPTION_KEY is not set: it is needed to read secrets")
        return self.cipher

    def http_session(self) -> aiohttp.ClientSession:
        """A shared outbound HTTP session (created on first use inside the event loop)."""
        if self.http is None or self.http.closed:
            self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self.http

    async def close(self) -> None:
        """Release connections."""
        if self.http is not None and not self.http.closed:
            await self.http.close()
        await self.engine.dispose()


def build_cipher(settings: Settings) -> Cipher | None:
    """The cipher for ENCRYPTION_KEY, or None if unset (a malformed key is an error)."""
    raw = settings.secret("encryption_key")
    if not raw:
        return None
    try:
        return Cipher.from_env_value(raw)
    except InvalidKeyError:
        raise
