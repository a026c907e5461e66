"""App Home: the user's recent requests and the last week's stats."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.slack import blocks
from bot.slack.feature import SlackFeature
from bot.slack.payloads import AppHomeOpened
from bot.slack.threads import user_name
from bot.web.auth import issue_login_link
from storage.models import utcnow
from storage.repositories import FeatureRequestRepository

STATS_DAYS = 7
RECENT = 10


async def load_stats(session: AsyncSession, days: int = STATS_DAYS) -> blocks.Stats:
    """Counts per status, total cost and median duration of the requests of the last days."""
    since = utcnow() - dt.timedelta(days=days)
    repo = FeatureRequestRepository(session)
    per_status = await repo.stats_since(since)
    return blocks.Stats(
        days=days,
        counts={s.status: s.count for s in per_status},
        total_cost_cents=sum(s.total_cost_cents for s in per_status),
        median_duration_ms=await repo.median_duration_since(since),
    )


async def publish_home(feature: SlackFeature, user_id: str) -> None:
    """Build and publish the user's Home tab."""
    settings = feature.services.settings
    name = await user_name(feature, user_id)
    async with feature.services.session_factory.begin() as session:
        page = await FeatureRequestRepository(session).recent(slack_user_id=user_id, limit=RECENT)
        stats = await load_stats(session)
        # A fresh single-use link each time the tab is opened (only this person sees it).
        link = await issue_login_link(
            session,
            slack_user_id=user_id,
            user_name=name,
            team_id=None,
            public_url=settings.public_base(),
        )
    api = await feature.api()
    await api.call("views.publish", user_id=user_id, view=blocks.home_view(page.items, stats, link))


def register(bolt: Any, feature: SlackFeature) -> None:
    """`app_home_opened`."""

    async def home_opened(body: dict[str, Any]) -> None:
        event = AppHomeOpened.model_validate(body.get("event") or {})
        if event.tab == "home":
            await feature.inflight.run(publish_home(feature, event.user), body)

    bolt.event("app_home_opened")(home_opened)

    async def dashboard_opened(ack: Any) -> None:
        # The button is a link: Slack opens it and tells us of the click, which needs no work.
        await ack()

    bolt.action(blocks.ACTION_OPEN_DASHBOARD)(dashboard_opened)
