"""`clarity config set|show|reencrypt` against a real database, as an operator runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import asyncpg

from storage.crypto import Cipher

ROOT = Path(__file__).resolve().parent.parent
OLD = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
NEW = "ab" * 32


def clarity(
    *args: str, db_url: str, key: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "GITHUB_"))}
    env.update(DATABASE_URL=db_url, ENCRYPTION_KEY=key)
    return subprocess.run(
        [sys.executable, "-m", "bot", "config", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def _stored(db_url: str) -> dict[str, dict[str, object]]:
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch("select type::text as t, config::text as c from app_config")
    finally:
        await conn.close()
    return {r["t"]: json.loads(r["c"]) for r in rows}


async def test_set_show_and_rotate(db_url: str) -> None:
    result = clarity(
        "set", "slack", "--bot-token", "-", "--signing-secret", "sign-secret-123",
        db_url=db_url, key=OLD, stdin="xoxb-from-stdin-123\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "xoxb-from-stdin-123" not in result.stdout + result.stderr
    stored = await _stored(db_url)
    assert Cipher.from_env_value(OLD).decrypt(str(stored["slack"]["botTokenEncrypted"])) == (
        "xoxb-from-stdin-123"
    )
    assert "xoxb-from-stdin-123" not in json.dumps(stored)

    shown = clarity("show", "slack", db_url=db_url, key=OLD)
    assert shown.returncode == 0, shown.stderr
    assert "xoxb-from-stdin-123" not in shown.stdout
    assert json.loads(shown.stdout)["slack"]["botTokenEncrypted"] == "xoxb…(19 chars)"

    rotated = clarity("reencrypt", db_url=db_url, key=f"{NEW},{OLD}")
    assert rotated.returncode == 0, rotated.stderr
    assert "re-encrypted 2 secret(s)" in rotated.stdout
    stored = await _stored(db_url)
    assert Cipher.from_env_value(NEW).decrypt(str(stored["slack"]["botTokenEncrypted"])) == (
        "xoxb-from-stdin-123"
    )
    # The old key alone no longer opens it: one clear line, non-zero exit.
    old_only = clarity("show", db_url=db_url, key=OLD)
    assert old_only.returncode == 1
    assert old_only.stderr.strip().splitlines() == [
        "clarity: error: stored secret could not be decrypted: wrong ENCRYPTION_KEY or "
        "tampered value"
    ]


async def test_bad_input_changes_nothing(db_url: str) -> None:
    missing = clarity("set", "claude", db_url=db_url, key=OLD)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "clarity: error: missing --api-key (or $ANTHROPIC_API_KEY)"
    bad_key = clarity("set", "claude", "--api-key", "sk-ant-x", db_url=db_url, key="nothex")
    assert bad_key.returncode == 1
    assert "ENCRYPTION_KEY entry 1 must be 64 hex characters" in bad_key.stderr
    assert await _stored(db_url) == {}
