"""The demo's scripted agent: `demo` unless the prompt names another scenario.

`clarity demo` runs `clarity-fake-claude --default-scenario demo`, so a `[fake:crash]`
marker in a request's description still makes a run fail (the browser test's Retry).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bot.cli.demo import DEMO_AGENT

FLAGS = ["-p", "--output-format", "stream-json", "--verbose"]


def _fake(tmp_path: Path, prompt: str) -> tuple[subprocess.CompletedProcess[str], str | None]:
    """Run the demo's agent CLI once; its exit, and the scenario its transcript records."""
    config = tmp_path / "claude"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "CLAUDE_CONFIG_DIR": str(config),
        "CLAUDE_CODE_FAKE_STEP_S": "0",
    }
    program, *args = DEMO_AGENT.split()
    assert program == "clarity-fake-claude"
    done = subprocess.run(
        [sys.executable, "-m", "agent.fake_claude", *args, *FLAGS],
        input=prompt,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
        check=False,
    )
    scenario = None
    for transcript in config.rglob("*.jsonl"):
        for line in transcript.read_text().splitlines():
            scenario = scenario or json.loads(line).get("fakeScenario")
    return done, scenario


def test_a_plain_request_gets_the_demo_script(tmp_path: Path) -> None:
    done, scenario = _fake(tmp_path, "add a friendly greeting")
    assert done.returncode == 0, done.stderr
    assert scenario == "demo"
    assert "Which greeting should the project use?" in done.stdout


def test_a_marker_in_the_prompt_still_wins(tmp_path: Path) -> None:
    done, scenario = _fake(tmp_path, "[fake:crash] add a friendly greeting")
    assert done.returncode == 3
    assert scenario == "crash"
    assert "fake crash" in done.stderr
