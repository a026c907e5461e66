"""`clarity-agent mcp`: the MCP server, over stdio, that gives the model the `ask_user` tool.

Claude Code starts it from the `--mcp-config` the agent program passes (server name
`clarity`, so the model sees `mcp__clarity__ask_user`). A call appends the question to the
questions file and tells the model to end its turn: the agent program sees the question,
stops the CLI, and the person's answer arrives in a later run that resumes the session.

Transport: JSON-RPC 2.0 messages, one per line, on stdin/stdout (MCP "stdio" transport).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterable
from typing import IO, Any

SERVER_NAME = "clarity"
TOOL_NAME = "ask_user"
# The name the model sees: mcp__<server>__<tool>.
QUALIFIED_TOOL_NAME = f"mcp__{SERVER_NAME}__{TOOL_NAME}"
QUESTIONS_ENV = "CLARITY_QUESTIONS_FILE"
# Newest first; a client asking for one of these gets it back, any other gets the first.
PROTOCOL_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
MAX_OPTIONS = 10
MAX_OPTION_LENGTH = 200
MAX_QUESTION_LENGTH = 3000

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602

ASK_USER_TOOL: dict[str, Any] = {
    "name": TOOL_NAME,
    "description": (
        "Ask the person who made this request a question, when the request is ambiguous "
        "or a decision is theirs to make and you cannot settle it from the code. Offer "
        "short answer options when the likely answers are few. After calling this tool, "
        "end your turn: the person's answer arrives in a later message."
    ),
    "inputSchema": {
        "type": "object",
        "properties": {
            "question": {
                "type": "string",
                "description": "The question, complete on its own (the person sees only it).",
            },
            "options": {
                "type": "array",
                "items": {"type": "string"},
                "maxItems": MAX_OPTIONS,
                "description": "Optional short answers the person can pick from.",
            },
        },
        "required": ["question"],
        "additionalProperties": False,
    },
}

SENT_TEXT = (
    "Your question was sent to the person who made this request. End your turn now: do not "
    "call more tools and do not keep working. Their answer will come in a later message."
)


class AskUserError(ValueError):
    """The model's arguments to ask_user are not a question we can send."""


def parse_question(arguments: Any) -> dict[str, Any]:
    """The question and options of an ask_user call, checked and trimmed."""
    if not isinstance(arguments, dict):
        raise AskUserError("arguments must be an object with a `question` string")
    question = arguments.get("question")
    if not isinstance(question, str) or not question.strip():
        raise AskUserError("`question` must be a non-empty string")
    raw_options = arguments.get("options") or []
    if not isinstance(raw_options, list) or not all(isinstance(o, str) for o in raw_options):
        raise AskUserError("`options` must be a list of strings")
    options: list[str] = []
    for option in raw_options:
        option = option.strip()[:MAX_OPTION_LENGTH]
        if option and option not in options:
            options.append(option)
    return {"question": question.strip()[:MAX_QUESTION_LENGTH], "options": options[:MAX_OPTIONS]}


class Server:
    """One MCP session: answers JSON-RPC requests, records questions."""

    def __init__(self, questions_path: str) -> None:
        self.questions_path = questions_path

    def handle(self, message: Any) -> dict[str, Any] | None:
        """The response to one JSON-RPC message (None for a notification)."""
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            return _error(None, INVALID_REQUEST, "not a JSON-RPC 2.0 message")
        method = message.get("method")
        if "id" not in message:
            # Notifications (notifications/initialized, notifications/cancelled, …) and
            # responses to requests we never send: nothing to answer.
            return None
        request_id = message["id"]
        if not isinstance(method, str):
            return _error(request_id, INVALID_REQUEST, "missing method")
        params = message.get("params") or {}
        if method == "initialize":
            return _result(request_id, self.initialize(params))
        if method == "ping":
            return _result(request_id, {})
        if method == "tools/list":
            return _result(request_id, {"tools": [ASK_USER_TOOL]})
        if method == "tools/call":
            if not isinstance(params, dict) or params.get("name") != TOOL_NAME:
                name = params.get("name") if isinstance(params, dict) else None
                return _error(request_id, INVALID_PARAMS, f"unknown tool: {name}")
            return _result(request_id, self.ask_user(params.get("arguments")))
        return _error(request_id, METHOD_NOT_FOUND, f"method not found: {method}")

    def initialize(self, params: Any) -> dict[str, Any]:
        """Agree on a protocol version and say what this server offers."""
        asked = params.get("protocolVersion") if isinstance(params, dict) else None
        version = asked if asked in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[0]
        return {
            "protocolVersion": version,
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": {"name": SERVER_NAME, "version": "1.0.0"},
            "instructions": (
                "Use ask_user to ask the person who made the request when you need their "
                "decision; then end your turn."
            ),
        }

    def ask_user(self, arguments: Any) -> dict[str, Any]:
        """Record the question; tell the model to stop and wait."""
        try:
            question = parse_question(arguments)
        except AskUserError as exc:
            return {"content": [{"type": "text", "text": f"Not sent: {exc}."}], "isError": True}
        line = json.dumps(question, ensure_ascii=False) + "\n"
        with open(self.questions_path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        return {"content": [{"type": "text", "text": SENT_TEXT}], "isError": False}


def serve(questions_path: str, stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """Answer messages from stdin until it closes."""
    server = Server(questions_path)
    for raw in stdin:
        if not raw.strip():
            continue
        for response in _respond(server, raw):
            stdout.write(json.dumps(response, ensure_ascii=False).encode() + b"\n")
            stdout.flush()


def _respond(server: Server, raw: bytes) -> Iterable[dict[str, Any]]:
    try:
        message = json.loads(raw)
    except ValueError:
        return [_error(None, PARSE_ERROR, "invalid JSON")]
    if isinstance(message, list):
        # A batch (protocol 2025-03-26): answer each request in it.
        if not message:
            return [_error(None, INVALID_REQUEST, "empty batch")]
        return [r for r in map(server.handle, message) if r is not None]
    response = server.handle(message)
    return [response] if response is not None else []


def read_questions(path: str) -> list[dict[str, Any]]:
    """The questions recorded in a questions file, oldest first (none when it is missing)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    questions = []
    for line in lines:
        try:
            questions.append(parse_question(json.loads(line)))
        except (ValueError, AskUserError):
            continue
    return questions


def main(questions_path: str | None) -> int:
    """Run the server on this process's stdin/stdout."""
    path = questions_path or os.environ.get(QUESTIONS_ENV)
    if not path:
        print(
            "clarity-agent mcp: --questions PATH (or CLARITY_QUESTIONS_FILE) is required",
            file=sys.stderr,
        )
        return 2
    # The agent program interrupts the CLI's whole process group; the server ends when the
    # CLI closes its input, not on that SIGINT.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(path, sys.stdin.buffer, sys.stdout.buffer)
    return 0


def _result(request_id: Any, result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def _error(request_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}
