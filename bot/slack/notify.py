"""Keeping Slack in line with the database: the root message, the thread, the progress message.

`SlackNotifier.on_change` is subscribed to the lifecycle's changes, runs in the
transaction of each change, and queues at most one job of each kind per request: a job reads
the *current* state when it runs, so a burst of changes costs one Slack call. Each job is
idempotent: what it has posted is recorded in clarity_slack_posts, one row per effect,
written right after the call.

- `slack.root`: post the request's root message (its ts becomes the thread), or edit it to
  show the current status.
- `slack.thread`: post what the thread lacks, in order — questions with their buttons, PR
  links, failures with a Retry button, cancellations, completion — close answered
  questions and retried failures, and react to replies it recorded.
- `slack.progress`: one message per run for agent activity, edited in place, at most once
  per `progress_interval_s` whatever the agent's rate; the last edit shows the final state.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.dispatch import CONVERSATION_TYPES
from bot.requests.budget import raise_step, request_budget
from bot.requests.events import RequestChange
from bot.services import Services
from bot.slack import blocks
from bot.slack.client import SlackApi, SlackRejectedError, as_job
from bot.slack.feature import SlackFeature
from bot.workers import JobHandler, PermanentJobError, RetryLater
from storage import jobs, locks
from storage.deliveries import claim_delivery
from storage.jobs import ClaimedJob
from storage.models import (
    AGENT_MESSAGE_TYPES,
    FeatureRequest,
    MessageSource,
    MessageType,
    RequestMessage,
    RequestStatus,
    SlackPost,
    utcnow,
)
from storage.repositories import FeatureRequestRepository, RequestMessagesRepository
from storage.repositories.runs import RunsRepository
from storage.repositories.slack_posts import SlackPostsRepository

log = logging.getLogger(__name__)

ROOT_JOB = "slack.root"
THREAD_JOB = "slack.thread"
PROGRESS_JOB = "slack.progress"
JOB_KEYS = {ROOT_JOB: "slack-root", THREAD_JOB: "slack-thread", PROGRESS_JOB: "slack-progress"}
# Rate-limit waits count as attempts; leave room for several.
MAX_ATTEMPTS = 20
SEEN_REACTION = "eyes"

# The thread shows the conversation the runner sees, except the request itself: that is
# the root message the thread hangs from.
THREAD_TYPES = CONVERSATION_TYPES - {MessageType.INITIAL_REQUEST}
PROGRESS_TYPES = AGENT_MESSAGE_TYPES | {MessageType.PROCESSING_UPDATE}


def coalesced(kind: str, delay_s: float = 0.0) -> jobs.CoalescedJob:
    """One of the Slack job kinds, queued at most once per request at a time."""
    return jobs.CoalescedJob(kind, f"{JOB_KEYS[kind]}:", delay_s, MAX_ATTEMPTS)


def progress_job(slack: SlackFeature) -> jobs.CoalescedJob:
    """The progress update agent activity queues: due one progress interval later."""
    return coalesced(PROGRESS_JOB, slack.progress_interval_s)


async def _enqueue_coalesced(
    session: AsyncSession, kind: str, request_id: str, delay_s: float = 0.0
) -> None:
    job = coalesced(kind, delay_s)
    # Shared until this transaction commits; the job waits for it in `_turn`.
    await locks.hold_shared(session, job.barrier_key(request_id))
    await jobs.enqueue_many(session, [job.new_job(request_id)])


# --- shared helpers --------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _turn(
    services: Services, kind: str, request_id: str, retry_after_s: float
) -> AsyncIterator[None]:
    """This job's turn at a request: one job of a kind at a time, after what it absorbed.

    The job's key is held (a transaction-scoped advisory lock) for the whole block, so a
    second job of the kind waits its turn (RetryLater) rather than racing this one. Before
    the block runs, the barrier is taken exclusively: once granted, every change this job
    absorbed (see _enqueue_coalesced) has committed, and the reads that follow (READ
    COMMITTED: a snapshot per statement) see them. The barrier is released at once: held
    through the reads, it would stall every write of this request's activity meanwhile.
    """
    job = coalesced(kind)
    async with services.engine.connect() as held, held.begin():
        if not await locks.try_hold(held, job.dedupe_key(request_id)):
            raise RetryLater(f"another {kind} job for this request is running", retry_after_s)
        async with services.engine.connect() as barrier, barrier.begin():
            await locks.hold(barrier, job.barrier_key(request_id))
        yield


async def _posts(session: AsyncSession, request_id: str) -> dict[tuple[str, str], SlackPost]:
    return await SlackPostsRepository(session).of_request(request_id)


async def _record(
    services: Services, request_id: str, purpose: str, ref: str, channel: str, ts: str
) -> None:
    async with services.session_factory.begin() as session:
        await SlackPostsRepository(session).record(request_id, purpose, ref, channel, ts)


# --- posting once -----------------------------------------------------------------------
# Slack takes no idempotency key. Each post carries message metadata naming what it is, and
# the attempt is recorded (committed) before Slack is asked; a later attempt at the same post
# looks for that metadata first, so a crash or a lost answer after Slack posted does not post
# twice. First attempts post without looking.

POST_EVENT = "clarity_post"
INTENT = "slack-post"
LOOKUP_PAGES = 5
# Our clock and Slack's may differ: a root post is looked for from this much earlier.
CLOCK_SKEW_S = 600.0


def post_key(request_id: str, purpose: str, ref: object) -> str:
    """What one post is, as its metadata and its attempt record name it."""
    return f"{request_id}:{purpose}:{ref}"


def _carries(message: dict[str, Any], key: str) -> bool:
    metadata = message.get("metadata") or {}
    payload = metadata.get("event_payload") or {}
    return bool(metadata.get("event_type") == POST_EVENT and payload.get("key") == key)


async def find_post(
    api: SlackApi, key: str, *, channel: str, thread_ts: str | None, oldest: float | None
) -> str | None:
    """The ts of the post carrying `key` in a thread, or in the channel since `oldest`."""
    method = "conversations.replies" if thread_ts else "conversations.history"
    where: dict[str, Any] = {"ts": thread_ts} if thread_ts else {"oldest": f"{oldest or 0:.6f}"}
    cursor = None
    for _ in range(LOOKUP_PAGES):
        data = await api.call(
            method,
            channel=channel,
            include_all_metadata="true",
            limit=200,
            cursor=cursor,
            **where,
        )
        for message in data.get("messages") or []:
            if _carries(message, key):
                return str(message["ts"])
        cursor = (data.get("response_metadata") or {}).get("next_cursor")
        if not cursor:
            return None
    return None


async def post_once(
    services: Services, api: SlackApi, key: str, *, oldest: float | None = None, **params: Any
) -> dict[str, Any]:
    """chat.postMessage, unless an earlier attempt at this post made it already."""
    async with services.session_factory.begin() as session:
        first = await claim_delivery(session, INTENT, key)
    channel = str(params["channel"])
    if not first:
        try:
            ts = await find_post(
                api, key, channel=channel, thread_ts=params.get("thread_ts"), oldest=oldest
            )
        except SlackRejectedError as exc:
            # Without history access it cannot look: posting again beats not posting.
            log.warning("could not look for an earlier post %s: %s", key, exc)
            ts = None
        if ts is not None:
            log.info("post %s was made by an earlier attempt", key)
            return {"ok": True, "channel": channel, "ts": ts}
    metadata = {"event_type": POST_EVENT, "event_payload": {"key": key}}
    return await api.call("chat.postMessage", metadata=metadata, **params)


async def _root_pending(session: AsyncSession, request_id: str) -> bool:
    return await jobs.has_pending(session, ROOT_JOB, request_id)


async def _thread_ts(session: AsyncSession, request: FeatureRequest) -> str:
    """The request's thread, or RetryLater while the root post is still to come."""
    if request.slack_thread_ts:
        return request.slack_thread_ts
    if await _root_pending(session, request.request_id):
        raise RetryLater("waiting for the root message", 2.0)
    raise PermanentJobError(f"request {request.request_id} has no Slack thread")


# --- slack.root ------------------------------------------------------------------------


async def sync_root(slack: SlackFeature, job: ClaimedJob) -> None:
    """Post the root message once, then keep its status current."""
    services = slack.services
    request_id = str(job.payload["requestId"])
    async with _turn(services, ROOT_JOB, request_id, 1.0):
        async with services.session_factory() as session:
            request = await FeatureRequestRepository(session).get(request_id)
            root = (await _posts(session, request_id)).get(("root", ""))
        if request.slack_channel_id is None:
            return
        if root is None and request.slack_thread_ts:
            # A thread made before Clarity kept its posts (an adopted database): edit that one.
            root = SlackPost(channel_id=request.slack_channel_id, ts=request.slack_thread_ts)
        api = await slack.api()
        public = services.settings.clarity_public_url
        page = f"{public}/requests/{request_id}" if public else None
        message = blocks.root_message(request, slack.scrub, page)
        if root is not None:
            await api.call(
                "chat.update",
                channel=root.channel_id,
                ts=root.ts,
                text=message.text,
                blocks=message.blocks,
            )
            return
        posted = await post_once(
            services,
            api,
            post_key(request_id, "root", ""),
            oldest=request.created_at.timestamp() - CLOCK_SKEW_S,
            channel=request.slack_channel_id,
            text=message.text,
            blocks=message.blocks,
            unfurl_links=False,
        )
        ts = str(posted["ts"])
        channel = str(posted.get("channel") or request.slack_channel_id)
        async with services.session_factory.begin() as session:
            await SlackPostsRepository(session).record(request_id, "root", "", channel, ts)
            await slack.lifecycle.slack_thread_opened(session, request_id, ts)


async def root_exhausted(slack: SlackFeature, job: ClaimedJob) -> None:
    """The root message could not be posted: tell the requester why, privately."""
    services = slack.services
    request_id = str(job.payload["requestId"])
    async with services.session_factory() as session:
        request = await FeatureRequestRepository(session).find_by_request_id(request_id)
        posted = (await _posts(session, request_id)).get(("root", ""))
        error = await jobs.last_error(session, job.id)
    if request is None or posted is not None or not request.response_url:
        return
    reason = error or "unknown error"
    hint = ""
    if "not_in_channel" in reason or "channel_not_found" in reason:
        hint = " Invite the app to this channel (`/invite @Clarity`) so it can keep you posted."
    api = await slack.api()
    await api.respond(
        request.response_url,
        f"Clarity recorded request `{request_id}` but could not post it here ({reason}).{hint}",
    )


# --- slack.thread ----------------------------------------------------------------------


class _Thread:
    """One run of the thread job: what is posted, and the calls that fill the gaps."""

    def __init__(
        self,
        services: Services,
        slack: SlackFeature,
        api: SlackApi,
        request: FeatureRequest,
        thread_ts: str,
        posts: dict[tuple[str, str], SlackPost],
    ) -> None:
        self.services = services
        self.slack = slack
        self.api = api
        self.request = request
        self.channel = request.slack_channel_id or ""
        self.thread_ts = thread_ts
        self.posts = posts

    def has(self, purpose: str, ref: object) -> bool:
        key = str(ref)
        return (purpose, key) in self.posts or (f"failed:{purpose}", key) in self.posts

    async def _done(self, purpose: str, ref: object, ts: str) -> None:
        await _record(self.services, self.request.request_id, purpose, str(ref), self.channel, ts)
        self.posts[(purpose, str(ref))] = SlackPost(
            request_id=self.request.request_id,
            purpose=purpose,
            ref=str(ref),
            channel_id=self.channel,
            ts=ts,
        )

    async def effect(self, purpose: str, ref: object, call: str, **params: Any) -> None:
        """Make one Slack call and record it (a call refused for good is recorded as failed)."""
        # A refused call must not block the rest of the thread: log it and move on.
        if self.has(purpose, ref):
            return
        try:
            if call == "chat.postMessage":
                key = post_key(self.request.request_id, purpose, ref)
                data = await post_once(self.services, self.api, key, **params)
            else:
                data = await self.api.call(call, **params)
        except SlackRejectedError as exc:
            if purpose == "reaction" and exc.error == "already_reacted":
                await self._done(purpose, ref, str(params.get("timestamp", "")))
                return
            log.warning("request %s: %s %s refused: %s", self.request.request_id, call, ref, exc)
            self.services.metrics.errors.labels(f"slack:{call}").inc()
            await self._done(f"failed:{purpose}", ref, "")
            return
        ts = str(data.get("ts") or params.get("ts") or params.get("timestamp") or "")
        await self._done(purpose, ref, ts)

    async def post(self, purpose: str, ref: object, message: blocks.Message) -> None:
        await self.effect(
            purpose,
            ref,
            "chat.postMessage",
            channel=self.channel,
            thread_ts=self.thread_ts,
            text=message.text,
            blocks=message.blocks,
            unfurl_links=False,
        )

    async def edit(self, purpose: str, ref: object, ts: str, message: blocks.Message) -> None:
        await self.effect(
            purpose,
            ref,
            "chat.update",
            channel=self.channel,
            ts=ts,
            text=message.text,
            blocks=message.blocks,
        )

    async def react(self, message: RequestMessage) -> None:
        slack_ts = (message.metadata_ or {}).get("slackTs")
        if slack_ts:
            await self.effect(
                "reaction",
                message.id,
                "reactions.add",
                channel=self.channel,
                timestamp=str(slack_ts),
                name=SEEN_REACTION,
            )

    async def sync(self, thread: list[RequestMessage]) -> None:
        """Post, edit and react, oldest message first."""
        clean = self.slack.scrub
        asks = [m for m in thread if m.type == MessageType.CLARIFICATION_ASK]
        errors = [m for m in thread if m.type == MessageType.ERROR]
        for message in thread:
            match message.type:
                case MessageType.CLARIFICATION_ASK:
                    options = [str(o) for o in (message.metadata_ or {}).get("options") or []]
                    await self.post(
                        "question", message.id, blocks.question_message(message, options, clean)
                    )
                case MessageType.CLARIFICATION_ANSWER | MessageType.FOLLOW_UP_REQUEST:
                    if message.type == MessageType.CLARIFICATION_ANSWER:
                        await self._close_question(message, asks)
                    if message.source == MessageSource.SLACK:
                        await self.react(message)
                    else:
                        await self.post(
                            "message", message.id, blocks.relayed_message(message, clean)
                        )
                case MessageType.PR_CREATED | MessageType.PR_UPDATED:
                    await self.post("message", message.id, blocks.pr_message(self.request, message))
                case MessageType.ERROR:
                    if not self.has("error", message.id):
                        step = await self._raise_step(message)
                        await self.post(
                            "error",
                            message.id,
                            blocks.error_message(self.request, message, clean, raise_by_usd=step),
                        )
                case MessageType.RETRY:
                    for error in errors:
                        posted = self.posts.get(("error", str(error.id)))
                        if error.id < message.id and posted is not None:
                            await self.edit(
                                "retried",
                                error.id,
                                posted.ts,
                                blocks.retried_error(error, message, clean),
                            )
                case MessageType.CANCELLED:
                    await self.post("message", message.id, blocks.cancelled_message(message))
        if self.request.status == RequestStatus.COMPLETED:
            await self._completed()

    async def _raise_step(self, error: RequestMessage) -> float | None:
        """How much more a budget stop may ask for (None for other errors, or at the cap)."""
        if (error.metadata_ or {}).get("errorCode") != blocks.BUDGET_EXCEEDED:
            return None
        settings = self.services.settings
        async with self.services.session_factory() as session:
            budget = await request_budget(
                session, self.request.request_id, settings.clarity_budget_usd
            )
        return raise_step(budget, settings.clarity_max_budget_usd)

    async def _close_question(self, answer: RequestMessage, asks: list[RequestMessage]) -> None:
        question_id = (answer.metadata_ or {}).get("questionMessageId")
        earlier = [q for q in asks if q.id < answer.id]
        question = next((q for q in asks if q.id == question_id), None) or (
            earlier[-1] if earlier else None
        )
        if question is None:
            return
        posted = self.posts.get(("question", str(question.id)))
        if posted is not None:
            await self.edit(
                "answered",
                question.id,
                posted.ts,
                blocks.answered_question(question, answer, self.slack.scrub),
            )

    async def _completed(self) -> None:
        if self.has("completed", ""):
            return
        async with self.services.session_factory() as session:
            totals = await RequestMessagesRepository(session).get_total_metrics(
                self.request.request_id
            )
        cost = (
            self.request.cost_usd if self.request.cost_usd is not None else totals.total_cost_cents
        )
        took = (
            self.request.duration_ms
            if self.request.duration_ms is not None
            else totals.total_duration_ms
        )
        await self.post("completed", "", blocks.completed_message(self.request, cost, took))


async def sync_thread(slack: SlackFeature, job: ClaimedJob) -> None:
    """Bring the request's thread in line with its messages."""
    services = slack.services
    request_id = str(job.payload["requestId"])
    async with _turn(services, THREAD_JOB, request_id, 1.0):
        async with services.session_factory() as session:
            request = await FeatureRequestRepository(session).get(request_id)
            thread_ts = await _thread_ts(session, request)
            thread = await RequestMessagesRepository(session).get_thread(
                request_id, types=THREAD_TYPES
            )
            posts = await _posts(session, request_id)
        api = await slack.api()
        await _Thread(services, slack, api, request, thread_ts, posts).sync(thread)


# --- slack.progress --------------------------------------------------------------------


async def sync_progress(slack: SlackFeature, job: ClaimedJob) -> None:
    """Post or edit the current run's progress message from the latest agent activity."""
    services = slack.services
    request_id = str(job.payload["requestId"])
    async with _turn(services, PROGRESS_JOB, request_id, slack.progress_interval_s):
        async with services.session_factory() as session:
            request = await FeatureRequestRepository(session).get(request_id)
            runs = RunsRepository(session)
            current = await runs.latest(request_id)
            run = await runs.number_of(current) if current is not None else 1
            activity = await RequestMessagesRepository(session).run_activity(
                request_id,
                PROGRESS_TYPES,
                since=current.created_at if current is not None else None,
                latest=blocks.PROGRESS_LINES,
            )
            if not activity.steps:
                return
            thread_ts = await _thread_ts(session, request)
            posted = (await _posts(session, request_id)).get(("progress", str(run)))
        if posted is not None:
            # The spacing is measured from the last edit, not from when this job was queued:
            # a job that ran late must not make the next edit come early.
            since = (utcnow() - posted.updated_at).total_seconds()
            if since < slack.progress_interval_s:
                raise RetryLater("progress edited moments ago", slack.progress_interval_s - since)
        message = blocks.progress_message(
            run,
            activity,
            running=request.status == RequestStatus.PROCESSING,
            clean=slack.scrub,
        )
        api = await slack.api()
        channel = request.slack_channel_id or ""
        if posted is not None:
            await api.call(
                "chat.update",
                channel=posted.channel_id,
                ts=posted.ts,
                text=message.text,
                blocks=message.blocks,
            )
            async with services.session_factory.begin() as session:
                await SlackPostsRepository(session).touch(posted.id)
            return
        data = await post_once(
            services,
            api,
            post_key(request_id, "progress", run),
            channel=channel,
            thread_ts=thread_ts,
            text=message.text,
            blocks=message.blocks,
            unfurl_links=False,
        )
        await _record(services, request_id, "progress", str(run), channel, str(data["ts"]))


class SlackNotifier:
    """Keeps Slack in line with the database: subscribed to request changes, runs the jobs."""

    def __init__(self, slack: SlackFeature) -> None:
        self.slack = slack

    @property
    def activity_job(self) -> jobs.CoalescedJob:
        """What agent activity queues (bot.api.activity): the coalesced progress update."""
        return progress_job(self.slack)

    async def on_change(self, session: AsyncSession, change: RequestChange) -> None:
        """Queue the Slack updates a change calls for (requests with a Slack channel only)."""
        request, message = change.request, change.message
        if not request.slack_channel_id:
            return
        request_id = request.request_id
        kind = message.type if message is not None else None
        if change.status_changed or kind == MessageType.INITIAL_REQUEST:
            await _enqueue_coalesced(session, ROOT_JOB, request_id)
        if kind in THREAD_TYPES or (
            change.status_changed and request.status == RequestStatus.COMPLETED
        ):
            await _enqueue_coalesced(session, THREAD_JOB, request_id)
        if kind in PROGRESS_TYPES:
            await _enqueue_coalesced(
                session, PROGRESS_JOB, request_id, self.slack.progress_interval_s
            )
        elif change.status_changed and request.status != RequestStatus.PROCESSING:
            # The run ended: the progress message should say so.
            await _enqueue_coalesced(session, PROGRESS_JOB, request_id)

    def job_handlers(self) -> dict[str, JobHandler]:
        """The Slack notification jobs."""
        slack = self.slack

        async def root(job: ClaimedJob) -> None:
            await sync_root(slack, job)

        async def root_failed(job: ClaimedJob) -> None:
            await root_exhausted(slack, job)

        async def thread(job: ClaimedJob) -> None:
            await sync_thread(slack, job)

        async def progress(job: ClaimedJob) -> None:
            await sync_progress(slack, job)

        return {
            ROOT_JOB: JobHandler(run=as_job(root), on_exhausted=root_failed, timeout_s=30),
            THREAD_JOB: JobHandler(run=as_job(thread), timeout_s=60),
            PROGRESS_JOB: JobHandler(run=as_job(progress), timeout_s=30),
        }
