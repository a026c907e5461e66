"""AES-256-GCM in the ADR's format: the DESIGN.md vector, wrong keys, tampering, rotation."""

from __future__ import annotations

import pytest

from storage.crypto import Cipher, DecryptionError, InvalidKeyError, looks_encrypted, parse_keys

VECTOR_KEY = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
VECTOR_STORED = (
    "cafebabefacedbaddecaf888:"
    "f2ccd8448719237a346229a45669ec4c790db43eb47c0448fc39dc61cd2370dac92e624e2e4e91"
)
OTHER_KEY = "ff" * 32


def test_design_vector_decrypts() -> None:
    assert Cipher.from_env_value(VECTOR_KEY).decrypt(VECTOR_STORED) == "xoxb-clarity-test-token"


def test_round_trip_uses_fresh_iv_and_stored_format() -> None:
    cipher = Cipher.from_env_value(VECTOR_KEY)
    a, b = cipher.encrypt("secret"), cipher.encrypt("secret")
    assert a != b
    assert looks_encrypted(a)
    iv, data = a.split(":")
    assert len(iv) == 24 and len(data) == 2 * (len("secret") + 16)
    assert cipher.decrypt(a) == "secret"


def test_wrong_key_raises_clear_error() -> None:
    with pytest.raises(DecryptionError, match="wrong ENCRYPTION_KEY or tampered"):
        Cipher.from_env_value(OTHER_KEY).decrypt(VECTOR_STORED)


@pytest.mark.parametrize(
    "stored",
    [
        VECTOR_STORED[:-2] + ("00" if VECTOR_STORED[-2:] != "00" else "01"),  # tag flipped
        "cafebabefacedbaddecaf889" + VECTOR_STORED[24:],  # iv changed
        VECTOR_STORED.replace("f2cc", "f2cd", 1),  # ciphertext changed
    ],
)
def test_tampering_is_detected(stored: str) -> None:
    with pytest.raises(DecryptionError):
        Cipher.from_env_value(VECTOR_KEY).decrypt(stored)


@pytest.mark.parametrize("stored", ["", "plaintext", "abc:def", "zz" * 12 + ":" + "00" * 20])
def test_malformed_values_raise(stored: str) -> None:
    with pytest.raises(DecryptionError):
        Cipher.from_env_value(VECTOR_KEY).decrypt(stored)


@pytest.mark.parametrize("raw", [None, "", "abc", "00" * 31, VECTOR_KEY + ",xyz"])
def test_bad_keys_rejected(raw: str | None) -> None:
    with pytest.raises(InvalidKeyError):
        parse_keys(raw)


def test_rotation_decrypts_with_any_and_encrypts_with_first() -> None:
    old = Cipher.from_env_value(VECTOR_KEY)
    rotating = Cipher.from_env_value(f"{OTHER_KEY},{VECTOR_KEY}")
    assert rotating.decrypt(VECTOR_STORED) == "xoxb-clarity-test-token"
    fresh = rotating.reencrypt(VECTOR_STORED)
    assert fresh is not None
    assert Cipher.from_env_value(OTHER_KEY).decrypt(fresh) == "xoxb-clarity-test-token"
    with pytest.raises(DecryptionError):
        old.decrypt(fresh)
    assert rotating.reencrypt(fresh) is None  # already under the primary key
