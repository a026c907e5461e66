"""Replies in a request's thread: an answer, a follow-up, or a note kept for the next run.

Nothing a person writes in the thread is dropped: a reply is a committed `slack.interaction`
job before Slack gets its answer, every reply becomes a message row, and Slack shows it was
seen with a reaction.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.response import BoltResponse

from bot.requests.actions import Actor, Reply
from bot.slack import interactions
from bot.slack.client import SlackError
from bot.slack.errors import record_failure
from bot.slack.feature import SlackFeature
from bot.slack.payloads import EventCallback, MessageEvent
from storage.models import MessageSource
from storage.repositories import FeatureRequestRepository

log = logging.getLogger(__name__)

REPLY_ROUTE = "thread_reply"


async def user_name(feature: SlackFeature, user_id: str) -> str:
    """A person's display name; their id if Slack cannot say (the reply is kept either way)."""
    cached = feature.user_names.get(user_id)
    if cached is not None:
        return cached
    api = await feature.api()
    try:
        data = await api.call("users.info", user=user_id)
    except SlackError:
        log.warning("users.info failed for %s; recording the reply under the id", user_id)
        return user_id
    user = data.get("user") or {}
    profile = user.get("profile") or {}
    name = str(profile.get("display_name") or user.get("real_name") or user.get("name") or user_id)
    feature.user_names.put(user_id, name)
    return name


async def handle_message(feature: SlackFeature, callback: EventCallback) -> None:
    """A `message` event: act on it if it is a person's reply in a request's thread."""
    event = callback.event
    if not event.is_human_reply or event.thread_ts is None or event.user is None:
        return
    async with feature.services.session_factory() as session:
        request = await FeatureRequestRepository(session).find_by_slack_thread(
            event.channel, event.thread_ts
        )
    if request is None:
        return
    name = await user_name(feature, event.user)
    await record_reply(feature, callback, Actor(event.user, name, MessageSource.SLACK))


async def record_reply(
    feature: SlackFeature, callback: EventCallback, actor: Actor
) -> Reply | None:
    """One transaction: the lifecycle records the reply as the request's state says."""
    event = callback.event
    assert event.thread_ts is not None
    metadata = {
        "slackTs": event.ts,
        "slackThreadTs": event.thread_ts,
        "slackChannelId": event.channel,
    }
    async with feature.services.session_factory.begin() as session:
        request = await FeatureRequestRepository(session).find_by_slack_thread(
            event.channel, event.thread_ts, lock=True
        )
        if request is None:
            return None
        return await feature.lifecycle.reply(
            session,
            request,
            event.text,
            actor,
            metadata=metadata,
            delivery=("slack_event", callback.event_id),
        )


async def in_request_thread(feature: SlackFeature, event: MessageEvent) -> bool:
    """Whether a person's reply is in a request's thread (other threads are not ours)."""
    if not event.is_human_reply or event.thread_ts is None:
        return False
    async with feature.services.session_factory() as session:
        request = await FeatureRequestRepository(session).find_by_slack_thread(
            event.channel, event.thread_ts
        )
    return request is not None


async def accept_reply(
    feature: SlackFeature, callback: EventCallback, body: dict[str, Any]
) -> str | None:
    """Make a reply in a request's thread durable before the ack; else what went wrong."""
    try:
        ours = await in_request_thread(feature, callback.event)
    except Exception as exc:
        return record_failure(feature, exc, body)
    if not ours:
        return None
    return await interactions.accept(feature, REPLY_ROUTE, body, f"slack_event:{callback.event_id}")


async def run_reply(feature: SlackFeature, body: dict[str, Any]) -> None:
    """The `thread_reply` interaction job."""
    await handle_message(feature, EventCallback.model_validate(body))


ROUTES: dict[str, interactions.Route] = {REPLY_ROUTE: run_reply}


def register(bolt: Any, feature: SlackFeature) -> None:
    """`message` events (thread replies)."""

    async def message_posted(body: dict[str, Any], request: Any) -> BoltResponse | None:
        # Bolt answers an event only after this returns (process_before_response), so the
        # reply is a committed job before Slack hears 200; otherwise Slack sends it again.
        callback = EventCallback.model_validate(body)
        problem = await accept_reply(feature, callback, body)
        if problem is None:
            return None
        retry_num = interactions.retry_number(request.headers)
        return await interactions.event_not_accepted(feature, body, retry_num, problem)

    bolt.event("message")(message_posted)
