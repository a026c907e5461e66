"""Dashboard sign-in through Slack: single-use links, session cookies, CSRF tokens.

`/clarity dashboard` (or the App Home button) calls `issue_login_link`; the person gets a
private link to `/login?token=…`, a page with one button, so a link scanner that fetches
the URL cannot spend the token. Pressing it (POST /login) spends the token and starts a
session kept in PostgreSQL; the cookie holds the session token, the table its SHA-256.
The CSRF token of a session is derived from its token, so it needs no storage and dies
with the session.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import urlencode

from sqlalchemy.ext.asyncio import AsyncSession

from storage.repositories.web_sessions import Identity, SessionInfo, WebSessionRepository

COOKIE = "clarity_session"
NEXT_COOKIE = "clarity_next"
DEFAULT_SESSION_TTL_S = 7 * 24 * 3600


def new_token() -> str:
    """256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def csrf_token(session_token: str) -> str:
    """The CSRF token bound to a session (an HMAC of the session token)."""
    digest = hmac.new(session_token.encode(), b"clarity-dashboard-csrf", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


async def issue_login_link(
    session: AsyncSession,
    *,
    slack_user_id: str,
    user_name: str,
    team_id: str | None,
    public_url: str,
) -> str:
    """Store a single-use sign-in token (valid 10 minutes); the link to send privately.

    Runs in the caller's transaction: the link works once that commits.
    """
    token = new_token()
    await WebSessionRepository(session).add_login_token(
        token, Identity(slack_user_id=slack_user_id, user_name=user_name, team_id=team_id)
    )
    return f"{public_url.rstrip('/')}/login?{urlencode({'token': token})}"


@dataclass(frozen=True)
class Viewer:
    """The signed-in person of one HTTP request."""

    session: SessionInfo
    csrf: str

    @property
    def user_id(self) -> str:
        return self.session.identity.slack_user_id

    @property
    def name(self) -> str:
        return self.session.identity.user_name

    @property
    def team_id(self) -> str | None:
        return self.session.identity.team_id


def csrf_matches(viewer: Viewer, sent: str | None) -> bool:
    """Whether a form carried this session's CSRF token."""
    return bool(sent) and hmac.compare_digest(viewer.csrf, str(sent))


def session_ttl(seconds: int) -> dt.timedelta:
    return dt.timedelta(seconds=max(60, seconds))
