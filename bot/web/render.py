"""Jinja2 templates for the dashboard, and the formatting they use.

Autoescaping is on for every template: agent and user text (which may hold `<script>` or
any HTML) is always shown as text. Text that did not come from Clarity also goes through
the scrubber, so a secret an agent echoed never reaches a page.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from bot.requests.display import duration, money
from storage.models import MessageType, RequestOrigin, RequestStatus

Clean = Callable[[str], str]
TEMPLATES = Path(__file__).resolve().parent / "templates"

STATUS_LABELS: dict[RequestStatus, str] = {
    RequestStatus.PENDING: "Pending",
    RequestStatus.ISSUE_CREATED: "Issue created",
    RequestStatus.PROCESSING: "Working",
    RequestStatus.AWAITING_CLARIFICATION: "Waiting for an answer",
    RequestStatus.PR_CREATED: "Pull request open",
    RequestStatus.COMPLETED: "Completed",
    RequestStatus.ERROR: "Failed",
    RequestStatus.CANCELLED: "Cancelled",
}
ORIGIN_LABELS: dict[RequestOrigin, str] = {
    RequestOrigin.SLACK: "Slack",
    RequestOrigin.GITHUB_ISSUE: "GitHub issue",
    RequestOrigin.WEB: "Web",
}
MESSAGE_LABELS: dict[MessageType, str] = {
    MessageType.INITIAL_REQUEST: "Request",
    MessageType.CLARIFICATION_ASK: "Question",
    MessageType.CLARIFICATION_ANSWER: "Answer",
    MessageType.FOLLOW_UP_REQUEST: "Follow-up",
    MessageType.PROCESSING_STARTED: "Run started",
    MessageType.PROCESSING_UPDATE: "Update",
    MessageType.PR_CREATED: "Pull request opened",
    MessageType.PR_UPDATED: "Pull request updated",
    MessageType.ERROR: "Error",
    MessageType.RETRY: "Retry",
    MessageType.CANCELLED: "Cancelled",
    MessageType.AGENT_THINKING: "Thinking",
    MessageType.AGENT_TOOL_CALL: "Tool call",
    MessageType.AGENT_TOOL_RESULT: "Tool result",
    MessageType.AGENT_FILE_CHANGE: "File change",
    MessageType.AGENT_TERMINAL: "Command",
    MessageType.AGENT_SUMMARY: "Summary",
}
# How much of one field a page shows; the scrubber looks a little further so a secret
# that straddles the cut is still masked.
FIELD_LIMIT = 20_000
SCRUB_MARGIN = 4_096


def when(value: dt.datetime | None) -> str:
    """A UTC time as people read it: 2026-12-05 14:03 UTC."""
    return "—" if value is None else f"{value.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC"


def clock(value: dt.datetime | None) -> str:
    """Time of day in UTC, to the second."""
    return "—" if value is None else f"{value.astimezone(dt.UTC):%H:%M:%S} UTC"


def href(url: object) -> str:
    """A link target from stored data: only http(s) URLs, never `javascript:` and the like."""
    text = str(url or "")
    return text if text.lower().startswith(("https://", "http://")) else "#"


def iso(value: dt.datetime | None) -> str:
    return "" if value is None else value.astimezone(dt.UTC).isoformat(timespec="seconds")


# git's header lines; none can be a hunk's (those start with a space, +, - or a backslash).
DIFF_HEADERS = (
    "+++",
    "---",
    "diff ",
    "index ",
    "new file mode ",
    "deleted file mode ",
    "old mode ",
    "new mode ",
    "similarity index ",
    "dissimilarity index ",
    "rename from ",
    "rename to ",
    "copy from ",
    "copy to ",
    "Binary files ",
)


def diff_lines(text: str) -> list[tuple[str, str]]:
    """A unified diff's lines with the class that colours them (add, del, hunk, meta)."""
    out: list[tuple[str, str]] = []
    for line in text.splitlines():
        if line.startswith(DIFF_HEADERS):
            cls = "meta"
        elif line.startswith("@@"):
            cls = "hunk"
        elif line.startswith("+"):
            cls = "add"
        elif line.startswith("-"):
            cls = "del"
        else:
            cls = "ctx"
        out.append((cls, line))
    return out


def make_environment(scrub: Clean) -> Environment:
    """The dashboard's template environment (autoescaped, strict about missing names)."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"], default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )

    def clean(value: Any, limit: int = FIELD_LIMIT) -> str:
        text = value if isinstance(value, str) else json.dumps(value, indent=2, default=str)
        text = scrub(text[: limit + SCRUB_MARGIN])
        if len(text) > limit:
            return text[:limit] + f"\n… ({len(value) - limit:,} more characters not shown)"
        return text

    env.filters.update(
        clean=clean,
        money=money,
        duration=duration,
        when=when,
        clock=clock,
        href=href,
        iso=iso,
        diff_lines=lambda text, limit=FIELD_LIMIT: diff_lines(clean(text, limit)),
        status_label=lambda s: STATUS_LABELS.get(s, str(s)),
        origin_label=lambda o: ORIGIN_LABELS.get(o, str(o)),
        message_label=lambda t: MESSAGE_LABELS.get(t, str(t)),
    )
    env.globals.update(
        STATUS_LABELS=STATUS_LABELS, ORIGIN_LABELS=ORIGIN_LABELS, MessageType=MessageType
    )
    return env
