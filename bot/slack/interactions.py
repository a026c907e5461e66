"""Interactions made durable before the ack: the verified payload becomes a `slack.interaction` job.

A thread reply, a click that changes a request, an answer form and `/clarity repo` are each
committed as a job row (through the group-commit intake) before Slack gets its answer; a
worker then runs the same plain function a listener used to run after the ack, and private
feedback goes through the response URL or chat.postEphemeral. A crash after the ack loses
nothing: the job runs on whichever process is up. Each job's key is the delivery's, so the
same delivery queued twice is one job; effects also claim the delivery id in their own
transaction, so a delivery seen again after its job ran has no second effect.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.response import BoltResponse

from bot.services import Services
from bot.slack.client import as_job
from bot.slack.errors import record_failure, tell
from bot.slack.feature import SlackFeature
from bot.workers import JobHandler, PermanentJobError
from storage.jobs import ClaimedJob, NewJob

INTERACTION_JOB = "slack.interaction"
# Slack sends an event again up to three times (at once, after a minute, after five);
# after the third nobody will, so that is when the person is told to post it again.
LAST_EVENT_RETRY = 3
GAVE_UP = (
    "Sorry, Clarity could not finish handling that after several tries. The request's thread "
    "shows what took effect; try again if needed, and if it keeps failing, report job `{job}` "
    "to your Clarity admin."
)

Route = Callable[[SlackFeature, dict[str, Any]], Awaitable[None]]


def interaction_job(services: Services, route: str, body: dict[str, Any], key: str) -> NewJob:
    """The job that runs `route` on `body` (the verified payload, minus its legacy token)."""
    # The deprecated verification token is a credential and nothing reads it: not stored.
    payload = {"route": route, "body": {k: v for k, v in body.items() if k != "token"}}
    return NewJob(
        INTERACTION_JOB,
        payload,
        dedupe_key=f"{INTERACTION_JOB}:{key}",
        max_attempts=services.settings.clarity_job_max_attempts,
    )


async def accept(feature: SlackFeature, route: str, body: dict[str, Any], key: str) -> str | None:
    """Commit the interaction before the ack: None once it is durable, else what to tell."""
    try:
        await feature.intake.accept(interaction_job(feature.services, route, body, key))
    except Exception as exc:
        # Logged with the stack and counted like any failure; the caller answers with the text.
        return record_failure(feature, exc, body)
    return None


async def event_not_accepted(
    feature: SlackFeature, body: dict[str, Any], retry_num: int, problem: str
) -> BoltResponse:
    """Answer non-2xx so Slack delivers the event again; before its last try is lost, say so."""
    if retry_num >= LAST_EVENT_RETRY:
        await feature.inflight.run(tell(feature, body, problem), body)
    return BoltResponse(
        status=503,
        body=json.dumps({"error": {"code": "not_recorded", "message": problem}}),
        headers={"content-type": "application/json"},
    )


def retry_number(headers: dict[str, Any]) -> int:
    """Slack's `X-Slack-Retry-Num` of a delivery (0 for the first), from Bolt's headers."""
    values = headers.get("x-slack-retry-num") or ["0"]
    raw = values[0] if isinstance(values, list | tuple) else values
    return int(raw) if str(raw).isdigit() else 0


def job_handler(slack: SlackFeature, routes: dict[str, Route]) -> JobHandler:
    """The `slack.interaction` job: run the route its payload names on the stored payload."""

    async def run_interaction(job: ClaimedJob) -> None:
        route = routes.get(str(job.payload.get("route")))
        if route is None:
            raise PermanentJobError(f"no Slack interaction route {job.payload.get('route')!r}")
        await route(slack, job.payload["body"])

    async def interaction_exhausted(job: ClaimedJob) -> None:
        await tell(slack, job.payload["body"], GAVE_UP.format(job=job.id))

    return JobHandler(run=as_job(run_interaction), on_exhausted=interaction_exhausted, timeout_s=30)
