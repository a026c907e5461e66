"""Side-API credentials: the global bearer token and job tokens scoped to one request.

A job token is `clj1.<payload>.<mac>`: the payload (base64url JSON) names the request and an
expiry, the MAC is HMAC-SHA256 under a key derived with HKDF from CLARITY_API_TOKEN (else
ENCRYPTION_KEY), so no token table is needed and any replica can check any token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bot.settings import Settings

PREFIX = "clj1"
_HKDF_INFO = b"clarity/side-api/job-token/v1"


class TokenError(Exception):
    """No usable credential: the message says why (shown in the 401)."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the operator (global token) or one job (scoped to request_id)."""

    request_id: str | None

    @property
    def is_global(self) -> bool:
        """The operator's token, not a job's."""
        return self.request_id is None

    def may_touch(self, request_id: str) -> bool:
        """Whether this caller may read or change the given request."""
        return self.request_id is None or hmac.compare_digest(
            self.request_id.encode(), request_id.encode()
        )


GLOBAL = Principal(request_id=None)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenAuthority:
    """Issues and checks side-API credentials for one set of settings."""

    def __init__(self, settings: Settings) -> None:
        self._global = (settings.secret("clarity_api_token") or "").encode() or None
        seed = settings.secret("clarity_api_token") or settings.secret("encryption_key")
        self._key = (
            HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(
                seed.encode()
            )
            if seed
            else None
        )

    @property
    def can_issue(self) -> bool:
        """Whether job tokens can be made (a key source is configured)."""
        return self._key is not None

    def _mac(self, payload: str) -> bytes:
        assert self._key is not None
        return hmac.new(self._key, f"{PREFIX}.{payload}".encode(), hashlib.sha256).digest()

    def issue(self, request_id: str, ttl_s: int, *, now: float | None = None) -> str:
        """A token for one request, valid for ttl_s seconds."""
        if self._key is None:
            raise TokenError("neither CLARITY_API_TOKEN nor ENCRYPTION_KEY is set")
        expires = int((time.time() if now is None else now) + ttl_s)
        payload = _b64(json.dumps({"r": request_id, "e": expires}, separators=(",", ":")).encode())
        return f"{PREFIX}.{payload}.{_b64(self._mac(payload))}"

    def authenticate(self, authorization: str | None, *, now: float | None = None) -> Principal:
        """The caller behind an Authorization header, or TokenError."""
        if not authorization:
            raise TokenError("missing Authorization: Bearer token")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise TokenError("Authorization must be 'Bearer <token>'")
        raw = token.encode()
        if self._global is not None and hmac.compare_digest(raw, self._global):
            return GLOBAL
        if self._key is not None and token.startswith(PREFIX + "."):
            return self._scoped(token, now=now)
        raise TokenError("invalid token")

    def _scoped(self, token: str, *, now: float | None) -> Principal:
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenError("invalid token")
        _, payload, mac = parts
        try:
            given = _unb64(mac)
        except (binascii.Error, ValueError) as exc:
            raise TokenError("invalid token") from exc
        if not hmac.compare_digest(given, self._mac(payload)):
            raise TokenError("invalid token")
        try:
            claims = json.loads(_unb64(payload))
            request_id, expires = str(claims["r"]), int(claims["e"])
        except (binascii.Error, ValueError, KeyError, TypeError) as exc:
            raise TokenError("invalid token") from exc
        if expires < (time.time() if now is None else now):
            raise TokenError("token expired")
        return Principal(request_id=request_id)
