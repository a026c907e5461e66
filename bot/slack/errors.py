"""The one error handler: log with the stack, count, and tell the user with a reference."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from bot.services import NotConfiguredError
from bot.slack import blocks
from bot.slack.client import SlackError
from bot.slack.feature import SlackFeature
from storage.errors import is_database_down

log = logging.getLogger(__name__)


def user_message(error: BaseException, reference: str) -> str:
    """A short, true sentence for the person whose action failed."""
    if is_database_down(error):
        return (
            "Clarity cannot reach its database right now, so nothing was recorded. "
            f"Please try again in a few minutes. (reference `{reference}`)"
        )
    if isinstance(error, NotConfiguredError):
        return f"Clarity is not fully set up: {error} (reference `{reference}`)"
    if isinstance(error, SlackError):
        return (
            f"Clarity could not finish that because a Slack call failed ({error}). "
            f"Please try again. (reference `{reference}`)"
        )
    return (
        "Sorry, that failed on Clarity's side. "
        f"Please report reference `{reference}` to your Clarity admin."
    )


def _where(body: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(channel, user, thread_ts) of the person to tell, as far as the payload says."""
    event = body.get("event") or {}
    if event:
        return event.get("channel"), event.get("user"), event.get("thread_ts")
    if "command" in body:
        return body.get("channel_id"), body.get("user_id"), None
    user = (body.get("user") or {}).get("id")
    channel = (body.get("channel") or {}).get("id")
    if channel is None and body.get("view"):
        try:
            channel = json.loads(body["view"].get("private_metadata") or "{}").get("channelId")
        except ValueError:
            channel = None
    return channel, user, None


def record_failure(feature: SlackFeature, error: BaseException, body: dict[str, Any]) -> str:
    """Log with the stack and count it; returns what to tell the user (with the reference)."""
    reference = uuid.uuid4().hex[:8]
    kind = body.get("type") or ("slash_command" if "command" in body else "unknown")
    log.error("Slack %s failed (reference %s)", kind, reference, exc_info=error)
    feature.services.metrics.errors.labels("slack").inc()
    return user_message(error, reference)


async def tell(feature: SlackFeature, body: dict[str, Any], text: str) -> None:
    """Tell the person behind `body` privately: its response URL, else an ephemeral message."""
    api = await feature.api()
    if body.get("response_url"):
        await api.respond(body["response_url"], text)
        return
    channel, user, thread_ts = _where(body)
    if channel and user:
        await api.call(
            "chat.postEphemeral", channel=channel, user=user, text=text, thread_ts=thread_ts
        )


async def report_error(feature: SlackFeature, error: Exception, body: dict[str, Any]) -> None:
    """The global error handler: record the failure and tell the user privately."""
    text = record_failure(feature, error, body)
    reference = text.rsplit("`", 2)[-2] if text.count("`") >= 2 else "?"
    try:
        event = body.get("event") or {}
        if event.get("type") == "app_home_opened" and event.get("user"):
            api = await feature.api()
            await api.call(
                "views.publish",
                user_id=event["user"],
                view=blocks.error_home_view(reference, text.split(" (reference")[0]),
            )
            return
        await tell(feature, body, text)
    except Exception:
        # The failure itself is logged above; this only says the user could not be told.
        log.exception("could not tell the user about error %s", reference)
        feature.services.metrics.errors.labels("slack_error_report").inc()
