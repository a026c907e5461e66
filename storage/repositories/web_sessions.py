"""Dashboard sign-in: single-use login tokens and the sessions they start.

Only SHA-256 hashes of tokens are stored. A login token is spent by one UPDATE that also
checks it is unused and unexpired, so two presses of the sign-in button (or two replicas)
start at most one session.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.errors import DB_ERRORS, InsertError, QueryError, UpdateError, translate
from storage.models import LoginToken, WebSession, utcnow

LOGIN_TOKEN_TTL = dt.timedelta(minutes=10)
# Spent or expired rows are kept this long (for support questions), then deleted.
KEEP_EXPIRED = dt.timedelta(days=1)


def token_hash(token: str) -> str:
    """The hex SHA-256 of a token: what the tables hold instead of the token."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Identity:
    """Who a token or session belongs to."""

    slack_user_id: str
    user_name: str
    team_id: str | None


@dataclass(frozen=True)
class SessionInfo:
    """A live session: who, and until when."""

    token_hash: str
    identity: Identity
    expires_at: dt.datetime


class WebSessionRepository:
    """Login tokens and sessions of the web dashboard."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_login_token(
        self, token: str, identity: Identity, *, ttl: dt.timedelta = LOGIN_TOKEN_TTL
    ) -> dt.datetime:
        """Store a new login token's hash; returns when it expires."""
        expires = utcnow() + ttl
        self.session.add(
            LoginToken(
                token_hash=token_hash(token),
                slack_user_id=identity.slack_user_id,
                user_name=identity.user_name,
                team_id=identity.team_id,
                expires_at=expires,
            )
        )
        try:
            await self.session.flush()
        except DB_ERRORS as exc:
            raise translate(exc, InsertError, "adding login token") from exc
        return expires

    async def login_token_usable(self, token: str) -> bool:
        """Whether a login token exists, is unused and unexpired (without spending it)."""
        try:
            found = await self.session.scalar(
                select(LoginToken.token_hash).where(
                    LoginToken.token_hash == token_hash(token),
                    LoginToken.used_at.is_(None),
                    LoginToken.expires_at > utcnow(),
                )
            )
        except DB_ERRORS as exc:
            raise translate(exc, QueryError, "reading login token") from exc
        return found is not None

    async def spend_login_token(self, token: str) -> Identity | None:
        """Mark the token used and return whose it was; None when unknown, used or expired."""
        now = utcnow()
        stmt = (
            update(LoginToken)
            .where(
                LoginToken.token_hash == token_hash(token),
                LoginToken.used_at.is_(None),
                LoginToken.expires_at > now,
            )
            .values(used_at=now)
            .returning(LoginToken.slack_user_id, LoginToken.user_name, LoginToken.team_id)
        )
        try:
            row = (await self.session.execute(stmt)).first()
        except DB_ERRORS as exc:
            raise translate(exc, UpdateError, "spending login token") from exc
        return None if row is None else Identity(row[0], row[1], row[2])

    async def start_session(
        self, session_token: str, identity: Identity, *, ttl: dt.timedelta
    ) -> SessionInfo:
        """Store a new session under the hash of its cookie value."""
        info = SessionInfo(token_hash(session_token), identity, utcnow() + ttl)
        self.session.add(
            WebSession(
                token_hash=info.token_hash,
                slack_user_id=identity.slack_user_id,
                user_name=identity.user_name,
                team_id=identity.team_id,
                expires_at=info.expires_at,
            )
        )
        try:
            await self.session.flush()
        except DB_ERRORS as exc:
            raise translate(exc, InsertError, "starting web session") from exc
        return info

    async def find_session(self, session_token: str) -> SessionInfo | None:
        """The live session for a cookie value, or None (unknown or expired)."""
        hashed = token_hash(session_token)
        try:
            row = (
                await self.session.execute(
                    select(
                        WebSession.slack_user_id,
                        WebSession.user_name,
                        WebSession.team_id,
                        WebSession.expires_at,
                    ).where(WebSession.token_hash == hashed, WebSession.expires_at > utcnow())
                )
            ).first()
        except DB_ERRORS as exc:
            raise translate(exc, QueryError, "reading web session") from exc
        if row is None:
            return None
        return SessionInfo(hashed, Identity(row[0], row[1], row[2]), row[3])

    async def end_session(self, hashed: str) -> None:
        """Delete a session by its hash (logout)."""
        try:
            await self.session.execute(delete(WebSession).where(WebSession.token_hash == hashed))
        except DB_ERRORS as exc:
            raise translate(exc, UpdateError, "ending web session") from exc

    async def purge_expired(self) -> None:
        """Delete tokens and sessions that ended more than a day ago."""
        cutoff = utcnow() - KEEP_EXPIRED
        try:
            await self.session.execute(delete(LoginToken).where(LoginToken.expires_at < cutoff))
            await self.session.execute(delete(WebSession).where(WebSession.expires_at < cutoff))
        except DB_ERRORS as exc:
            raise translate(exc, UpdateError, "purging expired web sessions") from exc
