"""clarity-fake-claude: a stand-in for the Claude Code CLI, for tests and `clarity demo`.

It takes the flags the agent program passes, really does what its script says (writes and
edits files, runs shell commands, asks through the MCP server named in --mcp-config) and
writes stream-json shaped as Claude Code 2.1 writes it: `system`/`init`, one `assistant`
event per content block (blocks of one response share the message id), `user` events with
tool_result blocks and the tool's structured `tool_use_result`, then a `result`. It keeps
its transcript where the CLI does ($CLAUDE_CONFIG_DIR/projects/<cwd key>/<session>.jsonl),
and `--resume ID` fails as the CLI does when that transcript is missing.

The script is `--scenario NAME`, else a `[fake:NAME]` marker in the prompt, else
`--default-scenario NAME` (`clarity demo` uses `demo`, so a marker still picks another), else
`edit`: edit, noop, ask, chatty, slow, stubborn, crash, budget, demo. When
CLAUDE_CODE_FAKE_LOG names a file, each start appends its argv, environment and prompt to it
as one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import IO, Any

from agent.session import project_key

VERSION = "2.1.197"
MODEL = "claude-fake-1"
# What one model response costs: 1,000 input and 50 output tokens at $5/$25 per million.
COST_PER_RESPONSE = 0.00625
TOOLS = [
    "Task",
    "Bash",
    "Edit",
    "NotebookEdit",
    "Read",
    "TaskCreate",
    "TaskGet",
    "TaskList",
    "TaskOutput",
    "TaskStop",
    "TaskUpdate",
    "WebFetch",
    "WebSearch",
    "Write",
]
ASK_TOOL = "mcp__clarity__ask_user"
SCENARIOS = ("edit", "noop", "ask", "chatty", "slow", "stubborn", "crash", "budget", "demo")
_MARKER = re.compile(r"\[fake:([a-z]+)\]")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
GREETINGS = ["Hello, world!", "Howdy, partner!", "Hi there!"]


class Interrupted(Exception):
    """SIGINT arrived: the CLI ends its turn and reports."""


class McpClient:
    """A stdio MCP client for one server of the --mcp-config, as Claude Code runs it."""

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        self.name = name
        env = {**os.environ, **{k: str(v) for k, v in (config.get("env") or {}).items()}}
        self.proc = subprocess.Popen(  # noqa: S603 - the server the config names
            [config["command"], *config.get("args", [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self._next_id = 0
        self.tools: list[dict[str, Any]] = []

    def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send a request and wait for its response."""
        message_id = self._next_id
        self._next_id += 1
        self._send({"method": method, "params": params or {}, "jsonrpc": "2.0", "id": message_id})
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            reply = json.loads(line)
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"MCP error: {reply['error']}")
                result: dict[str, Any] = reply["result"]
                return result
        raise RuntimeError(f"MCP server {self.name} closed its output")

    def notify(self, method: str) -> None:
        """Send a notification."""
        self._send({"method": method, "jsonrpc": "2.0"})

    def connect(self) -> None:
        """initialize, notifications/initialized, tools/list."""
        self.request(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {"roots": {}, "elicitation": {}},
                "clientInfo": {"name": "claude-code", "title": "Claude Code", "version": VERSION},
            },
        )
        self.notify("notifications/initialized")
        self.tools = self.request("tools/list").get("tools", [])

    def close(self) -> None:
        """Close its input and let it exit."""
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def _send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()


class Session:
    """One headless session: the events it prints and the transcript it keeps."""

    def __init__(
        self,
        args: argparse.Namespace,
        *,
        session_id: str,
        config_dir: str,
        out: IO[str],
        step_s: float,
    ) -> None:
        self.args = args
        self.session_id = session_id
        self.cwd = os.getcwd()
        self.config_dir = config_dir
        self.out = out
        self.step_s = step_s
        self.started = time.monotonic()
        self.responses = 0
        self.cost = 0.0
        self.parent: str | None = None
        self.interrupted = False
        self.mcp: dict[str, McpClient] = {}
        self.tasks_dir = os.path.join(config_dir, "tasks", session_id)
        folder = os.path.join(config_dir, "projects", project_key(self.cwd))
        os.makedirs(folder, exist_ok=True)
        self.transcript = os.path.join(folder, f"{session_id}.jsonl")

    # --- output ----------------------------------------------------------------------------

    def emit(self, event: dict[str, Any]) -> None:
        """Print one stream-json event."""
        self.out.write(json.dumps(event) + "\n")
        self.out.flush()

    def record(self, entry: dict[str, Any]) -> str:
        """Append one transcript line; returns its uuid."""
        line_id = str(uuid.uuid4())
        line = {
            "parentUuid": self.parent,
            "isSidechain": False,
            **entry,
            "uuid": line_id,
            "timestamp": _now(),
            "sessionId": self.session_id,
            "cwd": self.cwd,
            "version": VERSION,
            "userType": "external",
            "entrypoint": "sdk-cli",
        }
        with open(self.transcript, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
        self.parent = line_id
        return line_id

    def init(self) -> None:
        """The `system`/`init` event."""
        self.emit(
            {
                "type": "system",
                "subtype": "init",
                "cwd": self.cwd,
                "session_id": self.session_id,
                "tools": TOOLS
                + [f"mcp__{n}__{t['name']}" for n, c in self.mcp.items() for t in c.tools],
                "mcp_servers": [{"name": n, "status": "connected"} for n in self.mcp],
                "model": MODEL,
                "permissionMode": self.args.permission_mode or "default",
                "slash_commands": [],
                "apiKeySource": "ANTHROPIC_API_KEY",
                "claude_code_version": VERSION,
                "output_style": "default",
                "agents": [],
                "skills": [],
                "plugins": [],
                "analytics_disabled": True,
                "product_feedback_disabled": True,
                "uuid": str(uuid.uuid4()),
                "memory_paths": {"auto": os.path.join(os.path.dirname(self.transcript), "memory/")},
                "fast_mode_state": "off",
            }
        )

    def prompt(self, text: str, scenario: str) -> None:
        """Record the person's prompt (stream-json does not echo it)."""
        self.record(
            {
                "type": "user",
                "message": {"role": "user", "content": text},
                "promptSource": "sdk",
                "fakeScenario": scenario,
            }
        )

    def respond(self, *blocks: dict[str, Any]) -> None:
        """One model response: each content block is its own assistant event."""
        self.pause()
        self.responses += 1
        self.cost += COST_PER_RESPONSE
        message_id = "msg_" + uuid.uuid4().hex[:24]
        for block in blocks:
            message = {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": MODEL,
                "content": [block],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": 1000,
                    "output_tokens": 50,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                },
                "context_management": None,
            }
            line_id = self.record({"type": "assistant", "message": message})
            event: dict[str, Any] = {
                "type": "assistant",
                "message": message,
                "parent_tool_use_id": None,
                "session_id": self.session_id,
                "uuid": line_id,
            }
            if block.get("type") == "tool_use" and block["name"].startswith("mcp__"):
                server = block["name"].split("__")[1]
                event["tool_use_meta"] = [
                    {"id": block["id"], "display_name": "Ask User", "server_display_name": server}
                ]
            self.emit(event)
        budget = self.args.max_budget_usd
        if budget is not None and self.cost > budget:
            self.finish("error_max_budget_usd", errors=[f"Reached maximum budget (${budget:g})"])
            raise SystemExit(1)

    def tool_result(
        self, use_id: str, content: Any, *, structured: Any, is_error: bool | None = None
    ) -> None:
        """The user event that carries a tool's result (`is_error` None: not said, as most
        tools do)."""
        block: dict[str, Any] = {"tool_use_id": use_id, "type": "tool_result", "content": content}
        if is_error is not None:
            block["is_error"] = is_error
        message = {"role": "user", "content": [block]}
        line_id = self.record({"type": "user", "message": message, "toolUseResult": structured})
        self.emit(
            {
                "type": "user",
                "message": message,
                "parent_tool_use_id": None,
                "session_id": self.session_id,
                "uuid": line_id,
                "timestamp": _now(),
                "tool_use_result": structured,
            }
        )

    def finish(
        self, subtype: str = "success", *, text: str | None = None, errors: list[str] | None = None
    ) -> None:
        """The `result` event."""
        is_error = subtype != "success"
        event: dict[str, Any] = {
            "type": "result",
            "subtype": subtype,
            "is_error": is_error,
            "api_error_status": None,
            "duration_ms": round((time.monotonic() - self.started) * 1000),
            "duration_api_ms": 50 * self.responses,
            "num_turns": self.responses,
        }
        if not is_error:
            event.update(ttft_ms=50, ttft_stream_ms=50, time_to_request_ms=10)
        if text is not None:
            event["result"] = text
        event.update(
            {
                "stop_reason": "end_turn" if not is_error else "tool_use",
                "session_id": self.session_id,
                "total_cost_usd": round(self.cost, 6),
                "usage": {
                    "input_tokens": 1000 * self.responses,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    "output_tokens": 50 * self.responses,
                    "service_tier": "standard",
                },
                "modelUsage": {
                    MODEL: {
                        "inputTokens": 1000 * self.responses,
                        "outputTokens": 50 * self.responses,
                        "costUSD": round(self.cost, 6),
                    }
                },
                "permission_denials": [],
                "fast_mode_state": "off",
                "uuid": str(uuid.uuid4()),
            }
        )
        if errors:
            event["errors"] = errors
        else:
            event["terminal_reason"] = "completed"
        self.emit(event)

    def pause(self, seconds: float | None = None) -> None:
        """Wait a step (a model 'thinks'), unless interrupted."""
        end = time.monotonic() + (self.step_s if seconds is None else seconds)
        while time.monotonic() < end:
            if self.interrupted:
                raise Interrupted
            time.sleep(min(0.05, max(end - time.monotonic(), 0)))
        if self.interrupted:
            raise Interrupted

    # --- tools -----------------------------------------------------------------------------

    def say(self, text: str) -> None:
        """A response that is only text."""
        self.respond({"type": "text", "text": text})

    def use(self, name: str, tool_input: dict[str, Any], *, text: str | None = None) -> Any:
        """A response that calls one tool, then the tool's result; returns the result."""
        use_id = "toolu_" + uuid.uuid4().hex[:24]
        blocks = [{"type": "text", "text": text}] if text else []
        self.respond(*blocks, {"type": "tool_use", "id": use_id, "name": name, "input": tool_input})
        if not self._allowed(name, tool_input):
            message = (
                f"Permission to use {name} has been denied because Claude Code is "
                "running in don't ask mode."
            )
            self.tool_result(use_id, message, structured=f"Error: {message}", is_error=True)
            return None
        handler: Callable[[str, dict[str, Any]], Any] = getattr(
            self, "_tool_" + name.replace("mcp__", "mcp_"), self._tool_unknown
        )
        return handler(use_id, tool_input)

    def _allowed(self, name: str, tool_input: dict[str, Any]) -> bool:
        mode = self.args.permission_mode or "default"
        allowed = {t for item in self.args.allowed_tools for t in re.split(r"[,\s]+", item) if t}
        if mode == "bypassPermissions" or name in allowed:
            return True
        if name in ("Read", "TaskCreate", "TaskUpdate"):
            return True
        if name in ("Write", "Edit"):
            return mode == "acceptEdits"
        return False

    def _tool_unknown(self, use_id: str, tool_input: dict[str, Any]) -> None:
        self.tool_result(
            use_id,
            "<tool_use_error>Error: No such tool available</tool_use_error>",
            structured="Error: No such tool available",
            is_error=True,
        )

    def _path(self, tool_input: dict[str, Any]) -> str:
        return os.path.join(self.cwd, str(tool_input["file_path"]))

    def _tool_Write(self, use_id: str, tool_input: dict[str, Any]) -> None:
        path = self._path(tool_input)
        original = _read(path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(tool_input["content"])
        if original is None:
            text = (
                f"File created successfully at: {tool_input['file_path']} (file state is "
                "current in your context — no need to Read it back)"
            )
        else:
            text = f"The file {tool_input['file_path']} has been updated successfully."
        self.tool_result(
            use_id,
            text,
            structured={
                "type": "create" if original is None else "update",
                "filePath": tool_input["file_path"],
                "content": tool_input["content"],
                "structuredPatch": [],
                "originalFile": original,
                "userModified": False,
            },
        )

    def _tool_Edit(self, use_id: str, tool_input: dict[str, Any]) -> None:
        path = self._path(tool_input)
        original = _read(path)
        if original is None or tool_input["old_string"] not in original:
            text = "<tool_use_error>String to replace not found in file.</tool_use_error>"
            self.tool_result(use_id, text, structured=f"Error: {text}", is_error=True)
            return
        updated = original.replace(tool_input["old_string"], tool_input["new_string"], 1)
        with open(path, "w", encoding="utf-8") as f:
            f.write(updated)
        self.tool_result(
            use_id,
            f"The file {tool_input['file_path']} has been updated successfully. (file state is "
            "current in your context — no need to Read it back)",
            structured={
                "filePath": tool_input["file_path"],
                "oldString": tool_input["old_string"],
                "newString": tool_input["new_string"],
                "originalFile": original,
                "structuredPatch": [],
                "userModified": False,
                "replaceAll": False,
            },
        )

    def _tool_Read(self, use_id: str, tool_input: dict[str, Any]) -> str | None:
        content = _read(self._path(tool_input))
        if content is None:
            text = "File does not exist."
            self.tool_result(
                use_id,
                f"<tool_use_error>{text}</tool_use_error>",
                structured=f"Error: {text}",
                is_error=True,
            )
            return None
        lines = content.splitlines()
        numbered = "\n".join(f"{i:6}\t{line}" for i, line in enumerate(lines, 1))
        self.tool_result(
            use_id,
            numbered,
            structured={
                "type": "text",
                "file": {
                    "filePath": tool_input["file_path"],
                    "content": content,
                    "numLines": len(lines),
                    "startLine": 1,
                    "totalLines": len(lines),
                },
            },
        )
        return content

    def _tool_Bash(self, use_id: str, tool_input: dict[str, Any]) -> str:
        proc = subprocess.Popen(  # noqa: S603 - running the command is the Bash tool's job
            ["bash", "-c", tool_input["command"]],  # noqa: S607
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # As Claude Code does: each command in a session of its own, out of the CLI's
            # process group (so a signal to that group does not reach it).
            start_new_session=True,
        )
        while True:
            try:
                stdout, stderr = proc.communicate(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                if self.interrupted:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.communicate()
                    self.tool_result(
                        use_id,
                        "The user doesn't want to proceed with this tool use. The tool use was "
                        "rejected (eg. if it was a file edit, the new_string was NOT written to "
                        "the file). STOP what you are doing and wait for the user to tell you "
                        "how to proceed.",
                        structured="Error: interrupted",
                        is_error=True,
                    )
                    raise Interrupted from None
        output = "\n".join(p for p in (stdout.rstrip("\n"), stderr.rstrip("\n")) if p)
        if proc.returncode != 0:
            text = f"Exit code {proc.returncode}\n{output}".rstrip("\n")
            self.tool_result(use_id, text, structured=f"Error: {text}", is_error=True)
        else:
            self.tool_result(
                use_id,
                output,
                structured={
                    "stdout": stdout.rstrip("\n"),
                    "stderr": stderr.rstrip("\n"),
                    "interrupted": False,
                    "isImage": False,
                    "noOutputExpected": False,
                },
                is_error=False,
            )
        return stdout

    def _tool_TaskCreate(self, use_id: str, tool_input: dict[str, Any]) -> str:
        os.makedirs(self.tasks_dir, exist_ok=True)
        number = len([n for n in os.listdir(self.tasks_dir) if n.endswith(".json")]) + 1
        task = {
            "id": str(number),
            "subject": tool_input["subject"],
            "description": tool_input.get("description", ""),
            "activeForm": tool_input.get("activeForm", ""),
            "status": "pending",
            "blocks": [],
            "blockedBy": [],
        }
        with open(os.path.join(self.tasks_dir, f"{number}.json"), "w", encoding="utf-8") as f:
            json.dump(task, f)
        self.tool_result(
            use_id,
            f"Task #{number} created successfully: {task['subject']}",
            structured={"task": {"id": str(number), "subject": task["subject"]}},
        )
        return str(number)

    def _tool_TaskUpdate(self, use_id: str, tool_input: dict[str, Any]) -> None:
        path = os.path.join(self.tasks_dir, f"{tool_input['taskId']}.json")
        with open(path, encoding="utf-8") as f:
            task = json.load(f)
        before = task["status"]
        task["status"] = tool_input["status"]
        with open(path, "w", encoding="utf-8") as f:
            json.dump(task, f)
        self.tool_result(
            use_id,
            f"Updated task #{task['id']} status",
            structured={
                "success": True,
                "taskId": task["id"],
                "updatedFields": ["status"],
                "statusChange": {"from": before, "to": task["status"]},
            },
        )

    def _tool_mcp_clarity__ask_user(self, use_id: str, tool_input: dict[str, Any]) -> None:
        client = self.mcp.get("clarity")
        if client is None:
            self._tool_unknown(use_id, tool_input)
            return
        result = client.request(
            "tools/call",
            {
                "name": "ask_user",
                "arguments": tool_input,
                "_meta": {"claudecode/toolUseId": use_id, "progressToken": 2},
            },
        )
        content = result.get("content", [])
        self.tool_result(use_id, content, structured=content, is_error=bool(result.get("isError")))


# --- scenarios -------------------------------------------------------------------------------


def run_edit(s: Session, prompt: str) -> None:
    """Edit a file or two, run a command, keep a task list, succeed."""
    first = _first_line(prompt)
    s.say("I'll look at the repository and make the change.")
    readme = _existing(s.cwd, "README.md", "README", "readme.md")
    one = s.use(
        "TaskCreate",
        {"subject": "Write hello.txt", "description": first, "activeForm": "Writing hello.txt"},
    )
    two = s.use(
        "TaskCreate",
        {
            "subject": "Mention it in the README",
            "description": first,
            "activeForm": "Updating the README",
        },
    )
    s.use("TaskUpdate", {"taskId": one, "status": "in_progress"})
    hello = os.path.join(s.cwd, "hello.txt")
    current = _read(hello)
    if current is None:
        s.use("Write", {"file_path": hello, "content": "Hello from Clarity\n"})
    else:
        s.use(
            "Edit",
            {
                "file_path": hello,
                "old_string": current,
                "new_string": current + f"Again: {first}\n",
            },
        )
    s.use("TaskUpdate", {"taskId": one, "status": "completed"})
    if readme:
        text = s.use("Read", {"file_path": readme}) or ""
        s.use(
            "Edit",
            {
                "file_path": readme,
                "old_string": text,
                "new_string": text.rstrip("\n") + f"\n\nSee hello.txt ({first}).\n",
            },
        )
    s.use("TaskUpdate", {"taskId": two, "status": "completed"})
    s.use(
        "Bash",
        {"command": "git status --short && cat hello.txt", "description": "Show the changes"},
    )
    s.say(f"Add hello.txt\n\nWrote hello.txt and mentioned it in the README for: {first}")
    s.finish(text=f"Add hello.txt\n\nWrote hello.txt and mentioned it in the README for: {first}")


def run_noop(s: Session, prompt: str) -> None:
    """Look around and change nothing."""
    s.use("Bash", {"command": "ls", "description": "List files"})
    s.say("Nothing to change: the repository already does this.")
    s.finish(text="Nothing to change: the repository already does this.")


def run_ask(s: Session, prompt: str, *, resumed: bool, options: list[str] | None = None) -> None:
    """Ask one question through MCP and end the turn; resumed, use the answer."""
    options = options or GREETINGS
    answer = _answer(prompt, options) if resumed or "answered:**" in prompt else None
    if answer is None:
        s.say("Before I change anything I need one decision from you.")
        s.use(ASK_TOOL, {"question": "Which greeting should hello.txt use?", "options": options})
        s.say("I asked which greeting to use; I'll continue once I have the answer.")
        s.finish(text="I asked which greeting to use; I'll continue once I have the answer.")
        return
    s.use("Write", {"file_path": os.path.join(s.cwd, "hello.txt"), "content": f"{answer}\n"})
    s.use("Bash", {"command": "cat hello.txt", "description": "Show the greeting"})
    summary = f"Use the greeting {answer!r}\n\nhello.txt now says {answer!r}, as you answered."
    s.say(summary)
    s.finish(text=summary)


def run_chatty(s: Session, prompt: str) -> None:
    """Ask, then keep working instead of ending the turn (until interrupted)."""
    s.use(ASK_TOOL, {"question": "Should I keep going?", "options": ["yes", "no"]})
    for step in range(1, 600):
        s.say(f"Step {step}: carrying on regardless.")
        s.pause(0.2)
    s.finish(text="Done without waiting.")


def run_slow(s: Session, prompt: str) -> None:
    """Work in small steps until stopped."""
    s.use("Write", {"file_path": os.path.join(s.cwd, "slow.txt"), "content": "started\n"})
    for step in range(1, 600):
        s.say(f"Step {step}: still working.")
        s.use("Bash", {"command": "sleep 0.5", "description": "Wait a moment"})
    s.finish(text="Done after a long time.")


def run_stubborn(s: Session, prompt: str) -> None:
    """Start a long command and ignore every signal but SIGKILL (a hung CLI)."""
    s.use("Write", {"file_path": os.path.join(s.cwd, "slow.txt"), "content": "started\n"})
    s.say("Step 1: a long command.")
    s.use("Bash", {"command": "sleep 300", "description": "Wait a long time"})
    s.finish(text="Done after a long time.")


def run_crash(s: Session, prompt: str) -> None:
    """Emit a little, then die without a result."""
    s.say("Starting.")
    s.use("Bash", {"command": "echo working", "description": "Work"})
    print("Error: fake crash: the model connection was lost", file=sys.stderr)
    sys.stderr.flush()
    raise SystemExit(3)


def run_budget(s: Session, prompt: str) -> None:
    """Work, then stop at the budget as the CLI does."""
    s.say("Starting on it.")
    s.use("Write", {"file_path": os.path.join(s.cwd, "partial.txt"), "content": "partial work\n"})
    budget = s.args.max_budget_usd or 10.0
    s.cost = max(s.cost, budget + COST_PER_RESPONSE)
    s.finish("error_max_budget_usd", errors=[f"Reached maximum budget (${budget:g})"])
    raise SystemExit(1)


def run_demo(s: Session, prompt: str, *, resumed: bool) -> None:
    """Visible work for `clarity demo`: look around, ask, and finish with the answer."""
    answer = _answer(prompt, GREETINGS) if resumed or "answered:**" in prompt else None
    readme = _existing(s.cwd, "README.md", "README")
    if answer is None:
        s.say("Let me look at the project first.")
        s.use("Bash", {"command": "ls -la", "description": "List the project's files"})
        if readme:
            s.use("Read", {"file_path": readme})
        hello = _existing(s.cwd, "hello.txt", "hello.py", "hello.sh", "hello")
        if hello and hello != readme:
            s.use("Read", {"file_path": hello})
        s.use("TaskCreate", {"subject": "Choose the greeting", "activeForm": "Asking"})
        s.use("TaskCreate", {"subject": "Update hello.txt and the README", "activeForm": "Editing"})
        s.say("There are a few reasonable greetings; this is your call.")
        s.use(
            ASK_TOOL, {"question": "Which greeting should the project use?", "options": GREETINGS}
        )
        s.say("I asked which greeting to use and will continue with your answer.")
        s.finish(text="I asked which greeting to use and will continue with your answer.")
        return
    s.say(f"Thanks: I'll use {answer!r}.")
    s.use("Write", {"file_path": os.path.join(s.cwd, "hello.txt"), "content": f"{answer}\n"})
    if readme:
        text = s.use("Read", {"file_path": readme}) or ""
        s.use(
            "Edit",
            {
                "file_path": readme,
                "old_string": text,
                "new_string": text.rstrip("\n") + f"\n\nThe greeting is: {answer}\n",
            },
        )
    s.use(
        "Bash",
        {"command": "cat hello.txt && git status --short", "description": "Check the result"},
    )
    summary = (
        f"Greet with {answer!r}\n\nhello.txt now says {answer!r} and the README says "
        "which greeting the project uses."
    )
    s.say(summary)
    s.finish(text=summary)


# --- the command -------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clarity-fake-claude", add_help=True)
    p.add_argument("prompt", nargs="?")
    p.add_argument("-p", "--print", action="store_true")
    p.add_argument("--output-format", default="text")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--append-system-prompt")
    p.add_argument("--system-prompt")
    p.add_argument("--max-budget-usd", type=float)
    p.add_argument("--permission-mode")
    p.add_argument("--mcp-config", nargs="+", default=[])
    p.add_argument("--strict-mcp-config", action="store_true")
    p.add_argument("--allowedTools", "--allowed-tools", dest="allowed_tools", nargs="+", default=[])
    p.add_argument(
        "--disallowedTools", "--disallowed-tools", dest="disallowed_tools", nargs="+", default=[]
    )
    p.add_argument("-r", "--resume")
    p.add_argument("--model")
    p.add_argument("--scenario", choices=SCENARIOS)
    p.add_argument("--default-scenario", choices=SCENARIOS, default="edit")
    p.add_argument("--step-seconds", type=float)
    p.add_argument("-v", "--version", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one fake session; the exit status is the CLI's."""
    args = _parser().parse_args(argv)
    if args.version:
        print(f"{VERSION} (Claude Code, fake)")
        return 0
    prompt = args.prompt if args.prompt is not None else sys.stdin.read()
    _log_start(prompt)
    if not args.print or args.output_format != "stream-json" or not args.verbose:
        print(
            "clarity-fake-claude only speaks -p --output-format stream-json --verbose",
            file=sys.stderr,
        )
        return 1
    if (
        args.permission_mode == "bypassPermissions"
        and os.getuid() == 0
        and os.environ.get("IS_SANDBOX") != "1"
    ):
        print(
            "--dangerously-skip-permissions cannot be used with root/sudo privileges for "
            "security reasons",
            file=sys.stderr,
        )
        return 1
    config_dir = os.environ.get("CLAUDE_CONFIG_DIR") or os.path.join(
        os.path.expanduser("~"), ".claude"
    )
    out = sys.stdout
    history: list[dict[str, Any]] = []
    if args.resume:
        failure = _resume_failure(args.resume, config_dir)
        if failure:
            _fail_resume(out, args.resume, failure)
            return 1
        session_id = args.resume
        history = _load(config_dir, session_id)
    else:
        session_id = str(uuid.uuid4())
    scenario = args.scenario or _scenario(prompt) or _scenario_of(history) or args.default_scenario
    step_s = args.step_seconds
    if step_s is None:
        step_s = float(
            os.environ.get("CLAUDE_CODE_FAKE_STEP_S") or (0.6 if scenario == "demo" else 0.0)
        )
    session = Session(args, session_id=session_id, config_dir=config_dir, out=out, step_s=step_s)
    if history:
        session.parent = history[-1].get("uuid")
    stubborn = scenario == "stubborn"

    def on_interrupt(signum: int, frame: object) -> None:
        if not stubborn:
            session.interrupted = True

    signal.signal(signal.SIGINT, on_interrupt)
    if stubborn:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        for config in args.mcp_config:
            _connect(session, config)
        session.init()
        session.prompt(prompt, scenario)
        resumed = bool(history) and _asked(history)
        if scenario == "edit":
            run_edit(session, prompt)
        elif scenario == "noop":
            run_noop(session, prompt)
        elif scenario == "ask":
            run_ask(session, prompt, resumed=resumed)
        elif scenario == "chatty":
            run_chatty(session, prompt)
        elif scenario == "slow":
            run_slow(session, prompt)
        elif scenario == "stubborn":
            run_stubborn(session, prompt)
        elif scenario == "crash":
            run_crash(session, prompt)
        elif scenario == "budget":
            run_budget(session, prompt)
        else:
            run_demo(session, prompt, resumed=resumed)
    except Interrupted:
        message = {
            "role": "user",
            "content": [{"type": "text", "text": "[Request interrupted by user for tool use]"}],
        }
        line_id = session.record({"type": "user", "message": message})
        session.emit(
            {
                "type": "user",
                "message": message,
                "parent_tool_use_id": None,
                "session_id": session_id,
                "uuid": line_id,
                "timestamp": _now(),
            }
        )
        session.finish("error_during_execution", errors=["Request interrupted by user"])
        return 0
    finally:
        for client in session.mcp.values():
            client.close()
    return 0


def _connect(session: Session, config: str) -> None:
    text = config
    if not config.lstrip().startswith("{"):
        with open(config, encoding="utf-8") as f:
            text = f.read()
    for name, server in json.loads(text).get("mcpServers", {}).items():
        client = McpClient(name, server)
        client.connect()
        session.mcp[name] = client


def _resume_failure(session_id: str, config_dir: str) -> str | None:
    if not _UUID.match(session_id):
        return (
            f"Error: --resume requires a valid session ID or session title when used with "
            f"--print. Usage: claude -p --resume <session-id|title>. Provided value "
            f'"{session_id}" is not a UUID and does not match any session title.'
        )
    path = os.path.join(config_dir, "projects", project_key(os.getcwd()), f"{session_id}.jsonl")
    if not os.path.isfile(path):
        return f"No conversation found with session ID: {session_id}"
    return None


def _fail_resume(out: IO[str], session_id: str, message: str) -> None:
    out.write(
        json.dumps(
            {
                "type": "result",
                "subtype": "error_during_execution",
                "duration_ms": 0,
                "duration_api_ms": 0,
                "is_error": True,
                "num_turns": 0,
                "stop_reason": None,
                "session_id": session_id if _UUID.match(session_id) else str(uuid.uuid4()),
                "total_cost_usd": 0,
                "usage": {"input_tokens": 0, "output_tokens": 0},
                "modelUsage": {},
                "permission_denials": [],
                "uuid": str(uuid.uuid4()),
                "errors": [message],
            }
        )
        + "\n"
    )
    out.flush()
    print(message, file=sys.stderr)


def _load(config_dir: str, session_id: str) -> list[dict[str, Any]]:
    path = os.path.join(config_dir, "projects", project_key(os.getcwd()), f"{session_id}.jsonl")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _asked(history: list[dict[str, Any]]) -> bool:
    """Whether the session's last tool call was ask_user (the answer is what comes now)."""
    for entry in reversed(history):
        content = (entry.get("message") or {}).get("content")
        if entry.get("type") == "assistant" and isinstance(content, list):
            for block in content:
                if isinstance(block, dict) and block.get("type") == "tool_use":
                    return bool(block.get("name") == ASK_TOOL)
    return False


def _scenario(prompt: str) -> str | None:
    match = _MARKER.search(prompt)
    return match.group(1) if match and match.group(1) in SCENARIOS else None


def _scenario_of(history: list[dict[str, Any]]) -> str | None:
    for entry in history:
        if entry.get("fakeScenario") in SCENARIOS:
            return str(entry["fakeScenario"])
    return None


def _answer(prompt: str, options: list[str]) -> str:
    lowered = prompt.lower()
    for option in options:
        if option.lower() in lowered:
            return option
    match = re.search(r"answered:\*\*\s*\n(.+)", prompt)
    if match:
        return match.group(1).strip()
    return _first_line(prompt)


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if re.match(r"^\*\*.*:\*\*$", line.strip()):
            continue  # a speaker's label ("**Ada asked for more:**")
        line = re.sub(r"^[#*>\s-]+|\*+", "", line).strip()
        if line:
            return line[:80]
    return "the request"


def _existing(cwd: str, *names: str) -> str | None:
    for name in names:
        if os.path.isfile(os.path.join(cwd, name)):
            return os.path.join(cwd, name)
    return None


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _log_start(prompt: str) -> None:
    path = os.environ.get("CLAUDE_CODE_FAKE_LOG")
    if not path:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(
            json.dumps(
                {
                    "argv": sys.argv,
                    "env": dict(os.environ),
                    "cwd": os.getcwd(),
                    "prompt": prompt,
                    "pid": os.getpid(),
                    "pgid": os.getpgid(0),
                }
            )
            + "\n"
        )


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


if __name__ == "__main__":
    raise SystemExit(main())
