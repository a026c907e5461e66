"""The demo repository `demo/hello`: made once in the demo's folder, readable by the agent.

(As root the agent runs as `clarity-agent`, another user than the repository's; the local
backend tells git to trust a `file://` remote. The browser test clones it that way.)
"""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

from bot.cli.demo import DEMO_REPO, ensure_demo_repository


def _show(bare: Path, what: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(bare), "show", what],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def test_the_demo_repository_is_made_once(tmp_path: Path) -> None:
    bare = ensure_demo_repository(tmp_path / "git")
    assert bare == tmp_path / "git" / f"{DEMO_REPO}.git"
    assert "def greet(name: str) -> str:" in _show(bare, "main:hello.py")
    head = _show(bare, "--format=%H %s")
    # Anyone may read it (the agent's user), and a second start keeps what it has.
    assert all(p.stat().st_mode & stat.S_IROTH for p in bare.rglob("*") if p.is_file())
    assert ensure_demo_repository(tmp_path / "git") == bare
    assert _show(bare, "--format=%H %s") == head
