"""stream-json events (as Claude Code 2.1.197 writes them) into agent_* messages."""

from __future__ import annotations

from typing import Any

from agent.stream import Translator


def assistant(message_id: str, block: dict[str, Any], parent: str | None = None) -> dict[str, Any]:
    return {
        "type": "assistant",
        "session_id": "s-1",
        "parent_tool_use_id": parent,
        "message": {"id": message_id, "role": "assistant", "content": [block]},
    }


def result_of(use_id: str, content: Any, structured: Any, is_error: bool = False) -> dict[str, Any]:
    block: dict[str, Any] = {"tool_use_id": use_id, "type": "tool_result", "content": content}
    if is_error:
        block["is_error"] = True
    return {
        "type": "user",
        "message": {"role": "user", "content": [block]},
        "tool_use_result": structured,
    }


def test_turns_thinking_and_todo_lists() -> None:
    t = Translator()
    t.feed({"type": "system", "subtype": "init", "session_id": "s-1"})
    [thinking] = t.feed(assistant("msg_1", {"type": "thinking", "thinking": "Hmm."}))
    [text] = t.feed(assistant("msg_1", {"type": "text", "text": "Plan."}))
    [todo] = t.feed(
        assistant(
            "msg_2",
            {
                "type": "tool_use",
                "id": "tu_1",
                "name": "TodoWrite",
                "input": {
                    "todos": [
                        {"content": "a", "status": "completed", "activeForm": "A"},
                        {"content": "b", "status": "pending", "activeForm": "B"},
                    ]
                },
            },
        )
    )
    assert t.session_id == "s-1"
    assert (thinking.type, thinking.content, thinking.metadata["turnNumber"]) == (
        "agent_thinking",
        "Hmm.",
        1,
    )
    assert text.metadata == {"turnId": "msg_1", "turnNumber": 1, "kind": "text"}
    assert todo.type == "agent_tool_call" and todo.metadata["turnNumber"] == 2
    assert todo.metadata["todos"] == [
        {"content": "a", "status": "completed"},
        {"content": "b", "status": "pending"},
    ]
    # A subagent's events keep the parent's turn and say whose they are.
    [nested] = t.feed(assistant("msg_9", {"type": "text", "text": "sub"}, parent="tu_x"))
    assert nested.metadata["turnNumber"] == 2 and nested.metadata["parentToolUseId"] == "tu_x"


def test_task_tools_keep_the_list_by_the_ids_the_cli_gives() -> None:
    t = Translator()
    t.feed(
        assistant(
            "m1",
            {
                "type": "tool_use",
                "id": "c1",
                "name": "TaskCreate",
                "input": {"subject": "Write tests"},
            },
        )
    )
    t.feed(
        result_of(
            "c1",
            "Task #1 created successfully: Write tests",
            {"task": {"id": "1", "subject": "Write tests"}},
        )
    )
    [update] = t.feed(
        assistant(
            "m2",
            {
                "type": "tool_use",
                "id": "u1",
                "name": "TaskUpdate",
                "input": {"taskId": "1", "status": "in_progress"},
            },
        )
    )
    assert update.metadata["todos"] == [{"content": "Write tests", "status": "in_progress"}]


def test_bash_results_are_terminal_sessions() -> None:
    t = Translator()
    t.feed(
        assistant(
            "m1",
            {"type": "tool_use", "id": "b1", "name": "Bash", "input": {"command": "pytest -q"}},
        )
    )
    [ok] = t.feed(
        result_of("b1", "3 passed", {"stdout": "3 passed", "stderr": "warn", "interrupted": False})
    )
    assert ok.type == "agent_terminal"
    assert ok.metadata | {"toolDurationMs": 0, "durationMs": 0} == ok.metadata | {
        "command": "pytest -q",
        "exitCode": 0,
        "stdout": "3 passed",
        "stderr": "warn",
        "toolDurationMs": 0,
        "durationMs": 0,
    }
    t.feed(
        assistant(
            "m2", {"type": "tool_use", "id": "b2", "name": "Bash", "input": {"command": "false"}}
        )
    )
    [failed] = t.feed(
        result_of("b2", "Exit code 3\nout\nerr", "Error: Exit code 3\nout\nerr", is_error=True)
    )
    assert (failed.metadata["exitCode"], failed.metadata["stdout"]) == (3, "out\nerr")
    t.feed(
        assistant(
            "m3", {"type": "tool_use", "id": "b3", "name": "Bash", "input": {"command": "rm -rf /"}}
        )
    )
    [denied] = t.feed(
        result_of("b3", "Permission to use Bash has been denied", "Error: denied", is_error=True)
    )
    assert denied.type == "agent_tool_result" and denied.metadata["isError"] is True


def test_file_tools_become_file_changes_with_a_diff() -> None:
    seen: list[str] = []

    def change(path: str) -> tuple[str, str, str] | None:
        seen.append(path)
        return ("src/app.py", "modified", "diff --git a/src/app.py\n" + "+x\n" * 5000)

    t = Translator(file_change=change, cwd="/work/repo")
    [call] = t.feed(
        assistant(
            "m1",
            {
                "type": "tool_use",
                "id": "e1",
                "name": "Edit",
                "input": {
                    "file_path": "/work/repo/src/app.py",
                    "old_string": "a",
                    "new_string": "b",
                },
            },
        )
    )
    assert call.content == "Edit src/app.py"
    [changed] = t.feed(result_of("e1", "The file has been updated successfully.", {}))
    assert seen == ["/work/repo/src/app.py"]
    assert changed.type == "agent_file_change"
    assert changed.metadata["filePath"] == "src/app.py"
    assert changed.metadata["fileAction"] == "modified"
    assert len(changed.metadata["diffPreview"]) <= 4000
    t.feed(
        assistant(
            "m2",
            {
                "type": "tool_use",
                "id": "w1",
                "name": "Write",
                "input": {"file_path": "/work/repo/new.txt", "content": "y" * 10_000},
            },
        )
    )
    [created] = t.feed(result_of("w1", "File created", {"type": "create"}))
    assert created.metadata["fileAction"] == "created"


def test_the_question_and_the_result() -> None:
    t = Translator()
    t.feed(
        assistant(
            "m1",
            {
                "type": "tool_use",
                "id": "q1",
                "name": "mcp__clarity__ask_user",
                "input": {"question": "Which?", "options": ["a", "b"]},
            },
        )
    )
    assert t.asked == [{"question": "Which?", "options": ["a", "b"]}] and not t.ask_delivered
    t.feed(result_of("q1", [{"type": "text", "text": "sent"}], [{"type": "text", "text": "sent"}]))
    assert t.ask_delivered
    [summary] = t.feed(
        {
            "type": "result",
            "subtype": "success",
            "is_error": False,
            "duration_ms": 1234,
            "num_turns": 3,
            "result": "Did it.",
            "session_id": "s-2",
            "total_cost_usd": 0.0349,
        }
    )
    assert summary.type == "agent_summary" and summary.content == "Did it."
    assert summary.metadata["costCents"] == 3 and summary.metadata["durationMs"] == 1234
    assert t.session_id == "s-2" and t.result is not None
    [budget] = Translator().feed(
        {
            "type": "result",
            "subtype": "error_max_budget_usd",
            "is_error": True,
            "total_cost_usd": 10.2,
            "errors": ["Reached maximum budget ($10)"],
        }
    )
    assert budget.content == "Reached maximum budget ($10)"
    assert budget.metadata["costCents"] == 1020
