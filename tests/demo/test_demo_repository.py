"""The demo repository `demo/hello`, and the agent's checkout of it from another user.

`clarity demo` keeps the repository in its data folder (root's, when run as root) and the
local runner's agent runs as the unprivileged `clarity-agent`: git reads a repository
another user owns only when told it is safe, so the agent trusts its `file://` remote.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from agent.git import Checkout
from agent.scrub import Scrubber
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


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the repository away")
def test_the_agent_clones_a_local_repository_another_user_owns(tmp_path: Path) -> None:
    bare = ensure_demo_repository(tmp_path / "git")
    nobody = pwd.getpwnam("nobody")
    for path in (bare, *bare.rglob("*")):
        os.chown(path, nobody.pw_uid, nobody.pw_gid, follow_symlinks=False)
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8"}
    plain = subprocess.run(
        ["git", "clone", "--quiet", bare.as_uri(), str(tmp_path / "plain")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert plain.returncode != 0 and "dubious ownership" in plain.stderr
    shutil.rmtree(tmp_path / "plain", ignore_errors=True)

    checkout = Checkout(
        str(tmp_path / "work"),
        bare.as_uri(),
        env=env,
        credential_env={},
        scrubber=Scrubber(),
    )
    checkout.sync()
    assert (tmp_path / "work" / "hello.py").exists()
    checkout.sync()  # a later run fetches; the exception is written once
    trusted = (home / ".gitconfig").read_text()
    assert trusted.count("directory = ") == 1 and str(bare) in trusted
