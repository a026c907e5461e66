"""Block Kit rendering: every message, modal and Home view Clarity shows in Slack.

Functions here are pure: they take rows (already loaded) and a scrubber for text that did
not come from Clarity itself, and return Slack payloads. Action ids are the contract in
DESIGN.md.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bot.requests.display import duration, money
from bot.scrub import SLACK_BLOCK_LIMIT, truncate
from storage.lifecycle import FINAL
from storage.models import FeatureRequest, MessageType, RequestMessage, RequestStatus
from storage.repositories.request_messages import RunActivity

Block = dict[str, Any]
Clean = Callable[[str], str]

ACTION_RETRY = "retry_request"
ACTION_CANCEL = "cancel_request"
ACTION_ANSWER = "answer_clarification"
ACTION_OPTION = "clarification_option"
# "Continue with $X more" on a run its budget stopped.
ACTION_RAISE_BUDGET = "raise_budget"
BUDGET_BLOCK = "budget"
BUDGET_EXCEEDED = "BUDGET_EXCEEDED"
FILE_MODAL = "clarity_file_request"
ANSWER_MODAL = "clarity_answer"
QUESTION_BLOCK_PREFIX = "clarity_q:"
MAX_OPTIONS = 10
NO_RETRY_CODES = frozenset({"NO_RUNNER"})

STATUS_LABELS: dict[RequestStatus, str] = {
    RequestStatus.PENDING: ":hourglass_flowing_sand: Pending",
    RequestStatus.ISSUE_CREATED: ":memo: Issue created",
    RequestStatus.PROCESSING: ":gear: Working",
    RequestStatus.AWAITING_CLARIFICATION: ":question: Waiting for an answer",
    RequestStatus.PR_CREATED: ":twisted_rightwards_arrows: Pull request open",
    RequestStatus.COMPLETED: ":white_check_mark: Completed",
    RequestStatus.ERROR: ":x: Failed",
    RequestStatus.CANCELLED: ":no_entry_sign: Cancelled",
}

HELP_TEXT = "\n".join(
    [
        "*Clarity* hands work to an AI coding agent and opens a pull request.",
        "• `/clarity owner/repo what to build` — file a request "
        "(add `--budget 5` to let the agent spend up to $5 on it)",
        "• `/clarity` — file a request with a form",
        "• `/clarity what to build` — in a channel with a default repository",
        "• `/clarity repo owner/repo` — set this channel's default repository",
        "• `/clarity list` — your recent requests",
        "• `/clarity status <requestId>` — where a request stands",
        "• `/clarity stats` — the last 7 days at a glance",
        "• `/clarity dashboard` — a private sign-in link to the web dashboard",
        "• `/clarity help` — this message",
        "Reply in a request's thread to answer questions or ask for more changes.",
    ]
)


def escape(text: str) -> str:
    """Slack mrkdwn escaping: user or agent text cannot ping @channel or forge links."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _safe(clean: Clean, text: str, limit: int = SLACK_BLOCK_LIMIT) -> str:
    return truncate(escape(clean(text)), limit)


def _section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _context(text: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def _button(
    text: str, action_id: str, value: str, *, style: str | None = None, confirm: Block | None = None
) -> Block:
    button: Block = {
        "type": "button",
        "text": {"type": "plain_text", "text": truncate(text, 75), "emoji": True},
        "action_id": action_id,
        "value": value[:2000],
    }
    if style:
        button["style"] = style
    if confirm:
        button["confirm"] = confirm
    return button


def status_label(status: RequestStatus) -> str:
    return STATUS_LABELS[status]


def who(message: RequestMessage) -> str:
    """A mention for Slack users, the name for anyone else."""
    if message.source.value == "slack" and message.actor_id:
        return f"<@{message.actor_id}>"
    return escape(message.actor_name or message.actor_id or "someone")


def repo_link(request: FeatureRequest) -> str:
    url = request.repository_url or f"https://github.com/{request.repo}"
    return f"<{url}|{escape(request.repo)}>"


def pr_link(request: FeatureRequest) -> str | None:
    if not request.pr_url:
        return None
    # A local branch (the demo) has no PR number: its changes are on the request page.
    label = f"#{request.pr_number}" if request.pr_number else "see the changes"
    return f"<{request.pr_url}|{label}>"


@dataclass(frozen=True)
class Message:
    """A message payload: fallback text plus blocks."""

    text: str
    blocks: list[Block]


# --- the request's root message ------------------------------------------------------


def root_message(request: FeatureRequest, clean: Clean, page_url: str | None = None) -> Message:
    """Title, repository, requester, status, request id and (while open) a Cancel button.

    `page_url` is the request's dashboard page, linked when CLARITY_PUBLIC_URL is set.
    """
    title = request.title or request.description
    requester = f"<@{request.slack_user_id}>" if request.slack_user_id else "—"
    fields = [
        f"*Repository*\n{repo_link(request)}",
        f"*Requested by*\n{requester}",
        f"*Status*\n{status_label(request.status)}",
        f"*Request*\n`{request.request_id}`",
    ]
    headline = f"*{_safe(clean, title, 300)}*"
    if request.description.strip() != title.strip():
        headline += f"\n{_safe(clean, request.description, 1500)}"
    blocks: list[Block] = [
        _section(headline),
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
    ]
    link = pr_link(request)
    if link:
        blocks.append(_section(f":twisted_rightwards_arrows: Pull request {link}"))
    if page_url:
        blocks.append(_context(f"<{page_url}|Everything the agent did, live, on the dashboard>"))
    if request.status not in FINAL:
        blocks.append(
            {
                "type": "actions",
                "block_id": f"clarity_root:{request.request_id}",
                "elements": [
                    _button(
                        "Cancel",
                        ACTION_CANCEL,
                        request.request_id,
                        style="danger",
                        confirm={
                            "title": {"type": "plain_text", "text": "Cancel this request?"},
                            "text": {
                                "type": "plain_text",
                                "text": "The agent stops working on it.",
                            },
                            "confirm": {"type": "plain_text", "text": "Cancel request"},
                            "deny": {"type": "plain_text", "text": "Keep it"},
                        },
                    )
                ],
            }
        )
        blocks.append(_context("Reply in this thread to add details or answer questions."))
    text = f"{truncate(clean(title), 200)} — {request.repo} — {status_label(request.status)}"
    return Message(text=text, blocks=blocks)


# --- thread messages -----------------------------------------------------------------


def question_message(message: RequestMessage, options: Sequence[str], clean: Clean) -> Message:
    """The agent's question, an Answer button, and one button per offered option."""
    question = _safe(clean, message.content)
    blocks: list[Block] = [
        _section(f":question: *Clarity needs your input*\n{question}"),
        {
            "type": "actions",
            "block_id": f"{QUESTION_BLOCK_PREFIX}{message.id}",
            "elements": [_button("Answer", ACTION_ANSWER, str(message.id), style="primary")],
        },
    ]
    # Action ids need only be unique within their block, so each option gets its own block.
    for index, option in enumerate(list(options)[:MAX_OPTIONS]):
        blocks.append(
            {
                "type": "actions",
                "block_id": f"{QUESTION_BLOCK_PREFIX}{message.id}:{index}",
                "elements": [_button(clean(option), ACTION_OPTION, clean(option))],
            }
        )
    blocks.append(_context("Or simply reply in this thread."))
    return Message(
        text=f"Clarity needs your input: {truncate(clean(message.content), 200)}", blocks=blocks
    )


def answered_question(question: RequestMessage, answer: RequestMessage, clean: Clean) -> Message:
    """The question with its buttons replaced by who answered, and what."""
    blocks = [
        _section(f":question: *Clarity asked*\n{_safe(clean, question.content)}"),
        _context(
            f":white_check_mark: Answered by {who(answer)}: {_safe(clean, answer.content, 1500)}"
        ),
    ]
    return Message(text=f"Answered: {truncate(clean(question.content), 200)}", blocks=blocks)


def _dollars(amount: float) -> str:
    return f"${amount:,.0f}" if float(amount).is_integer() else f"${amount:,.2f}"


def budget_message(
    request: FeatureRequest, message: RequestMessage, clean: Clean, raise_by_usd: float | None
) -> Message:
    """A run stopped at its budget: what was spent, and a button to continue with more."""
    spent = f" The request has spent {money(request.cost_usd)} so far." if request.cost_usd else ""
    blocks: list[Block] = [
        _section(f":moneybag: *Stopped at the budget*\n{_safe(clean, message.content)}{spent}")
    ]
    if raise_by_usd is not None:
        label = f"Continue with {_dollars(raise_by_usd)} more"
        blocks.append(
            {
                "type": "actions",
                "block_id": f"clarity_budget:{message.id}",
                "elements": [
                    _button(label, ACTION_RAISE_BUDGET, request.request_id, style="primary")
                ],
            }
        )
    else:
        blocks.append(_context("The budget is at the most a request may have."))
    return Message(
        text=f"Stopped at the budget: {truncate(clean(message.content), 200)}", blocks=blocks
    )


def error_message(
    request: FeatureRequest,
    message: RequestMessage,
    clean: Clean,
    *,
    raise_by_usd: float | None = None,
) -> Message:
    """What failed, and a Retry button (a budget stop: a button to continue with more)."""
    code = (message.metadata_ or {}).get("errorCode")
    if code == BUDGET_EXCEEDED:
        return budget_message(request, message, clean, raise_by_usd)
    blocks: list[Block] = [_section(f":x: *The run failed*\n{_safe(clean, message.content)}")]
    if code:
        blocks.append(_context(f"Error code `{escape(str(code))}`"))
    # Without a runner, Retry cannot help: the message says what the admin must do instead.
    if code not in NO_RETRY_CODES:
        blocks.append(
            {
                "type": "actions",
                "block_id": f"clarity_error:{message.id}",
                "elements": [_button("Retry", ACTION_RETRY, request.request_id, style="primary")],
            }
        )
    return Message(text=f"The run failed: {truncate(clean(message.content), 200)}", blocks=blocks)


def retried_error(message: RequestMessage, retry: RequestMessage, clean: Clean) -> Message:
    """The failure with its Retry button replaced by who retried."""
    head = (
        ":moneybag: *Stopped at the budget*"
        if (message.metadata_ or {}).get("errorCode") == BUDGET_EXCEEDED
        else ":x: *The run failed*"
    )
    blocks = [
        _section(f"{head}\n{_safe(clean, message.content)}"),
        _context(f":repeat: Retried by {who(retry)} ({escape(retry.content)})"),
    ]
    return Message(text=f"The run failed: {truncate(clean(message.content), 200)}", blocks=blocks)


def pr_message(request: FeatureRequest, message: RequestMessage) -> Message:
    """A pull request was opened or updated."""
    link = pr_link(request) or "the pull request"
    meta = message.metadata_ or {}
    if message.type == MessageType.PR_CREATED:
        text = f":twisted_rightwards_arrows: *Pull request opened*: {link}"
    else:
        sha = str(meta.get("commitSha") or "")[:7]
        text = f":twisted_rightwards_arrows: *Pull request updated*: {link}"
        if sha:
            text += f" (commit `{escape(sha)}`)"
    facts = []
    if meta.get("costCents") is not None:
        facts.append(f"cost {money(meta['costCents'])}")
    if meta.get("durationMs") is not None:
        facts.append(f"took {duration(meta['durationMs'])}")
    blocks = [_section(text)]
    if facts:
        blocks.append(_context(" · ".join(facts)))
    blocks.append(_context("Reply in this thread to ask for more changes."))
    return Message(text=text, blocks=blocks)


def cancelled_message(message: RequestMessage) -> Message:
    text = f":no_entry_sign: Cancelled by {who(message)}"
    return Message(text=text, blocks=[_section(text)])


def completed_message(
    request: FeatureRequest, total_cost_cents: int | None, total_ms: int | None
) -> Message:
    """Completion with the total cost and duration of every run."""
    link = pr_link(request)
    head = ":white_check_mark: *Completed*" + (f" — {link} merged" if link else "")
    facts = f"Total cost {money(total_cost_cents)} · total time {duration(total_ms)}"
    return Message(text=f"Completed. {facts}", blocks=[_section(head), _context(facts)])


def relayed_message(message: RequestMessage, clean: Clean) -> Message:
    """An answer or follow-up that arrived elsewhere (GitHub), shown in the thread."""
    where = "on GitHub" if message.source.value == "github" else f"via {message.source.value}"
    text = f":speech_balloon: {who(message)} {where}:\n{_safe(clean, message.content)}"
    return Message(text=truncate(clean(message.content), 200), blocks=[_section(text)])


# --- agent progress --------------------------------------------------------------------

_ACTIVITY_ICONS = {
    MessageType.AGENT_THINKING: ":thought_balloon:",
    MessageType.AGENT_TOOL_CALL: ":wrench:",
    MessageType.AGENT_TOOL_RESULT: ":leftwards_arrow_with_hook:",
    MessageType.AGENT_FILE_CHANGE: ":pencil2:",
    MessageType.AGENT_TERMINAL: ":computer:",
    MessageType.PROCESSING_UPDATE: ":information_source:",
    MessageType.PROCESSING_STARTED: ":arrow_forward:",
}
PROGRESS_LINES = 8


def _activity_line(message: RequestMessage, clean: Clean) -> str:
    meta = message.metadata_ or {}
    first = (message.content.strip().splitlines() or [""])[0]
    if message.type == MessageType.AGENT_TOOL_RESULT:
        first = f"{meta.get('toolName') or 'tool'} finished"
    elif message.type == MessageType.AGENT_TERMINAL:
        first = f"`{truncate(first, 120)}` → exit {meta.get('exitCode', '?')}"
        return f"{_ACTIVITY_ICONS[message.type]} {truncate(escape(clean(first)), 160)}"
    return f"{_ACTIVITY_ICONS.get(message.type, '•')} {truncate(escape(clean(first)), 160)}"


def plural(count: int, word: str, words: str | None = None) -> str:
    """`1 step`, `2 steps`."""
    return f"{count} {word if count == 1 else (words or word + 's')}"


_TODO_MARKS = {"completed": ":white_check_mark:", "in_progress": ":arrow_forward:"}


def _checklist(todos: RequestMessage | None, clean: Clean) -> str | None:
    items = (todos.metadata_ or {}).get("todos") if todos is not None else None
    if not isinstance(items, list) or not items:
        return None
    lines = []
    for item in items[:15]:
        if not isinstance(item, dict):
            continue
        mark = _TODO_MARKS.get(str(item.get("status")), ":white_square:")
        lines.append(f"{mark} {truncate(escape(clean(str(item.get('content', '')))), 150)}")
    return "\n".join(lines) or None


def progress_message(run: int, progress: RunActivity, *, running: bool, clean: Clean) -> Message:
    """One message per run, edited in place as the agent works."""
    head = ":gear: *Working…*" if running else ":checkered_flag: *Run finished*"
    label = f"{head} (run {run})" if run > 1 else head
    counts = " · ".join(
        [
            plural(progress.steps, "step"),
            plural(progress.tool_calls, "tool call"),
            plural(progress.files_changed, "file changed", "files changed"),
            plural(progress.commands, "command"),
        ]
    )
    cost = (progress.summary.metadata_ or {}).get("costCents") if progress.summary else None
    if cost is not None:
        counts += f" · cost {money(cost)}"
    blocks: list[Block] = [_section(label), _context(counts)]
    checklist = _checklist(progress.todos, clean)
    if checklist:
        blocks.append(_section(truncate(checklist, SLACK_BLOCK_LIMIT)))
    if progress.latest:
        lines = "\n".join(_activity_line(m, clean) for m in progress.latest)
        blocks.append(_section(truncate(lines, SLACK_BLOCK_LIMIT)))
    if progress.summary is not None:
        blocks.append(_section(f"*Summary*\n{_safe(clean, progress.summary.content)}"))
    text = f"{'Working' if running else 'Run finished'}: {plural(progress.steps, 'step')}"
    return Message(text=text, blocks=blocks)


# --- ephemeral answers -----------------------------------------------------------------


def request_line(request: FeatureRequest) -> str:
    title = escape(truncate(request.title or request.description, 80))
    parts = [f"`{request.request_id}`", f"*{title}*", f"`{escape(request.repo)}`"]
    parts.append(status_label(request.status))
    link = pr_link(request)
    if link:
        parts.append(link)
    return " · ".join(parts)


def request_list(requests: Sequence[FeatureRequest]) -> str:
    if not requests:
        return "You have no requests yet. File one with `/clarity owner/repo what to build`."
    return "*Your recent requests*\n" + "\n".join(f"• {request_line(r)}" for r in requests)


def request_status(request: FeatureRequest, last: RequestMessage | None, clean: Clean) -> str:
    lines = [request_line(request)]
    if request.slack_user_id:
        lines.append(
            f"Requested by <@{request.slack_user_id}> on {request.created_at:%Y-%m-%d %H:%M} UTC"
        )
    if request.retry_count:
        lines.append(f"Retries: {request.retry_count}")
    if request.cost_usd is not None or request.duration_ms is not None:
        lines.append(f"Cost {money(request.cost_usd)} · time {duration(request.duration_ms)}")
    if last is not None:
        lines.append(f"Latest: _{escape(last.type.value)}_ — {_safe(clean, last.content, 300)}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Stats:
    """The last days' requests at a glance."""

    days: int
    counts: dict[RequestStatus, int]
    total_cost_cents: int
    median_duration_ms: float | None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def success_rate(self) -> float | None:
        """Share of finished requests that produced a PR (open or merged)."""
        good = self.counts.get(RequestStatus.COMPLETED, 0) + self.counts.get(
            RequestStatus.PR_CREATED, 0
        )
        bad = self.counts.get(RequestStatus.ERROR, 0) + self.counts.get(RequestStatus.CANCELLED, 0)
        return None if good + bad == 0 else good / (good + bad)


def stats_fields(stats: Stats) -> list[str]:
    rate = "—" if stats.success_rate is None else f"{stats.success_rate:.0%}"
    per_status = ", ".join(f"{status_label(s)} {n}" for s, n in sorted(stats.counts.items()) if n)
    return [
        f"*Requests*\n{stats.total}" + (f"\n{per_status}" if per_status else ""),
        f"*Success rate*\n{rate}",
        f"*Total cost*\n{money(stats.total_cost_cents)}",
        f"*Median duration*\n{duration(stats.median_duration_ms)}",
    ]


def stats_text(stats: Stats) -> str:
    return f"*Last {stats.days} days*\n" + "\n".join(
        f.replace("\n", ": ", 1).replace("\n", " · ") for f in stats_fields(stats)
    )


# --- modals and App Home ---------------------------------------------------------------


def file_modal(
    private_metadata: dict[str, Any],
    default_repo: str | None,
    *,
    default_budget_usd: float = 10.0,
    max_budget_usd: float = 50.0,
) -> Block:
    """`/clarity` alone: repository, description, and (optional) budget."""
    repo_input: Block = {
        "type": "plain_text_input",
        "action_id": "repo",
        "placeholder": {"type": "plain_text", "text": "owner/repo"},
    }
    if default_repo:
        repo_input["initial_value"] = default_repo
    return {
        "type": "modal",
        "callback_id": FILE_MODAL,
        "private_metadata": json.dumps(private_metadata),
        "title": {"type": "plain_text", "text": "New Clarity request"},
        "submit": {"type": "plain_text", "text": "File request"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "input",
                "block_id": "repo",
                "label": {"type": "plain_text", "text": "Repository"},
                "element": repo_input,
                "hint": {"type": "plain_text", "text": "GitHub owner/repo, e.g. acme/web"},
            },
            {
                "type": "input",
                "block_id": "description",
                "label": {"type": "plain_text", "text": "What should be built?"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": "description",
                    "multiline": True,
                    "max_length": 3000,
                },
            },
            {
                "type": "input",
                "block_id": BUDGET_BLOCK,
                "optional": True,
                "label": {"type": "plain_text", "text": "Budget (USD)"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": BUDGET_BLOCK,
                    "max_length": 12,
                    "placeholder": {"type": "plain_text", "text": f"{default_budget_usd:g}"},
                },
                "hint": {
                    "type": "plain_text",
                    "text": f"The most the agent may spend on this request: "
                    f"{_dollars(default_budget_usd)} unless you say, at most "
                    f"{_dollars(max_budget_usd)}",
                },
            },
        ],
    }


def answer_modal(question: RequestMessage, private_metadata: dict[str, Any], clean: Clean) -> Block:
    """The question, and a box for the answer."""
    return {
        "type": "modal",
        "callback_id": ANSWER_MODAL,
        "private_metadata": json.dumps(private_metadata),
        "title": {"type": "plain_text", "text": "Answer Clarity"},
        "submit": {"type": "plain_text", "text": "Send answer"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            _section(f"*Clarity asked*\n{_safe(clean, question.content)}"),
            {
                "type": "input",
                "block_id": "answer",
                "label": {"type": "plain_text", "text": "Your answer"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": "answer",
                    "multiline": True,
                    "max_length": 3000,
                },
            },
        ],
    }


ACTION_OPEN_DASHBOARD = "open_dashboard"


def home_view(
    requests: Sequence[FeatureRequest], stats: Stats, dashboard_link: str | None = None
) -> Block:
    """App Home: the user's recent requests, the last days' stats, a dashboard sign-in."""
    blocks: list[Block] = [
        {"type": "header", "text": {"type": "plain_text", "text": "Your requests"}},
    ]
    if dashboard_link:
        button = _button("Open the dashboard", ACTION_OPEN_DASHBOARD, "open", style="primary")
        button["url"] = dashboard_link
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": "Every request and everything the agent did, live. "
                    "The button signs you in (once, within 10 minutes).",
                },
                "accessory": button,
            }
        )
    if not requests:
        blocks.append(_section("No requests yet. Try `/clarity owner/repo what to build`."))
    for request in requests:
        blocks.append(_section(request_line(request)))
        blocks.append(_context(f"Filed {request.created_at:%Y-%m-%d %H:%M} UTC"))
    blocks += [
        {"type": "divider"},
        {"type": "header", "text": {"type": "plain_text", "text": f"Last {stats.days} days"}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in stats_fields(stats)]},
        _context(f"Updated {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"),
    ]
    return {"type": "home", "blocks": blocks}


def error_home_view(reference: str, reason: str) -> Block:
    """App Home when it could not be built."""
    return {
        "type": "home",
        "blocks": [
            _section(f":warning: {escape(reason)}"),
            _context(f"Reference `{reference}` — quote it when reporting this."),
        ],
    }
