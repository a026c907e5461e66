"""Every state change of a request, one method each: the only writers of requests.

Each method runs in the caller's transaction (one per Slack delivery, webhook, API call or
job), takes the request's row lock, checks the transition, writes the audit message, claims
the inbound delivery when there is one, queues the dispatch and publishes the change to the
subscribers — so a change and everything it causes commit or roll back together.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.metrics import Metrics
from bot.requests.budget import raise_step, request_budget, usd
from bot.requests.events import RequestChange, RequestEvents
from bot.requests.ids import Repo, derive_title, new_request_id
from bot.requests.queue import DispatchKind, enqueue_dispatch, enqueue_publish
from storage.deliveries import claim_delivery, delivery_seen
from storage.errors import IllegalTransitionError, UniqueConflictError
from storage.lifecycle import FINAL, can_transition
from storage.models import (
    FeatureRequest,
    MessageSource,
    MessageType,
    RequestMessage,
    RequestOrigin,
    RequestStatus,
    TaskStatus,
)
from storage.repositories import FeatureRequestRepository, RequestMessagesRepository
from storage.repositories.request_messages import SYSTEM_ACTOR
from storage.request_events import announce

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Actor:
    """Who caused a change, and through which front door."""

    id: str
    name: str
    source: MessageSource


SYSTEM = Actor(SYSTEM_ACTOR[0], SYSTEM_ACTOR[1], MessageSource.SYSTEM)

Delivery = tuple[str, str]


class InvalidReportError(Exception):
    """A report that is well-formed but not acceptable in the request's state (a 422)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Outcome:
    """What a person's action did: the changed request, or why nothing changed."""

    request: FeatureRequest | None = None
    message: RequestMessage | None = None
    # A short sentence for the person when nothing changed; None on success.
    refusal: str | None = None
    # The very same delivery had taken effect before (nothing to say).
    repeated: bool = False

    @property
    def done(self) -> bool:
        return self.refusal is None and not self.repeated


class Reply(enum.Enum):
    """What a person's reply in a request's conversation became."""

    ANSWER = "answer"
    FOLLOW_UP = "follow_up"
    NOTE = "note"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class SlackPlace:
    """Where in Slack a request was filed."""

    user_id: str
    user_name: str
    channel_id: str
    channel_name: str
    response_url: str | None = None


@dataclass(frozen=True)
class IssueRef:
    """The GitHub issue a request was filed from or is tracked by."""

    id: int
    number: int
    title: str
    body: str | None
    url: str
    labels: list[str] = field(default_factory=list)
    author: str | None = None
    repository_id: int | None = None
    repository_url: str | None = None


@dataclass(frozen=True)
class Filing:
    """A new request, whichever door it came through."""

    origin: RequestOrigin
    repo: Repo
    description: str
    title: str | None = None
    # The initial message's text and metadata (default: the description).
    content: str | None = None
    metadata: dict[str, Any] | None = None
    slack: SlackPlace | None = None
    issue: IssueRef | None = None


@dataclass(frozen=True)
class StatusReport:
    """The agent's report (PATCH /api/requests/{id}/status), as the lifecycle takes it."""

    status: RequestStatus
    pr_url: str | None = None
    pr_number: int | None = None
    pr_branch_name: str | None = None
    cost_usd: float | None = None
    duration_ms: int | None = None
    error_code: str | None = None
    error_message: str | None = None


_TASK_STATUS = {
    RequestStatus.PROCESSING: TaskStatus.PROCESSING,
    RequestStatus.AWAITING_CLARIFICATION: TaskStatus.PROCESSING,
    RequestStatus.PR_CREATED: TaskStatus.COMPLETED,
    RequestStatus.COMPLETED: TaskStatus.COMPLETED,
    RequestStatus.ERROR: TaskStatus.ERROR,
}

STATUS_WORDS: dict[RequestStatus, str] = {
    RequestStatus.PENDING: "pending",
    RequestStatus.ISSUE_CREATED: "queued",
    RequestStatus.PROCESSING: "being worked on",
    RequestStatus.AWAITING_CLARIFICATION: "waiting for an answer",
    RequestStatus.PR_CREATED: "done (its pull request is open)",
    RequestStatus.COMPLETED: "completed",
    RequestStatus.ERROR: "failed",
    RequestStatus.CANCELLED: "cancelled",
}

UNKNOWN_REQUEST = "That request no longer exists."
# The agent's report when a run stopped at its budget (agent/run.py).
BUDGET_EXCEEDED = "BUDGET_EXCEEDED"
INT32_MAX = 2**31 - 1
ALREADY_ANSWERED = "This question has already been answered."


def cents(usd: float | None) -> int | None:
    """US dollars as whole cents (the ADR stores cents)."""
    return None if usd is None else round(usd * 100)


class RequestLifecycle:
    """The one module that changes requests. Made once, at wiring (bot.app)."""

    def __init__(
        self,
        *,
        events: RequestEvents,
        metrics: Metrics,
        admins: Collection[str] = (),
        dispatch_max_attempts: int = 6,
        budget_usd: float = 10.0,
        max_budget_usd: float = 50.0,
    ) -> None:
        self.events = events
        self.metrics = metrics
        self.admins = frozenset(admins)
        self.dispatch_max_attempts = dispatch_max_attempts
        # A request's default spending limit, and the most a person may raise it to.
        self.budget_usd = budget_usd
        self.max_budget_usd = max_budget_usd

    # --- shared steps ---------------------------------------------------------------------

    async def _announce(
        self,
        session: AsyncSession,
        request: FeatureRequest,
        message: RequestMessage | None = None,
        *,
        status_changed: bool = False,
    ) -> None:
        await self.events.publish(session, RequestChange(request, message, status_changed))

    async def _dispatch(self, session: AsyncSession, request_id: str, kind: DispatchKind) -> None:
        await enqueue_dispatch(session, request_id, kind, max_attempts=self.dispatch_max_attempts)

    async def _message(
        self,
        session: AsyncSession,
        request_id: str,
        type: MessageType,
        content: str,
        actor: Actor,
        metadata: dict[str, Any] | None = None,
    ) -> RequestMessage:
        kept = {k: v for k, v in (metadata or {}).items() if v is not None}
        return await RequestMessagesRepository(session).add_message(
            request_id,
            type,
            actor.source,
            content,
            actor_id=actor.id,
            actor_name=actor.name,
            metadata=kept or None,
        )

    # --- filing ---------------------------------------------------------------------------

    async def file(
        self, session: AsyncSession, filing: Filing, actor: Actor
    ) -> FeatureRequest | None:
        """Record a new request, its initial message and its first dispatch.

        None when the request already exists (a GitHub issue filed twice at once).
        """
        repo = filing.repo
        fields: dict[str, Any] = {
            "request_id": new_request_id(),
            "origin": filing.origin,
            "repo": repo.full_name,
            "title": filing.title or derive_title(filing.description),
            "description": filing.description,
            "repository_url": repo.url,
            "repository_name": repo.full_name,
            "repository_owner": repo.owner,
            "repository_name_only": repo.name,
        }
        if filing.slack is not None:
            place = filing.slack
            fields |= {
                "slack_user_id": place.user_id,
                "slack_user_name": place.user_name,
                "slack_channel_id": place.channel_id,
                "slack_channel_name": place.channel_name,
                "response_url": place.response_url,
            }
        if filing.issue is not None:
            issue = filing.issue
            fields |= {
                "issue_id": issue.id,
                "issue_number": issue.number,
                "issue_title": issue.title,
                "issue_body": issue.body,
                "issue_labels": issue.labels,
                "issue_author": issue.author,
                "issue_url": issue.url,
                "repository_id": issue.repository_id,
                "repository_url": issue.repository_url or repo.url,
            }
        try:
            request = await FeatureRequestRepository(session).create(**fields)
        except UniqueConflictError:
            return None
        message = await self._message(
            session,
            request.request_id,
            MessageType.INITIAL_REQUEST,
            filing.content or filing.description,
            actor,
            filing.metadata,
        )
        await self._dispatch(session, request.request_id, DispatchKind.INITIAL)
        self.metrics.requests_created.labels(request.origin.value).inc()
        await self._announce(session, request, message, status_changed=True)
        return request

    # --- people ---------------------------------------------------------------------------

    async def answer(
        self,
        session: AsyncSession,
        request: FeatureRequest,
        text: str,
        actor: Actor,
        *,
        question_id: int | None = None,
        metadata: dict[str, Any] | None = None,
        delivery: Delivery | None = None,
    ) -> Outcome:
        """Answer the request's open question (the caller holds the request's row lock).

        Each question is answered once: the answer claims it, records which question it
        answers, resumes the run, and the buttons of an older question are stale.
        """
        if delivery is not None and await delivery_seen(session, *delivery):
            return Outcome(request, repeated=True)
        if request.status != RequestStatus.AWAITING_CLARIFICATION:
            return Outcome(request, refusal=ALREADY_ANSWERED)
        question = await RequestMessagesRepository(session).open_question(request.request_id)
        if question_id is not None and (question is None or question.id != question_id):
            return Outcome(request, refusal=ALREADY_ANSWERED)
        if question is not None and not await claim_delivery(session, "answer", str(question.id)):
            return Outcome(request, refusal=ALREADY_ANSWERED)
        if delivery is not None:
            await claim_delivery(session, *delivery)
        meta = dict(metadata or {})
        if question is not None:
            meta["questionMessageId"] = question.id
        message = await self._message(
            session,
            request.request_id,
            MessageType.CLARIFICATION_ANSWER,
            text,
            actor,
            meta,
        )
        request = await FeatureRequestRepository(session).update_status(
            request.request_id, RequestStatus.PROCESSING
        )
        await self._dispatch(session, request.request_id, DispatchKind.CLARIFICATION_ANSWER)
        await self._announce(session, request, message, status_changed=True)
        return Outcome(request, message)

    async def answer_question(
        self,
        session: AsyncSession,
        question_id: int,
        text: str,
        actor: Actor,
        *,
        metadata: dict[str, Any] | None = None,
        delivery: Delivery | None = None,
    ) -> Outcome:
        """Answer one particular question (a button or a form names it)."""
        question = await RequestMessagesRepository(session).get(question_id)
        if question is None or question.type != MessageType.CLARIFICATION_ASK:
            return Outcome(refusal=ALREADY_ANSWERED)
        request = await FeatureRequestRepository(session).get(question.request_id, lock=True)
        return await self.answer(
            session,
            request,
            text,
            actor,
            question_id=question_id,
            metadata=metadata,
            delivery=delivery,
        )

    async def reply(
        self,
        session: AsyncSession,
        request: FeatureRequest,
        text: str,
        actor: Actor,
        *,
        metadata: dict[str, Any] | None = None,
        delivery: Delivery | None = None,
    ) -> Reply:
        """A person wrote in the request's conversation (the caller holds the row lock).

        An answer while a question is open; a follow-up (same branch) once a PR exists;
        otherwise kept, and given to the runner with the next dispatch.
        """
        if delivery is not None and not await claim_delivery(session, *delivery):
            return Reply.DUPLICATE
        meta = dict(metadata or {})
        if request.status == RequestStatus.AWAITING_CLARIFICATION:
            answered = await self.answer(
                session, request, text, actor, metadata={**meta, "answeredVia": "thread"}
            )
            if answered.done:
                return Reply.ANSWER
        if request.status == RequestStatus.PR_CREATED:
            message = await self._message(
                session,
                request.request_id,
                MessageType.FOLLOW_UP_REQUEST,
                text,
                actor,
                {**meta, "dispatched": True},
            )
            request = await FeatureRequestRepository(session).update_status(
                request.request_id, RequestStatus.PROCESSING
            )
            await self._dispatch(session, request.request_id, DispatchKind.FOLLOW_UP)
            await self._announce(session, request, message, status_changed=True)
            return Reply.FOLLOW_UP
        message = await self._message(
            session,
            request.request_id,
            MessageType.FOLLOW_UP_REQUEST,
            text,
            actor,
            {**meta, "dispatched": False},
        )
        await self._announce(session, request, message)
        return Reply.NOTE

    async def _clicked(
        self, session: AsyncSession, request_id: str, delivery: Delivery | None
    ) -> FeatureRequest | Outcome:
        """The request a person acted on, locked; or the Outcome when there is nothing to do
        (this very delivery took effect already, or the request is gone)."""
        request = await FeatureRequestRepository(session).find_by_request_id(request_id, lock=True)
        if delivery is not None and await delivery_seen(session, *delivery):
            return Outcome(request, repeated=True)
        if request is None:
            return Outcome(refusal=UNKNOWN_REQUEST)
        return request

    async def retry(
        self,
        session: AsyncSession,
        request_id: str,
        actor: Actor,
        *,
        delivery: Delivery | None = None,
    ) -> Outcome:
        """Run a failed request again; anything else is refused (a second click too)."""
        requests = FeatureRequestRepository(session)
        found = await self._clicked(session, request_id, delivery)
        if isinstance(found, Outcome):
            return found
        request = found
        if request.status != RequestStatus.ERROR:
            return Outcome(
                request,
                refusal=f"Nothing to retry: the request is {STATUS_WORDS[request.status]}.",
            )
        if delivery is not None:
            await claim_delivery(session, *delivery)
        request = await requests.record_retry(request_id)
        count = request.retry_count or 1
        message = await self._message(
            session,
            request_id,
            MessageType.RETRY,
            f"Retry attempt #{count}",
            actor,
            {"retryCount": count},
        )
        await self._dispatch(session, request_id, DispatchKind.RETRY)
        await self._announce(session, request, message, status_changed=True)
        return Outcome(request, message)

    async def raise_budget(
        self,
        session: AsyncSession,
        request_id: str,
        actor: Actor,
        *,
        delivery: Delivery | None = None,
    ) -> Outcome:
        """Continue a request its budget stopped, with more to spend.

        The budget goes up by as much again (up to the cap), recorded as `budgetUsd` on a
        `retry` message, and the request runs again (kind retry). Only the requester or an
        admin; anything but a budget stop is refused, and so is a second click.
        """
        requests = FeatureRequestRepository(session)
        found = await self._clicked(session, request_id, delivery)
        if isinstance(found, Outcome):
            return found
        request = found
        if not self.may_cancel(request, actor):
            return Outcome(
                request,
                refusal="Only the person who filed this request (or a Clarity admin) "
                "can raise its budget.",
            )
        if request.status != RequestStatus.ERROR:
            return Outcome(
                request,
                refusal=f"Nothing to continue: the request is {STATUS_WORDS[request.status]}.",
            )
        errors = await RequestMessagesRepository(session).get_thread(
            request_id, types=[MessageType.ERROR]
        )
        if not errors or (errors[-1].metadata_ or {}).get("errorCode") != BUDGET_EXCEEDED:
            return Outcome(request, refusal="The last run was not stopped by its budget.")
        budget = await request_budget(session, request_id, self.budget_usd)
        step = raise_step(budget, self.max_budget_usd)
        if step is None:
            return Outcome(
                request,
                refusal=f"The budget is already {usd(budget)}, the most a request may have.",
            )
        if delivery is not None:
            await claim_delivery(session, *delivery)
        request = await requests.record_retry(request_id)
        count = request.retry_count or 1
        new_budget = round(budget + step, 2)
        message = await self._message(
            session,
            request_id,
            MessageType.RETRY,
            f"Budget raised by {usd(step)} to {usd(new_budget)} (retry attempt #{count})",
            actor,
            {"retryCount": count, "budgetUsd": new_budget, "budgetRaisedUsd": step},
        )
        await self._dispatch(session, request_id, DispatchKind.RETRY)
        await self._announce(session, request, message, status_changed=True)
        return Outcome(request, message)

    def may_cancel(self, request: FeatureRequest, actor: Actor) -> bool:
        """The requester or an admin; GitHub and the system act for the issue's owners."""
        if actor.source in (MessageSource.GITHUB, MessageSource.SYSTEM):
            return True
        return actor.id == request.slack_user_id or actor.id in self.admins

    async def cancel(
        self,
        session: AsyncSession,
        request_id: str,
        actor: Actor,
        *,
        delivery: Delivery | None = None,
    ) -> Outcome:
        """Stop a request that is not finished: recorded, and the runner is told to stop."""
        requests = FeatureRequestRepository(session)
        found = await self._clicked(session, request_id, delivery)
        if isinstance(found, Outcome):
            return found
        request = found
        if not self.may_cancel(request, actor):
            return Outcome(
                request,
                refusal="Only the person who filed this request (or a Clarity admin) "
                "can cancel it.",
            )
        if request.status in FINAL:
            return Outcome(
                request, refusal=f"This request is already {STATUS_WORDS[request.status]}."
            )
        if delivery is not None:
            await claim_delivery(session, *delivery)
        request = await requests.update_status(request_id, RequestStatus.CANCELLED)
        message = await self._message(
            session, request_id, MessageType.CANCELLED, f"Cancelled by {actor.name}", actor
        )
        await self._dispatch(session, request_id, DispatchKind.CANCEL)
        await self._announce(session, request, message, status_changed=True)
        return Outcome(request, message)

    async def slack_thread_opened(self, session: AsyncSession, request_id: str, ts: str) -> None:
        """The request's root message is in Slack: its ts is the request's thread."""
        request = await FeatureRequestRepository(session).update_fields(
            request_id, slack_thread_ts=ts
        )
        # Not a change the notifiers act on; the dashboard shows the thread link.
        await announce(session, request.request_id)

    # --- GitHub ---------------------------------------------------------------------------

    async def pr_closed(
        self,
        session: AsyncSession,
        request: FeatureRequest,
        pr_number: int,
        merged: bool,
        actor: Actor,
    ) -> str:
        """The request's PR closed: merged completes the request, unmerged is recorded."""
        old_status = request.status
        completes = merged and can_transition(old_status, RequestStatus.COMPLETED)
        if completes:
            request = await FeatureRequestRepository(session).update_status(
                request.request_id, RequestStatus.COMPLETED
            )
        content = (
            f"Pull request #{pr_number} was merged by @{actor.name}"
            if merged
            else f"Pull request #{pr_number} was closed without merging by @{actor.name}"
        )
        metadata: dict[str, Any] = {"prNumber": pr_number, "merged": merged}
        if completes:
            metadata |= {"fromStatus": old_status.value, "toStatus": RequestStatus.COMPLETED.value}
        message = await self._message(
            session, request.request_id, MessageType.PROCESSING_UPDATE, content, actor, metadata
        )
        await self._announce(session, request, message, status_changed=completes)
        return "completed" if completes else ("merged" if merged else "closed")

    async def tracking_issue_opened(
        self, session: AsyncSession, request_id: str, issue: IssueRef
    ) -> None:
        """A Slack request's tracking issue exists: record it (pending → issue_created)."""
        requests = FeatureRequestRepository(session)
        request = await requests.get(request_id, lock=True)
        if request.issue_number is not None:
            return
        owner, _, name = request.repo.partition("/")
        fields: dict[str, Any] = {
            "issue_id": issue.id,
            "issue_number": issue.number,
            "issue_url": issue.url,
            "issue_title": issue.title,
            "issue_body": issue.body,
            "issue_labels": issue.labels,
            "issue_author": issue.author,
            "repository_name": request.repository_name or request.repo,
            "repository_owner": request.repository_owner or owner,
            "repository_name_only": request.repository_name_only or name,
            "repository_url": request.repository_url or f"https://github.com/{request.repo}",
        }
        old_status = request.status
        # The lifecycle puts issue_created before processing; if dispatch got there first,
        # the issue is recorded without going back.
        opens = old_status == RequestStatus.PENDING
        if opens:
            request = await requests.update_status(
                request_id, RequestStatus.ISSUE_CREATED, **fields
            )
        else:
            request = await requests.update_fields(request_id, **fields)
        metadata: dict[str, Any] = {"issueNumber": issue.number, "issueUrl": issue.url}
        if opens:
            metadata |= {"fromStatus": old_status.value, "toStatus": request.status.value}
        message = await self._message(
            session,
            request_id,
            MessageType.PROCESSING_UPDATE,
            f"Tracking issue #{issue.number} opened: {issue.url}",
            SYSTEM,
            metadata,
        )
        await self._announce(session, request, message, status_changed=opens)

    # --- the runner and the agent ---------------------------------------------------------

    async def run_starting(
        self, session: AsyncSession, request_id: str, kind: str
    ) -> FeatureRequest | None:
        """A dispatch is about to reach the runner: the request goes to processing first, so
        an agent that reports back at once never finds it pending. None: nothing to do."""
        requests = FeatureRequestRepository(session)
        request = await requests.find_by_request_id(request_id, lock=True)
        if request is None:
            return None
        if kind == DispatchKind.CANCEL.value:
            return request
        if request.status in FINAL:
            log.info("not dispatching %s: request is %s", request_id, request.status.value)
            return None
        if request.status != RequestStatus.PROCESSING and can_transition(
            request.status, RequestStatus.PROCESSING
        ):
            request = await requests.update_status(
                request_id, RequestStatus.PROCESSING, task_status=TaskStatus.PROCESSING
            )
            await self._announce(session, request, status_changed=True)
        return request

    async def run_accepted(
        self, session: AsyncSession, request_id: str, attempt: int, kind: str
    ) -> None:
        """The runner took the job: recorded as processing_started."""
        request = await FeatureRequestRepository(session).get(request_id)
        message = await self._message(
            session,
            request_id,
            MessageType.PROCESSING_STARTED,
            f"The runner accepted the job (attempt {attempt}, {kind})",
            SYSTEM,
            {"dispatchAttempt": attempt, "dispatchKind": kind},
        )
        await self._announce(session, request, message)

    async def run_failed(
        self, session: AsyncSession, request_id: str, code: str, text: str
    ) -> FeatureRequest | None:
        """The run failed outside the agent's own reports (runner unreachable, silent, lost).

        The request goes to `error` with a message saying so (its thread gets Retry).
        Recorded only when the request is still live; None when nothing changed.
        """
        requests = FeatureRequestRepository(session)
        request = await requests.find_by_request_id(request_id, lock=True)
        if request is None or request.status in FINAL or request.status == RequestStatus.ERROR:
            return None
        request = await requests.update_status(
            request_id, RequestStatus.ERROR, task_status=TaskStatus.ERROR
        )
        message = await self._message(
            session,
            request_id,
            MessageType.ERROR,
            text,
            SYSTEM,
            {"errorCode": code, "errorMessage": text},
        )
        await self._announce(session, request, message, status_changed=True)
        return request

    async def bundle_received(
        self,
        session: AsyncSession,
        request_id: str,
        attempt: int,
        outcome: str,
        sha256: str,
    ) -> None:
        """A run handed back its work (a git bundle): Clarity publishes it, once."""
        await FeatureRequestRepository(session).get(request_id)
        await enqueue_publish(
            session, request_id, attempt, sha256, max_attempts=self.dispatch_max_attempts
        )

    async def published(
        self,
        session: AsyncSession,
        request_id: str,
        *,
        pr_url: str,
        pr_number: int | None,
        branch: str,
        commit: str,
        created: bool,
        final: bool,
        cost_cents: int | None = None,
    ) -> FeatureRequest:
        """A run's commits are on the branch and its PR is open or updated.

        `final`: the run completed, so the request's PR is ready (`pr_created`); otherwise
        (a question, a cancel, a budget stop) the work so far is kept as a draft and the
        request stays where it is.
        """
        requests = FeatureRequestRepository(session)
        request = await requests.get(request_id, lock=True)
        fields: dict[str, Any] = {"pr_url": pr_url, "pr_branch_name": branch}
        if pr_number is not None:
            fields["pr_number"] = pr_number
        old_status = request.status
        moves = (
            final
            and old_status != RequestStatus.PR_CREATED
            and can_transition(old_status, RequestStatus.PR_CREATED)
        )
        if moves:
            fields["task_status"] = TaskStatus.COMPLETED
            request = await requests.update_status(request_id, RequestStatus.PR_CREATED, **fields)
        else:
            request = await requests.update_fields(request_id, **fields)
        kind = MessageType.PR_CREATED if created else MessageType.PR_UPDATED
        words = "opened" if created else "updated"
        message = await self._message(
            session,
            request_id,
            kind,
            f"Pull request {words}" + ("" if final else " (draft: the work so far)"),
            SYSTEM,
            {
                "prUrl": pr_url,
                "prNumber": pr_number,
                "commitSha": commit,
                "draft": not final,
                "costCents": cost_cents,
                **(
                    {"fromStatus": old_status.value, "toStatus": request.status.value}
                    if moves
                    else {}
                ),
            },
        )
        await self._announce(session, request, message, status_changed=moves)
        return request

    async def publish_refused(self, session: AsyncSession, request_id: str, reason: str) -> None:
        """The run's work was not published (a secret in it, not the request's branch, …)."""
        requests = FeatureRequestRepository(session)
        request = await requests.get(request_id, lock=True)
        code, text = "PUBLISH_REFUSED", f"Nothing was pushed: {reason}"
        if request.status in FINAL or request.status == RequestStatus.ERROR:
            message = await self._message(
                session,
                request_id,
                MessageType.ERROR,
                text,
                SYSTEM,
                {"errorCode": code, "errorMessage": text},
            )
            await self._announce(session, request, message)
            return
        await self.run_failed(session, request_id, code, text)

    async def report_status(
        self, session: AsyncSession, request_id: str, report: StatusReport
    ) -> FeatureRequest:
        """Apply the agent's status report, recorded as a message of the trail.

        costUsd and durationMs describe the run being reported: its message keeps them
        (costCents, durationMs) and the request's totals add them up. A report that arrives
        after the request is final is recorded and changes nothing.
        """
        requests = FeatureRequestRepository(session)
        request = await requests.get(request_id, lock=True)
        old_status, had_pr = request.status, request.pr_url is not None
        new_status = report.status
        cost_cents, duration_ms = cents(report.cost_usd), report.duration_ms
        if old_status in FINAL:
            if new_status == old_status:
                return request
            # A dying run's last words: kept in the trail, the request stays as it is.
            late = await self._message(
                session,
                request_id,
                MessageType.PROCESSING_UPDATE,
                f"Late report ignored: {new_status.value} after {old_status.value}"
                + (f" ({report.error_message})" if report.error_message else ""),
                SYSTEM,
                {
                    "fromStatus": old_status.value,
                    "toStatus": new_status.value,
                    "errorCode": report.error_code,
                    "costCents": cost_cents,
                    "durationMs": duration_ms,
                    "ignored": True,
                },
            )
            await self._announce(session, request, late)
            return request
        if not can_transition(old_status, new_status):
            raise IllegalTransitionError(request_id, old_status.value, new_status.value)
        fields: dict[str, Any] = {}
        if report.pr_url is not None:
            fields["pr_url"] = report.pr_url
        if report.pr_number is not None:
            fields["pr_number"] = report.pr_number
        if report.pr_branch_name is not None:
            fields["pr_branch_name"] = report.pr_branch_name
        if new_status == RequestStatus.PR_CREATED and not (fields.get("pr_url") or request.pr_url):
            raise InvalidReportError("prUrl", "required when status is pr_created")
        # The totals are 32-bit integer columns (the ADR's): they saturate at the largest
        # value ($21 million, 24 days) rather than fail; each run's message keeps its own.
        if cost_cents is not None:
            fields["cost_usd"] = min((request.cost_usd or 0) + cost_cents, INT32_MAX)
        if duration_ms is not None:
            fields["duration_ms"] = min((request.duration_ms or 0) + duration_ms, INT32_MAX)
        if new_status in _TASK_STATUS:
            fields["task_status"] = _TASK_STATUS[new_status]
        changed = new_status != old_status
        reported = (
            cost_cents is not None
            or duration_ms is not None
            or report.error_code is not None
            or report.error_message is not None
        )
        touched = any(getattr(request, k) != v for k, v in fields.items())
        if not (changed or reported or touched):
            return request
        request = await requests.update_status(request_id, new_status, **fields)
        message: RequestMessage | None = None
        if changed or reported:
            message = await self._status_message(
                session, request, old_status, report, had_pr=had_pr, cost_cents=cost_cents
            )
        await self._announce(session, request, message, status_changed=changed)
        return request

    async def _status_message(
        self,
        session: AsyncSession,
        request: FeatureRequest,
        old_status: RequestStatus,
        report: StatusReport,
        *,
        had_pr: bool,
        cost_cents: int | None,
    ) -> RequestMessage:
        new_status = request.status
        metadata: dict[str, Any] = {
            "fromStatus": old_status.value,
            "toStatus": new_status.value,
            "durationMs": report.duration_ms,
            "costCents": cost_cents,
        }
        if new_status == RequestStatus.PR_CREATED:
            # A second PR report for a request that already had one is an update of that PR.
            message_type = MessageType.PR_UPDATED if had_pr else MessageType.PR_CREATED
            content = "Pull Request updated" if had_pr else "Pull Request created"
        elif new_status == RequestStatus.ERROR:
            message_type = MessageType.ERROR
            content = report.error_message or "The agent reported an error."
            metadata["errorCode"] = report.error_code or "AGENT_ERROR"
            metadata["errorMessage"] = content
        elif new_status == RequestStatus.CANCELLED:
            message_type, content = MessageType.CANCELLED, "Cancelled by the agent"
        elif new_status == RequestStatus.COMPLETED:
            message_type, content = MessageType.PROCESSING_UPDATE, "Completed"
        elif new_status == old_status:
            message_type = MessageType.PROCESSING_UPDATE
            content = f"Run report ({new_status.value})"
        else:
            message_type = MessageType.PROCESSING_UPDATE
            content = f"Status changed from {old_status.value} to {new_status.value}"
        return await self._message(
            session, request.request_id, message_type, content, SYSTEM, metadata
        )

    async def agent_says(
        self,
        session: AsyncSession,
        request_id: str,
        type: MessageType,
        content: str,
        metadata: dict[str, Any] | None,
    ) -> RequestMessage:
        """A message from the agent; a clarification_ask also puts the request on hold."""
        requests = FeatureRequestRepository(session)
        asks = type == MessageType.CLARIFICATION_ASK
        # Only a question changes the request, so only a question takes the row lock.
        request = await requests.get(request_id, lock=asks)
        status_changed = False
        if asks and request.status != RequestStatus.AWAITING_CLARIFICATION:
            if not can_transition(request.status, RequestStatus.AWAITING_CLARIFICATION):
                raise IllegalTransitionError(
                    request_id, request.status.value, RequestStatus.AWAITING_CLARIFICATION.value
                )
            request = await requests.update_status(request_id, RequestStatus.AWAITING_CLARIFICATION)
            status_changed = True
        message = await RequestMessagesRepository(session).add_system(
            request_id, type, content, metadata
        )
        await self._announce(session, request, message, status_changed=status_changed)
        return message
