"""The ask_user MCP server: JSON-RPC over stdio as Claude Code speaks it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from agent.mcp import PROTOCOL_VERSIONS, SENT_TEXT, Server, read_questions
from tests.agent.conftest import ROOT


def exchange(questions: Path, messages: list[Any]) -> list[dict[str, Any]]:
    """Send lines to `python -m agent mcp` and read every answer until it exits."""
    lines = "".join(m if isinstance(m, str) else json.dumps(m) + "\n" for m in messages)
    done = subprocess.run(
        [sys.executable, "-P", "-m", "agent", "mcp", "--questions", str(questions)],
        input=lines,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        check=True,
    )
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_a_session_as_claude_code_runs_it(tmp_path: Path) -> None:
    questions = tmp_path / "questions.jsonl"
    answers = exchange(
        questions,
        [
            {
                "method": "initialize",
                "jsonrpc": "2.0",
                "id": 0,
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {"roots": {}},
                    "clientInfo": {"name": "claude-code", "version": "2.1.197"},
                },
            },
            {"method": "notifications/initialized", "jsonrpc": "2.0"},
            {"method": "tools/list", "jsonrpc": "2.0", "id": 1},
            {"method": "ping", "jsonrpc": "2.0", "id": 2},
            {
                "method": "tools/call",
                "jsonrpc": "2.0",
                "id": 3,
                "params": {
                    "name": "ask_user",
                    "arguments": {
                        "question": "Tabs or spaces?",
                        "options": ["tabs", "spaces", "tabs"],
                    },
                    "_meta": {"claudecode/toolUseId": "toolu_1", "progressToken": 2},
                },
            },
        ],
    )
    # The notification gets no answer; every request gets one, in order.
    assert [a["id"] for a in answers] == [0, 1, 2, 3]
    init = answers[0]["result"]
    assert init["protocolVersion"] == "2025-06-18"
    assert init["serverInfo"]["name"] == "clarity"
    assert init["capabilities"] == {"tools": {"listChanged": False}}
    [tool] = answers[1]["result"]["tools"]
    assert tool["name"] == "ask_user"
    assert tool["inputSchema"]["required"] == ["question"]
    assert tool["inputSchema"]["properties"]["options"]["type"] == "array"
    assert answers[2]["result"] == {}
    assert answers[3]["result"] == {
        "content": [{"type": "text", "text": SENT_TEXT}],
        "isError": False,
    }
    assert "end your turn" in SENT_TEXT.lower() and "later message" in SENT_TEXT
    assert read_questions(str(questions)) == [
        {"question": "Tabs or spaces?", "options": ["tabs", "spaces"]}
    ]


def test_errors_are_json_rpc_errors(tmp_path: Path) -> None:
    questions = tmp_path / "questions.jsonl"
    answers = exchange(
        questions,
        [
            "this is not json\n",
            {"method": "resources/list", "jsonrpc": "2.0", "id": 1},
            {
                "method": "tools/call",
                "jsonrpc": "2.0",
                "id": 2,
                "params": {"name": "rm_rf", "arguments": {}},
            },
            {
                "method": "tools/call",
                "jsonrpc": "2.0",
                "id": 3,
                "params": {"name": "ask_user", "arguments": {"question": "  "}},
            },
            {
                "method": "initialize",
                "jsonrpc": "2.0",
                "id": 4,
                "params": {"protocolVersion": "1999-01-01"},
            },
        ],
    )
    assert answers[0] == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32700, "message": "invalid JSON"},
    }
    assert answers[1]["error"]["code"] == -32601
    assert answers[2]["error"]["code"] == -32602
    # Bad arguments are the model's to fix: a tool error, not a protocol error.
    assert answers[3]["result"]["isError"] is True
    assert answers[4]["result"]["protocolVersion"] == PROTOCOL_VERSIONS[0]
    assert not questions.exists()


def test_options_are_trimmed_to_what_slack_can_show(tmp_path: Path) -> None:
    server = Server(str(tmp_path / "q.jsonl"))
    options = [f"option {i}" for i in range(15)] + ["", "x" * 500]
    answer = server.handle(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "ask_user", "arguments": {"question": "Which?", "options": options}},
        }
    )
    assert answer is not None and answer["result"]["isError"] is False
    [question] = read_questions(str(tmp_path / "q.jsonl"))
    assert question["options"] == [f"option {i}" for i in range(10)]
    assert server.handle({"jsonrpc": "2.0", "method": "notifications/cancelled"}) is None
