"""The dashboard's HTTP handlers: thin — check the session, call one storage selector or the
lifecycle, render a template."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import mimetypes
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web
from jinja2 import Environment
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.web import actions as rules
from bot.web.actions import RequestActions
from bot.web.auth import (
    COOKIE,
    NEXT_COOKIE,
    Viewer,
    csrf_matches,
    csrf_token,
    new_token,
)
from bot.web.changes import Changes, ChangesReader
from bot.web.live import EventHub, Subscriber, stream
from bot.web.render import clock
from storage import dashboard
from storage.models import FeatureRequest, MessageType, RequestOrigin, RequestStatus, utcnow
from storage.repositories.web_sessions import WebSessionRepository
from storage.request_events import RequestEventListener

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
FRAGMENT_HEADER = "X-Clarity-Fragment"
STATS_DAYS = (7, 30, 90)
# A request page shows the latest steps of the agent; `?all=1` shows every one.
LATEST_STEPS = 300
CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # The sign-in page's URL holds a token: never send it on as a Referer.
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str
    version: str


def load_static() -> dict[str, StaticFile]:
    """The dashboard's CSS, JS and icon, read once; URLs carry a content hash."""
    files: dict[str, StaticFile] = {}
    for path in sorted(STATIC.iterdir()):
        if path.is_file():
            body = path.read_bytes()
            kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            version = hashlib.sha256(body).hexdigest()[:12]
            files[path.name] = StaticFile(body, kind, version)
    return files


@dataclass
class Dashboard:
    """The dashboard's dependencies, made once by `bot.web.setup`."""

    session_factory: async_sessionmaker[AsyncSession]
    engine: AsyncEngine
    actions: RequestActions
    env: Environment
    admins: frozenset[str]
    public_url: str | None
    session_ttl: dt.timedelta
    # The request page's changes section (a local branch's diff, or the PR's link).
    changes: ChangesReader = field(default_factory=lambda: ChangesReader(None))
    hub: EventHub = field(default_factory=EventHub)
    static: dict[str, StaticFile] = field(default_factory=load_static)
    listener: RequestEventListener | None = None

    def static_url(self, name: str) -> str:
        return f"/static/{name}?v={self.static[name].version}"

    def secure_cookies(self, request: web.Request) -> bool:
        """Secure cookies when the public URL or this request is https."""
        public = (self.public_url or "").lower().startswith("https://")
        return public or request.secure

    def render(
        self,
        name: str,
        request: web.Request,
        viewer: Viewer | None,
        *,
        status: int = 200,
        **context: Any,
    ) -> web.Response:
        body = self.env.get_template(name).render(
            viewer=viewer,
            static_url=self.static_url,
            path=request.path,
            now=utcnow(),
            **context,
        )
        return web.Response(
            text=body, status=status, content_type="text/html", headers=SECURITY_HEADERS
        )


DASHBOARD_KEY = web.AppKey("dashboard", Dashboard)


def _text(value: object) -> str | None:
    """A form field's text (None for a file or nothing)."""
    return value if isinstance(value, str) else None


def redirect(location: str) -> web.Response:
    """303 See Other: after a form post, and to the sign-in page."""
    return web.Response(status=303, headers={**SECURITY_HEADERS, "Location": location})


Handler = Callable[[web.Request, Dashboard, Viewer], Awaitable[web.StreamResponse]]
Route = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def viewer_of(request: web.Request, dash: Dashboard) -> Viewer | None:
    """The signed-in person, from the session cookie; None without a live session."""
    token = request.cookies.get(COOKIE)
    if not token or len(token) > 128:
        return None
    async with dash.session_factory() as session:
        info = await WebSessionRepository(session).find_session(token)
    return None if info is None else Viewer(info, csrf_token(token))


def _wants_data(request: web.Request) -> bool:
    return (
        request.method != "GET"
        or FRAGMENT_HEADER in request.headers
        or request.path == "/events"
        or request.path.endswith("/live")
    )


def signed_in(handler: Handler) -> Route:
    """Run `handler` for a signed-in person; others are sent to sign in (pages) or get 401."""

    async def route(request: web.Request) -> web.StreamResponse:
        dash = request.app[DASHBOARD_KEY]
        viewer = await viewer_of(request, dash)
        if viewer is None:
            if _wants_data(request):
                return web.Response(
                    status=401, text="Sign in from Slack first.", headers=SECURITY_HEADERS
                )
            response = redirect("/login")
            response.set_cookie(
                NEXT_COOKIE,
                request.path_qs,
                max_age=900,
                httponly=True,
                samesite="Lax",
                secure=dash.secure_cookies(request),
            )
            return response
        return await handler(request, dash, viewer)

    return route


# --- the list ---------------------------------------------------------------------------


def _filters(request: web.Request) -> dashboard.ListFilters:
    q = request.query

    def enum(kind: Any, raw: str | None) -> Any:
        try:
            return kind(raw) if raw else None
        except ValueError:
            return None

    def text(name: str) -> str | None:
        value = (q.get(name) or "").strip()
        return value[:200] or None

    return dashboard.ListFilters(
        status=enum(RequestStatus, q.get("status")),
        repo=text("repo"),
        requester=text("requester"),
        origin=enum(RequestOrigin, q.get("origin")),
        search=text("q"),
    )


def _query(filters: dashboard.ListFilters, **changes: str | None) -> str:
    """The list URL for these filters with some changed (None drops one)."""
    values: dict[str, str | None] = {
        "status": filters.status.value if filters.status else None,
        "repo": filters.repo,
        "requester": filters.requester,
        "origin": filters.origin.value if filters.origin else None,
        "q": filters.search,
    }
    values.update(changes)
    kept = {k: v for k, v in values.items() if v}
    return "/requests" + (f"?{urlencode(kept)}" if kept else "")


async def list_page(request: web.Request, dash: Dashboard, viewer: Viewer) -> web.StreamResponse:
    filters = _filters(request)
    cursor = request.query.get("cursor") or None
    async with dash.session_factory() as session:
        page = await dashboard.list_requests(session, filters, cursor=cursor)
    template = "_list_live.html" if FRAGMENT_HEADER in request.headers else "list.html"
    return dash.render(
        template,
        request,
        viewer,
        page=page,
        filters=filters,
        cursor=cursor,
        url=lambda **changes: _query(filters, **changes),
        statuses=list(RequestStatus),
        origins=list(RequestOrigin),
    )


# --- one request ------------------------------------------------------------------------


def slack_url(request: FeatureRequest, team_id: str | None) -> str | None:
    """Where the request's Slack thread opens (Slack's app_redirect)."""
    if not (request.slack_channel_id and request.slack_thread_ts):
        return None
    params = {"channel": request.slack_channel_id, "message_ts": request.slack_thread_ts}
    if team_id:
        params = {"team": team_id, **params}
    return "https://slack.com/app_redirect?" + urlencode(params)


def issue_url(request: FeatureRequest) -> str | None:
    if request.issue_url:
        return request.issue_url
    if request.issue_number:
        return f"https://github.com/{request.repo}/issues/{request.issue_number}"
    return None


def _request_context(
    dash: Dashboard,
    viewer: Viewer,
    page: dashboard.RequestPage,
    notice: str | None,
    changes: Changes | None = None,
) -> dict[str, Any]:
    request = page.request
    allowed = rules.may_act(viewer.user_id, request, dash.admins)
    return {
        "r": request,
        "page": page,
        "requester": request.slack_user_name or request.issue_author or request.slack_user_id,
        "slack_url": slack_url(request, viewer.team_id),
        "issue_url": issue_url(request),
        "show_retry": allowed and rules.can_retry(request),
        "show_cancel": allowed and rules.can_cancel(request),
        "notice": notice,
        "csrf": viewer.csrf,
        "changes": changes,
    }


def _latest(request: web.Request) -> int | None:
    return None if request.query.get("all") == "1" else LATEST_STEPS


async def _load(
    dash: Dashboard, request_id: str, after_id: int = 0, latest: int | None = None
) -> dashboard.RequestPage:
    async with dash.session_factory() as session:
        page = await dashboard.request_page(session, request_id, after_id=after_id, latest=latest)
    if page is None:
        raise web.HTTPNotFound(text="No such request.", headers=SECURITY_HEADERS)
    return page


async def request_view(
    request: web.Request,
    dash: Dashboard,
    viewer: Viewer,
    *,
    notice: str | None = None,
    status: int = 200,
) -> web.StreamResponse:
    page = await _load(dash, request.match_info["request_id"], latest=_latest(request))
    changes = await dash.changes.for_request(page.request)
    return dash.render(
        "request.html",
        request,
        viewer,
        status=status,
        **_request_context(dash, viewer, page, notice, changes),
    )


async def request_page(request: web.Request, dash: Dashboard, viewer: Viewer) -> web.StreamResponse:
    return await request_view(request, dash, viewer)


async def request_live(request: web.Request, dash: Dashboard, viewer: Viewer) -> web.StreamResponse:
    """What changed on a request page since message `after`, as HTML pieces in JSON."""
    try:
        after = max(0, int(request.query.get("after", "0")))
    except ValueError:
        after = 0
    # Only a full refresh (after=0) can be large; later updates hold what is new.
    page = await _load(
        dash, request.match_info["request_id"], after, _latest(request) if after == 0 else None
    )
    # The changes section is read again (git) only on a full refresh or when the branch
    # may have moved: a pull request message newer than the page's newest agent step.
    published = any(
        entry.id > after and entry.type in (MessageType.PR_CREATED, MessageType.PR_UPDATED)
        for entry in page.conversation
    )
    fresh_changes = after == 0 or published
    changes = await dash.changes.for_request(page.request) if fresh_changes else None
    context = _request_context(dash, viewer, page, None, changes)
    env = dash.env
    header = env.get_template("_request_header.html").render(**context)
    conversation = env.get_template("_conversation.html").render(**context)
    runs_module: Any = env.get_template("_run.html").make_module(context)
    last_run = page.runs[-1].number if page.runs else None
    runs = [
        {
            "run": run.number,
            "summary": str(runs_module.run_summary(run)),
            "items": "".join(str(runs_module.entry(e)) for e in run.entries),
            "section": str(runs_module.run_section(run, run.number == last_run))
            if run.entries
            else "",
        }
        for run in page.runs
    ]
    return web.json_response(
        {
            "header": header,
            "conversation": conversation,
            "runs": runs,
            "last": page.last_message_id,
            "updated": clock(utcnow()),
            **(
                {"changes": env.get_template("_changes.html").render(**context)}
                if fresh_changes
                else {}
            ),
        },
        headers=SECURITY_HEADERS,
    )


async def _act(
    request: web.Request, dash: Dashboard, viewer: Viewer, action: str
) -> web.StreamResponse:
    form = await request.post()
    if not csrf_matches(viewer, _text(form.get("csrf"))):
        return dash.render(
            "message.html",
            request,
            viewer,
            status=403,
            title="This form has expired",
            message="Reload the page and try again.",
        )
    request_id = request.match_info["request_id"]
    page = await _load(dash, request_id)
    target = page.request
    refusal: str | None = None
    if not rules.may_act(viewer.user_id, target, dash.admins):
        return await request_view(request, dash, viewer, notice=rules.NOT_ALLOWED, status=403)
    if action == "retry" and not rules.can_retry(target):
        refusal = "Only a failed request can be retried."
    elif action == "cancel" and not rules.can_cancel(target):
        refusal = "This request is already finished."
    elif action == "retry":
        refusal = await dash.actions.retry(request_id, viewer.user_id, viewer.name)
    else:
        refusal = await dash.actions.cancel(request_id, viewer.user_id, viewer.name)
    if refusal is not None:
        return await request_view(request, dash, viewer, notice=refusal, status=409)
    return redirect(f"/requests/{request_id}")


async def retry(request: web.Request, dash: Dashboard, viewer: Viewer) -> web.StreamResponse:
    return await _act(request, dash, viewer, "retry")


async def cancel(request: web.Request, dash: Dashboard, viewer: Viewer) -> web.StreamResponse:
    return await _act(request, dash, viewer, "cancel")


# --- stats ------------------------------------------------------------------------------


async def stats_page(request: web.Request, dash: Dashboard, viewer: Viewer) -> web.StreamResponse:
    from bot.web import charts

    try:
        days = int(request.query.get("days", "7"))
    except ValueError:
        days = 7
    if days not in STATS_DAYS:
        days = 7
    async with dash.session_factory() as session:
        stats = await dashboard.stats(session, days)
    return dash.render(
        "stats.html",
        request,
        viewer,
        stats=stats,
        days=days,
        choices=STATS_DAYS,
        charts=charts.build(stats),
        outcome_labels=charts.OUTCOME_LABELS,
    )


# --- events -----------------------------------------------------------------------------


async def events(request: web.Request, dash: Dashboard, viewer: Viewer) -> web.StreamResponse:
    request_id = request.query.get("request") or None
    subscriber = Subscriber(request_id, viewer.session.token_hash, viewer.session.expires_at)
    return await stream(request, dash.hub, subscriber, SECURITY_HEADERS)


# --- sign-in ----------------------------------------------------------------------------


async def login_page(request: web.Request) -> web.StreamResponse:
    """With a token: one button that signs in. Without: how to get a link from Slack."""
    dash = request.app[DASHBOARD_KEY]
    token = request.query.get("token", "")
    if not token:
        if await viewer_of(request, dash) is not None:
            return redirect("/requests")
        return dash.render("signin.html", request, None)
    async with dash.session_factory() as session:
        usable = len(token) <= 128 and await WebSessionRepository(session).login_token_usable(token)
    if not usable:
        return _link_refused(dash, request)
    return dash.render("login.html", request, None, token=token)


def _link_refused(dash: Dashboard, request: web.Request) -> web.Response:
    return dash.render(
        "message.html",
        request,
        None,
        status=400,
        title="This sign-in link can't be used",
        message=(
            "It has expired or was already used. Type /clarity dashboard in Slack for a new one."
        ),
    )


def _next_path(request: web.Request) -> str:
    wanted = request.cookies.get(NEXT_COOKIE, "")
    parts = urlsplit(wanted)
    # Only a path on this site: never a scheme, host or protocol-relative URL.
    if wanted.startswith("/") and not wanted.startswith("//") and not parts.netloc:
        return wanted
    return "/requests"


async def login(request: web.Request) -> web.StreamResponse:
    """Spend the sign-in token and start a session."""
    dash = request.app[DASHBOARD_KEY]
    form = await request.post()
    token = form.get("token")
    if not isinstance(token, str) or not token or len(token) > 128:
        return _link_refused(dash, request)
    session_token = new_token()
    async with dash.session_factory.begin() as session:
        repo = WebSessionRepository(session)
        identity = await repo.spend_login_token(token)
        if identity is not None:
            await repo.start_session(session_token, identity, ttl=dash.session_ttl)
    if identity is None:
        return _link_refused(dash, request)
    response = redirect(_next_path(request))
    response.set_cookie(
        COOKIE,
        session_token,
        max_age=int(dash.session_ttl.total_seconds()),
        path="/",
        httponly=True,
        samesite="Lax",
        secure=dash.secure_cookies(request),
    )
    response.del_cookie(NEXT_COOKIE, path="/")
    log.info("dashboard: %s signed in", identity.slack_user_id)
    return response


async def logout(request: web.Request, dash: Dashboard, viewer: Viewer) -> web.StreamResponse:
    form = await request.post()
    if not csrf_matches(viewer, _text(form.get("csrf"))):
        return dash.render(
            "message.html",
            request,
            viewer,
            status=403,
            title="This form has expired",
            message="Reload the page and try again.",
        )
    async with dash.session_factory.begin() as session:
        await WebSessionRepository(session).end_session(viewer.session.token_hash)
    dash.hub.end_session(viewer.session.token_hash)
    response = redirect("/login")
    response.del_cookie(COOKIE, path="/")
    return response


async def static(request: web.Request) -> web.StreamResponse:
    dash = request.app[DASHBOARD_KEY]
    found = dash.static.get(request.match_info["name"])
    if found is None:
        raise web.HTTPNotFound()
    cache = (
        "public, max-age=31536000, immutable"
        if request.query.get("v") == found.version
        else "no-cache"
    )
    return web.Response(
        body=found.body,
        content_type=found.content_type,
        headers={"Cache-Control": cache, "X-Content-Type-Options": "nosniff"},
    )
