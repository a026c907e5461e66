"""AES-256-GCM for secrets at rest, in the ADR's stored format.

Stored value: ``hex(iv, 12 bytes) + ":" + hex(ciphertext || 16-byte tag)``: exactly what the
TypeScript worker's ``encrypt()`` wrote, so its rows decrypt here with the same key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_KEY_RE = re.compile(r"^[0-9a-fA-F]{64}$")
_STORED_RE = re.compile(r"^[0-9a-fA-F]{24}:[0-9a-fA-F]{32,}$")


class EncryptionError(Exception):
    """A secret could not be encrypted or decrypted."""


class InvalidKeyError(EncryptionError):
    """ENCRYPTION_KEY is missing or malformed."""


class DecryptionError(EncryptionError):
    """A stored value is malformed, was tampered with, or was written with another key."""


def parse_keys(raw: str | None) -> list[bytes]:
    """Parse ENCRYPTION_KEY: one or more comma-separated 64-hex-character keys."""
    if raw is None or not raw.strip():
        raise InvalidKeyError("ENCRYPTION_KEY is not set")
    keys: list[bytes] = []
    for i, part in enumerate(p.strip() for p in raw.split(",")):
        if not _KEY_RE.match(part):
            raise InvalidKeyError(
                f"ENCRYPTION_KEY entry {i + 1} must be 64 hex characters (32 bytes)"
            )
        keys.append(bytes.fromhex(part))
    return keys


def looks_encrypted(value: str) -> bool:
    """Whether a string has the stored format (iv:ciphertext, both hex)."""
    return bool(_STORED_RE.match(value))


class Cipher:
    """Encrypts with the first key; decrypts with whichever configured key fits."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise InvalidKeyError("at least one encryption key is required")
        for key in keys:
            if len(key) != 32:
                raise InvalidKeyError("encryption keys must be 32 bytes")
        self._aeads = [AESGCM(k) for k in keys]

    @classmethod
    def from_env_value(cls, raw: str | None) -> Cipher:
        """Build from the ENCRYPTION_KEY setting."""
        return cls(parse_keys(raw))

    def encrypt(self, plaintext: str) -> str:
        """Encrypt with the primary (first) key, under a fresh random 96-bit IV."""
        iv = os.urandom(12)
        data = self._aeads[0].encrypt(iv, plaintext.encode("utf-8"), None)
        return iv.hex() + ":" + data.hex()

    def decrypt(self, stored: str) -> str:
        """Decrypt a stored value; raise DecryptionError rather than return garbage."""
        return self.decrypt_with_index(stored)[0]

    def decrypt_with_index(self, stored: str) -> tuple[str, int]:
        """Decrypt and say which key (0 = primary) opened it."""
        if not isinstance(stored, str) or not _STORED_RE.match(stored):
            raise DecryptionError("stored secret is not in the iv:ciphertext hex format")
        iv_hex, data_hex = stored.split(":", 1)
        if len(data_hex) % 2:
            raise DecryptionError("stored secret has an odd-length ciphertext")
        iv, data = bytes.fromhex(iv_hex), bytes.fromhex(data_hex)
        for index, aead in enumerate(self._aeads):
            try:
                plain = aead.decrypt(iv, data, None)
            except InvalidTag:
                continue
            try:
                return plain.decode("utf-8"), index
            except UnicodeDecodeError as exc:  # pragma: no cover - authenticated but not text
                raise DecryptionError("decrypted secret is not UTF-8 text") from exc
        raise DecryptionError(
            "stored secret could not be decrypted: wrong ENCRYPTION_KEY or tampered value"
        )

    def reencrypt(self, stored: str) -> str | None:
        """The value under the primary key, or None when it already is."""
        plain, index = self.decrypt_with_index(stored)
        return None if index == 0 else self.encrypt(plain)
