"""The web dashboard: /requests, /requests/{requestId}, /stats, sign-in, live events.

`setup(app, ...)` adds the routes and starts one LISTEN connection with the app; every
dependency is a keyword argument (the caller reads settings, this package reads no
environment).
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.web import views
from bot.web.actions import RequestActions
from bot.web.auth import DEFAULT_SESSION_TTL_S, issue_login_link, session_ttl
from bot.web.changes import ChangesReader
from bot.web.render import make_environment
from bot.web.views import DASHBOARD_KEY, Dashboard, signed_in
from storage.request_events import RequestEventListener

__all__ = ["DASHBOARD_KEY", "Dashboard", "RequestActions", "issue_login_link", "setup"]


def setup(
    app: web.Application,
    *,
    session_factory: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    actions: RequestActions,
    public_url: str | None = None,
    admin_user_ids: Collection[str] = (),
    session_ttl_s: int = DEFAULT_SESSION_TTL_S,
    scrub: Callable[[str], str] = lambda text: text,
    git_url: str | None = None,
) -> Dashboard:
    """Add the dashboard's routes to `app`; its event listener runs while the app does.

    `scrub` masks secrets in agent text (pass the Slack side's Scrubber); `public_url` is
    CLARITY_PUBLIC_URL (https there makes the session cookie Secure); `git_url` is
    GITHUB_GIT_URL (a `file://` one: request pages show their branch's diff).
    """
    dash = Dashboard(
        session_factory=session_factory,
        engine=engine,
        actions=actions,
        env=make_environment(scrub),
        admins=frozenset(admin_user_ids),
        public_url=public_url,
        session_ttl=session_ttl(session_ttl_s),
        changes=ChangesReader(git_url),
    )
    app[DASHBOARD_KEY] = dash
    listener = dash.listener = RequestEventListener(
        engine, on_event=dash.hub.publish, on_resync=dash.hub.resync
    )

    router = app.router
    router.add_get("/requests", signed_in(views.list_page))
    router.add_get("/requests/{request_id}", signed_in(views.request_page))
    router.add_get("/requests/{request_id}/live", signed_in(views.request_live))
    router.add_post("/requests/{request_id}/retry", signed_in(views.retry))
    router.add_post("/requests/{request_id}/cancel", signed_in(views.cancel))
    router.add_get("/stats", signed_in(views.stats_page))
    router.add_get("/events", signed_in(views.events))
    router.add_get("/login", views.login_page)
    router.add_post("/login", views.login)
    router.add_post("/logout", signed_in(views.logout))
    router.add_get("/static/{name}", views.static)

    async def start(_: web.Application) -> None:
        listener.start()

    async def end_streams(_: web.Application) -> None:
        dash.hub.close_all()

    async def stop(_: web.Application) -> None:
        await listener.stop()

    app.on_startup.append(start)
    app.on_shutdown.append(end_streams)
    app.on_cleanup.append(stop)
    return dash
