"""`clarity demo` on the command line: its help, and a clear error when it cannot start."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

from tests.demo.test_demo_browser import FOREIGN, processes_using
from tests.pg import make_server_dir


def test_help_says_what_to_do() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bot", "demo", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    for words in (
        "/_sim/",
        "/clarity add a friendly greeting",
        "#clarity-demo",
        "demo/hello",
        "ANTHROPIC_API_KEY",
        "$CLARITY_DATA_DIR/demo",
        "--port PORT",
    ):
        assert words in text, words


def test_a_port_in_use_is_one_line_and_leaves_nothing_running() -> None:
    folder = make_server_dir()
    try:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            env = {k: v for k, v in os.environ.items() if not FOREIGN.match(k)}
            env.update(CLARITY_DATA_DIR=str(folder), HOST="127.0.0.1", PORT=str(port))
            done = subprocess.run(
                [sys.executable, "-m", "bot", "demo"],
                capture_output=True,
                text=True,
                check=False,
                timeout=120,
                cwd=folder,
                env=env,
            )
        assert done.returncode == 1
        assert (
            done.stderr.strip()
            .splitlines()[-1]
            .startswith(f"clarity: error: cannot listen on 127.0.0.1:{port}:")
        )
        assert "Clarity demo is running" not in done.stdout
        assert processes_using(folder) == []
    finally:
        shutil.rmtree(folder, ignore_errors=True)
