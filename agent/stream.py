"""Turn Claude Code's stream-json events into the request's `agent_*` messages.

The CLI (`-p --output-format stream-json --verbose`) writes one JSON event per line:
`system` (subtype `init` carries the session id), `assistant` (one content block per event:
text, thinking or tool_use; blocks of one model response share `message.id`), `user` (the
tool_result blocks, with the tool's structured `tool_use_result` beside them), and a final
`result` (subtype `success`, `error_max_budget_usd`, `error_max_turns`,
`error_during_execution`; `total_cost_usd`, `duration_ms`, `num_turns`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.mcp import QUALIFIED_TOOL_NAME
from agent.scrub import cut

TEXT_LIMIT = 8_000
OUTPUT_LIMIT = 8_000
INPUT_STRING_LIMIT = 2_000
DIFF_LIMIT = 4_000
FILE_TOOLS = frozenset({"Write", "Edit", "MultiEdit", "NotebookEdit"})
_EXIT_CODE = re.compile(r"^(?:Error: )?Exit code (-?\d+)\n?")

# (path in the repository, created|modified|deleted, diff) of a file, or None if outside.
FileChange = Callable[[str], "tuple[str, str, str] | None"]


@dataclass(frozen=True)
class Activity:
    """One message for `POST /requests/{id}/messages`."""

    type: str
    content: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class _ToolUse:
    name: str
    input: dict[str, Any]
    turn_id: str
    turn_number: int
    started: float


@dataclass
class Translator:
    """Reads events in order and says what to post; remembers what the run needs to know."""

    file_change: FileChange | None = None
    # The checkout: paths under it are shown relative to it.
    cwd: str = ""
    clock: Callable[[], float] = time.monotonic
    session_id: str | None = None
    result: dict[str, Any] | None = None
    # Questions the model asked with ask_user, and whether the server answered the call.
    asked: list[dict[str, Any]] = field(default_factory=list)
    ask_delivered: bool = False
    turn_number: int = 0
    _turn_id: str = ""
    _tools: dict[str, _ToolUse] = field(default_factory=dict)
    # The task list (TaskCreate/TaskUpdate, or TodoWrite on older CLIs), id → item.
    _tasks: dict[str, dict[str, str]] = field(default_factory=dict)

    def feed(self, event: dict[str, Any]) -> list[Activity]:
        """The messages one event becomes (often none)."""
        if isinstance(event.get("session_id"), str) and event["session_id"]:
            self.session_id = event["session_id"]
        kind = event.get("type")
        if kind == "assistant":
            return self._assistant(event)
        if kind == "user":
            return self._user(event)
        if kind == "result":
            self.result = event
            return [self._summary(event)]
        return []

    @property
    def todos(self) -> list[dict[str, str]]:
        """The task list as `[{content, status}]`."""
        return [dict(t) for t in self._tasks.values()]

    # --- assistant: text, thinking, tool calls ---------------------------------------------

    def _assistant(self, event: dict[str, Any]) -> list[Activity]:
        message = event.get("message") or {}
        nested = event.get("parent_tool_use_id")
        message_id = str(message.get("id") or "")
        if not nested and message_id and message_id != self._turn_id:
            self._turn_id = message_id
            self.turn_number += 1
        turn = {"turnId": message_id or self._turn_id, "turnNumber": self.turn_number}
        if nested:
            turn["parentToolUseId"] = nested
        out: list[Activity] = []
        for block in message.get("content") or []:
            if not isinstance(block, dict):
                continue
            if block.get("type") in ("text", "thinking"):
                text = str(block.get("text") or block.get("thinking") or "").strip()
                if text:
                    out.append(
                        Activity(
                            "agent_thinking", cut(text, TEXT_LIMIT), {**turn, "kind": block["type"]}
                        )
                    )
            elif block.get("type") == "tool_use":
                out.append(self._tool_call(block, turn))
        return out

    def _tool_call(self, block: dict[str, Any], turn: dict[str, Any]) -> Activity:
        name = str(block.get("name") or "tool")
        raw_input = block.get("input")
        tool_input: dict[str, Any] = raw_input if isinstance(raw_input, dict) else {}
        use_id = str(block.get("id") or "")
        self._tools[use_id] = _ToolUse(
            name, tool_input, turn["turnId"], turn["turnNumber"], self.clock()
        )
        metadata: dict[str, Any] = {
            **turn,
            "toolName": name,
            "toolInput": _cut_strings(tool_input),
            "toolUseId": use_id,
        }
        if name == QUALIFIED_TOOL_NAME:
            self.asked.append(tool_input)
        if self._track_tasks(name, tool_input, use_id):
            metadata["todos"] = self.todos
        return Activity("agent_tool_call", _describe(name, tool_input, self.cwd), metadata)

    def _track_tasks(self, name: str, tool_input: dict[str, Any], use_id: str) -> bool:
        if name == "TodoWrite" and isinstance(tool_input.get("todos"), list):
            self._tasks = {
                str(i): {"content": str(t.get("content", "")), "status": str(t.get("status", ""))}
                for i, t in enumerate(tool_input["todos"])
                if isinstance(t, dict)
            }
            return True
        if name == "TaskCreate":
            self._tasks[f"pending:{use_id}"] = {
                "content": str(tool_input.get("subject") or tool_input.get("description") or ""),
                "status": "pending",
            }
            return True
        if name == "TaskUpdate":
            task = self._tasks.get(str(tool_input.get("taskId")))
            if task is not None:
                if tool_input.get("status") == "deleted":
                    del self._tasks[str(tool_input.get("taskId"))]
                else:
                    if isinstance(tool_input.get("status"), str):
                        task["status"] = tool_input["status"]
                    if isinstance(tool_input.get("subject"), str):
                        task["content"] = tool_input["subject"]
            return True
        return False

    # --- user: tool results ------------------------------------------------------------------

    def _user(self, event: dict[str, Any]) -> list[Activity]:
        content = (event.get("message") or {}).get("content")
        if not isinstance(content, list):
            return []
        out = []
        for block in content:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                out.append(self._tool_result(block, event.get("tool_use_result")))
        return out

    def _tool_result(self, block: dict[str, Any], structured: Any) -> Activity:
        use_id = str(block.get("tool_use_id") or "")
        use = self._tools.pop(use_id, None)
        name = use.name if use else "tool"
        tool_input = use.input if use else {}
        is_error = bool(block.get("is_error"))
        output = _text_of(block.get("content"))
        metadata: dict[str, Any] = {"toolName": name, "toolUseId": use_id}
        if use:
            metadata.update(
                turnId=use.turn_id,
                turnNumber=use.turn_number,
                toolDurationMs=round((self.clock() - use.started) * 1000),
            )
        if name == "TaskCreate" and isinstance(structured, dict):
            task = structured.get("task")
            pending = self._tasks.pop(f"pending:{use_id}", None)
            if isinstance(task, dict) and pending is not None:
                self._tasks[str(task.get("id"))] = pending
        if name == QUALIFIED_TOOL_NAME and not is_error:
            self.ask_delivered = True
        if name == "Bash":
            terminal = _terminal(tool_input, output, is_error, structured, metadata)
            if terminal is not None:
                return terminal
        if name in FILE_TOOLS and not is_error and self.file_change is not None:
            path = tool_input.get("file_path") or tool_input.get("notebook_path")
            change = self.file_change(str(path)) if path else None
            if change is not None:
                relative, action, diff = change
                if isinstance(structured, dict) and structured.get("type") == "create":
                    action = "created"
                return Activity(
                    "agent_file_change",
                    f"{action} {relative}",
                    {
                        **metadata,
                        "filePath": relative,
                        "fileAction": action,
                        "diffPreview": cut(diff, DIFF_LIMIT),
                    },
                )
        metadata.update(toolOutput=cut(output, OUTPUT_LIMIT), isError=is_error)
        return Activity(
            "agent_tool_result", cut(output, TEXT_LIMIT) or f"{name} finished", metadata
        )

    # --- result --------------------------------------------------------------------------------

    def _summary(self, event: dict[str, Any]) -> Activity:
        cost = event.get("total_cost_usd")
        metadata: dict[str, Any] = {
            "subtype": event.get("subtype"),
            "isError": bool(event.get("is_error")),
            "durationMs": event.get("duration_ms"),
            "numTurns": event.get("num_turns"),
        }
        if isinstance(cost, int | float):
            metadata["costCents"] = round(cost * 100)
        text = event.get("result")
        if not isinstance(text, str) or not text.strip():
            errors = event.get("errors")
            text = "; ".join(map(str, errors)) if isinstance(errors, list) and errors else ""
        return Activity(
            "agent_summary", cut(text.strip(), TEXT_LIMIT) or str(event.get("subtype")), metadata
        )


def _terminal(
    tool_input: dict[str, Any],
    output: str,
    is_error: bool,
    structured: Any,
    metadata: dict[str, Any],
) -> Activity | None:
    """The agent_terminal message of a Bash result; None when the command did not run."""
    command = str(tool_input.get("command") or "")
    exit_code: int | None
    if isinstance(structured, dict) and not is_error:
        stdout = str(structured.get("stdout") or "")
        stderr = str(structured.get("stderr") or "")
        exit_code = None if structured.get("interrupted") else 0
    else:
        match = _EXIT_CODE.match(output)
        if match is None:
            # Denied or refused before it ran: not a terminal session.
            return None
        exit_code = int(match.group(1))
        stdout, stderr = output[match.end() :], ""
    return Activity(
        "agent_terminal",
        cut(command, INPUT_STRING_LIMIT),
        {
            **metadata,
            "command": cut(command, INPUT_STRING_LIMIT),
            "exitCode": exit_code,
            "stdout": cut(stdout, OUTPUT_LIMIT),
            "stderr": cut(stderr, OUTPUT_LIMIT),
            "durationMs": metadata.get("toolDurationMs"),
        },
    )


def _describe(name: str, tool_input: dict[str, Any], cwd: str) -> str:
    """A one-line description of a tool call, for a person."""
    if name == "Bash":
        return "$ " + cut(str(tool_input.get("command") or ""), 200, "…")
    if name == QUALIFIED_TOOL_NAME:
        return "Asked: " + cut(str(tool_input.get("question") or ""), 500, "…")
    for key in ("file_path", "notebook_path", "path", "pattern", "url", "subject", "description"):
        value = tool_input.get(key)
        if isinstance(value, str) and value:
            if cwd and value.startswith(cwd.rstrip("/") + "/"):
                value = value[len(cwd.rstrip("/")) + 1 :]
            return f"{name} {cut(value, 200, '…')}"
    return name


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, dict) and block.get("type") == "text":
                parts.append(str(block.get("text") or ""))
            elif isinstance(block, dict):
                parts.append(f"[{block.get('type', 'content')}]")
        return "\n".join(parts)
    return ""


def _cut_strings(value: Any) -> Any:
    if isinstance(value, str):
        return cut(value, INPUT_STRING_LIMIT)
    if isinstance(value, dict):
        return {k: _cut_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cut_strings(v) for v in value[:100]]
    return value
