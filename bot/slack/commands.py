"""`/clarity`: parse the text, make changes durable, acknowledge at once, answer privately."""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass
from typing import Any

from bot.requests.budget import usd
from bot.requests.ids import Repo, parse_repo
from bot.slack import blocks, interactions
from bot.slack.errors import record_failure
from bot.slack.feature import SlackFeature
from bot.slack.filing import NewRequest, accept_filing, may_file
from bot.slack.home import load_stats
from bot.slack.payloads import SlashCommand, ViewSubmission
from bot.web.auth import issue_login_link
from storage.repositories import FeatureRequestRepository, RequestMessagesRepository
from storage.repositories.channels import ChannelSettingsRepository

COMMAND = "/clarity"
COMMAND_ROUTE = "command"
NOT_ALLOWED = (
    "Sorry, Clarity is not enabled for you in this channel. Ask a Clarity admin to add you."
)


class Kind(enum.Enum):
    HELP = "help"
    INVALID = "invalid"
    MODAL = "modal"
    LIST = "list"
    STATUS = "status"
    STATS = "stats"
    SET_REPO = "repo"
    DASHBOARD = "dashboard"
    FILE = "file"


# Commands that change something are committed as a job before the ack (filings as their
# own `slack.file` job); the rest only read, and answer right after the ack — asked again
# if a crash loses the answer.
DURABLE = frozenset({Kind.SET_REPO})


@dataclass(frozen=True)
class Parsed:
    """What the command text asks for."""

    kind: Kind
    repo: Repo | None = None
    description: str = ""
    argument: str = ""
    problem: str = ""
    # `--budget N`: the request's spending limit in US dollars.
    budget_usd: float | None = None

    def ack_payload(self) -> dict[str, Any]:
        """The immediate answer: help and mistakes are answered right in the ack."""
        if self.kind == Kind.HELP:
            return {"text": blocks.HELP_TEXT}
        if self.kind == Kind.INVALID:
            return {"text": f"{self.problem}\n\n{blocks.HELP_TEXT}"}
        return {}


_BUDGET_FLAG = re.compile(r"(?<!\S)--budget(?:=|\s+|$)(\S*)", re.IGNORECASE)
_AMOUNT = re.compile(r"^\$?(\d{1,7}(?:\.\d{1,2})?)\$?$")
BUDGET_USAGE = "`--budget` takes an amount in US dollars, e.g. `--budget 5`."


def parse_amount(raw: str) -> float | None:
    """`5`, `$2.50`, `3.5` → dollars; None when it is not a positive amount."""
    match = _AMOUNT.match(raw.strip())
    if match is None:
        return None
    amount = float(match.group(1))
    return amount if amount > 0 else None


def take_budget(text: str) -> tuple[str, float | None, str]:
    """The text without `--budget N`, the amount, and what is wrong with it (or "")."""
    found = _BUDGET_FLAG.findall(text)
    if not found:
        return text, None, ""
    rest = " ".join(_BUDGET_FLAG.sub(" ", text).split())
    if len(found) > 1:
        return rest, None, "Say `--budget` once."
    amount = parse_amount(found[0])
    return rest, amount, "" if amount is not None else BUDGET_USAGE


def parse_command(text: str) -> Parsed:
    """Parse the text after `/clarity` (`--budget N` anywhere in a filing)."""
    text, budget, problem = take_budget(text)
    if problem:
        return Parsed(Kind.INVALID, problem=problem)
    parsed = _parse_words(text)
    if budget is None:
        return parsed
    if parsed.kind != Kind.FILE:
        if parsed.kind == Kind.INVALID:
            return parsed
        return Parsed(Kind.INVALID, problem="`--budget` goes with a request: "
                      "`/clarity owner/repo what to build --budget 5`.")  # fmt: skip
    return Parsed(Kind.FILE, repo=parsed.repo, description=parsed.description, budget_usd=budget)


def over_budget_cap(amount: float, cap: float) -> str:
    """Why a budget is refused (more than CLARITY_MAX_BUDGET_USD)."""
    return (
        f"A request may spend at most {usd(cap)}: ask for `--budget {cap:g}` or less "
        f"(you asked for {usd(amount)})."
    )


def _parse_words(text: str) -> Parsed:
    stripped = text.strip()
    if not stripped:
        return Parsed(Kind.MODAL)
    head, _, rest = stripped.partition(" ")
    rest = rest.strip()
    keyword = head.lower()
    if keyword == "help":
        return Parsed(Kind.HELP)
    if keyword == "list" and not rest:
        return Parsed(Kind.LIST)
    if keyword == "stats" and not rest:
        return Parsed(Kind.STATS)
    if keyword == "dashboard" and not rest:
        return Parsed(Kind.DASHBOARD)
    if keyword == "status":
        if not rest or " " in rest:
            return Parsed(Kind.INVALID, problem="Say which request: `/clarity status <requestId>`.")
        return Parsed(Kind.STATUS, argument=rest)
    if keyword == "repo":
        repo = parse_repo(rest)
        if repo is None:
            return Parsed(Kind.INVALID, problem="Use `/clarity repo owner/repo`, e.g. `acme/web`.")
        return Parsed(Kind.SET_REPO, repo=repo)
    repo = parse_repo(head)
    if repo is not None:
        if not rest:
            return Parsed(
                Kind.INVALID,
                problem=f"Describe what to build: `/clarity {repo.full_name} what to build`.",
            )
        return Parsed(Kind.FILE, repo=repo, description=rest)
    if "/" in head and " " not in head and not rest:
        return Parsed(Kind.INVALID, problem=f"`{head}` is not a repository name (owner/repo).")
    # No repository given: the channel's default is used, if it has one.
    return Parsed(Kind.FILE, description=stripped)


async def run_command(feature: SlackFeature, command: SlashCommand, parsed: Parsed) -> None:
    """The work after the ack."""
    services = feature.services
    match parsed.kind:
        case Kind.HELP | Kind.INVALID | Kind.FILE:
            return
        case Kind.MODAL:
            await open_file_modal(feature, command)
        case Kind.LIST:
            async with services.session_factory() as session:
                page = await FeatureRequestRepository(session).recent(
                    slack_user_id=command.user_id, limit=10
                )
            await _reply(feature, command, blocks.request_list(page.items))
        case Kind.STATUS:
            await _reply(feature, command, await status_text(feature, parsed.argument))
        case Kind.DASHBOARD:
            async with services.session_factory.begin() as session:
                link = await issue_login_link(
                    session,
                    slack_user_id=command.user_id,
                    user_name=command.user_name,
                    team_id=command.team_id or None,
                    public_url=services.settings.public_base(),
                )
            # Privately (the response URL or an ephemeral message), never in the channel.
            await _reply(
                feature,
                command,
                f"<{link}|Open the Clarity dashboard> — this link is yours alone: it signs "
                "you in once, within 10 minutes.",
            )
        case Kind.STATS:
            async with services.session_factory() as session:
                stats = await load_stats(session)
            await _reply(feature, command, blocks.stats_text(stats))
        case Kind.SET_REPO:
            assert parsed.repo is not None
            async with services.session_factory.begin() as session:
                await ChannelSettingsRepository(session).set_default_repo(
                    command.channel_id, parsed.repo.full_name, command.user_id
                )
            await _reply(
                feature,
                command,
                f"Default repository for this channel is now `{parsed.repo.full_name}`.",
            )


async def run_durable_command(feature: SlackFeature, body: dict[str, Any]) -> None:
    """The interaction job of a command that changes something (`/clarity repo`)."""
    command = SlashCommand.model_validate(body)
    await run_command(feature, command, parse_command(command.text))


ROUTES: dict[str, interactions.Route] = {COMMAND_ROUTE: run_durable_command}


async def _reply(feature: SlackFeature, command: SlashCommand, text: str) -> None:
    api = await feature.api()
    if command.response_url:
        await api.respond(command.response_url, text)
    else:
        await api.ephemeral(command.channel_id, command.user_id, text)


async def status_text(feature: SlackFeature, request_id: str) -> str:
    """`/clarity status <id>`."""
    async with feature.services.session_factory() as session:
        request = await FeatureRequestRepository(session).find_by_request_id(request_id)
        if request is None:
            return f"No request `{blocks.escape(request_id)}`. `/clarity list` shows yours."
        thread = await RequestMessagesRepository(session).get_thread(request_id)
    visible = [m for m in thread if not m.type.value.startswith("agent_")]
    return blocks.request_status(request, visible[-1] if visible else None, feature.scrub)


def command_filing(command: SlashCommand, parsed: Parsed) -> NewRequest:
    """`/clarity [owner/repo] what to build` as a filing (no repo: the channel's default)."""
    return NewRequest(
        repo=parsed.repo,
        description=parsed.description,
        user_id=command.user_id,
        user_name=command.user_name,
        channel_id=command.channel_id,
        channel_name=command.channel_name,
        response_url=command.response_url,
        delivery_source="slack_command",
        delivery_id=command.delivery_id,
        budget_usd=parsed.budget_usd,
    )


# --- the filing modal ------------------------------------------------------------------


async def open_file_modal(feature: SlackFeature, command: SlashCommand) -> None:
    """`/clarity` alone: a form, pre-filled with the channel's default repository."""
    async with feature.services.session_factory() as session:
        repo = await ChannelSettingsRepository(session).default_repo(command.channel_id)
    metadata = {
        "channelId": command.channel_id,
        "channelName": command.channel_name,
        "responseUrl": command.response_url,
    }
    api = await feature.api()
    settings = feature.services.settings
    await api.call(
        "views.open",
        trigger_id=command.trigger_id,
        view=blocks.file_modal(
            metadata,
            repo,
            default_budget_usd=settings.clarity_budget_usd,
            max_budget_usd=settings.clarity_max_budget_usd,
        ),
    )


@dataclass(frozen=True)
class ModalInput:
    """The filing modal's fields, validated."""

    repo: Repo | None
    description: str
    errors: dict[str, str]
    budget_usd: float | None = None


def read_file_modal(submission: ViewSubmission, *, max_budget_usd: float = 50.0) -> ModalInput:
    """Validate the form; errors are keyed by block id, as Slack shows them inline."""
    state = submission.view.state
    raw_repo = state.text("repo", "repo")
    description = state.text("description", "description")
    raw_budget = state.text(blocks.BUDGET_BLOCK, blocks.BUDGET_BLOCK)
    repo = parse_repo(raw_repo)
    errors: dict[str, str] = {}
    if repo is None:
        errors["repo"] = "Use owner/repo, e.g. acme/web."
    if not description:
        errors["description"] = "Describe what should be built."
    budget = parse_amount(raw_budget) if raw_budget else None
    if raw_budget and budget is None:
        errors[blocks.BUDGET_BLOCK] = "An amount in US dollars, e.g. 5 or 2.50."
    elif budget is not None and budget > max_budget_usd:
        errors[blocks.BUDGET_BLOCK] = f"At most {usd(max_budget_usd)}."
    return ModalInput(repo=repo, description=description, errors=errors, budget_usd=budget)


def modal_filing(submission: ViewSubmission, form: ModalInput) -> NewRequest:
    """The filing modal's submission as a filing, in the channel it was opened from."""
    metadata = json.loads(submission.view.private_metadata or "{}")
    return NewRequest(
        repo=form.repo,
        description=form.description,
        user_id=submission.user.id,
        user_name=submission.user.display,
        channel_id=str(metadata.get("channelId") or ""),
        channel_name=str(metadata.get("channelName") or ""),
        response_url=metadata.get("responseUrl") or None,
        delivery_source="slack_view",
        delivery_id=submission.view.id,
        budget_usd=form.budget_usd,
    )


async def accept(feature: SlackFeature, new: NewRequest, body: dict[str, Any]) -> str | None:
    """Accept a filing before the ack; the text to answer with instead when it cannot be."""
    if not may_file(feature.services.settings, new.user_id, new.channel_id):
        return NOT_ALLOWED
    try:
        await accept_filing(feature, new)
    except Exception as exc:
        # Reported like any failure (logged with the stack, counted); the answer is the ack.
        return record_failure(feature, exc, body)
    return None


def register(bolt: Any, feature: SlackFeature) -> None:
    """`/clarity` and the filing modal."""

    async def clarity_command(ack: Any, body: dict[str, Any]) -> None:
        command = SlashCommand.model_validate(body)
        parsed = parse_command(command.text)
        cap = feature.services.settings.clarity_max_budget_usd
        if parsed.kind == Kind.FILE and parsed.budget_usd is not None and parsed.budget_usd > cap:
            # Answered privately, in the ack: nothing is filed.
            await ack(text=over_budget_cap(parsed.budget_usd, cap))
            return
        if parsed.kind == Kind.FILE:
            refusal = await accept(feature, command_filing(command, parsed), body)
        elif parsed.kind in DURABLE:
            key = f"slack_command:{command.delivery_id}"
            refusal = await interactions.accept(feature, COMMAND_ROUTE, body, key)
        else:
            await ack(**parsed.ack_payload())
            await feature.inflight.run(run_command(feature, command, parsed), body)
            return
        await ack(text=refusal) if refusal else await ack()

    async def file_modal_submitted(ack: Any, body: dict[str, Any]) -> None:
        submission = ViewSubmission.model_validate(body)
        form = read_file_modal(
            submission, max_budget_usd=feature.services.settings.clarity_max_budget_usd
        )
        errors = form.errors
        if not errors:
            refusal = await accept(feature, modal_filing(submission, form), body)
            errors = {"description": refusal} if refusal else {}
        if errors:
            await ack(response_action="errors", errors=errors)
            return
        await ack()

    bolt.command(COMMAND)(clarity_command)
    bolt.view(blocks.FILE_MODAL)(file_modal_submitted)
