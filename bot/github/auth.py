"""GitHub App credentials and installation tokens.

The JWT → installation-token exchange goes through PyGithub, which is synchronous, so it runs
in a worker thread. Tokens are cached encrypted in app_config (when the stored config is for
the same installation) and in memory, and refreshed five minutes before they expire; an
advisory lock makes replicas that need a fresh token at the same moment fetch it once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from github import Auth, GithubException, GithubIntegration
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services import NotConfiguredError, Services
from storage import locks
from storage.models import ConfigType, utcnow
from storage.repositories import AppConfigRepository
from storage.schemas import GitHubConfig

log = logging.getLogger(__name__)

REFRESH_MARGIN = dt.timedelta(minutes=5)
# The advisory lock replicas take to refresh the installation token one at a time.
_REFRESH_LOCK = "clarity:github-installation-refresh"
HTTP_TIMEOUT_S = 15


@dataclass(frozen=True)
class AppCredentials:
    """What is needed to act as the App on one installation."""

    app_id: str
    private_key: str = field(repr=False)
    installation_id: str
    stored_installation_id: str | None


@dataclass(frozen=True)
class InstallationToken:
    """An installation access token and when it expires."""

    token: str = field(repr=False)
    expires_at: dt.datetime

    def fresh(self, now: dt.datetime | None = None) -> bool:
        """Still valid for longer than the refresh margin."""
        return self.expires_at - (now or utcnow()) > REFRESH_MARGIN


def read_private_key(value: str) -> str:
    """PEM text as given, or the contents of the file it names; `\\n` escapes unfolded."""
    if "-----BEGIN" in value:
        return value.replace("\\n", "\n")
    path = Path(value).expanduser()
    try:
        return path.read_text()
    except OSError as exc:
        raise NotConfiguredError(
            f"GITHUB_PRIVATE_KEY is neither PEM text nor a readable file: {exc.strerror}"
        ) from exc


def env_configured(services: Services) -> bool:
    """Whether the environment alone names a complete App installation."""
    s = services.settings
    return bool(s.github_app_id and s.secret("github_private_key") and s.github_installation_id)


async def stored_config(services: Services, session: AsyncSession) -> GitHubConfig | None:
    """The GitHub config in app_config, decrypted; None when absent or unreadable here."""
    if services.cipher is None:
        return None
    repo = AppConfigRepository(session, services.cipher)
    if await repo.get_raw(ConfigType.GITHUB) is None:
        return None
    return await repo.get_github_config()


async def credentials(services: Services, session: AsyncSession) -> AppCredentials | None:
    """The App credentials: each environment variable wins over the stored value."""
    s = services.settings
    raw = None
    if services.cipher is not None:
        raw = await AppConfigRepository(session, services.cipher).get_raw(ConfigType.GITHUB)
    stored_installation = str(raw["installationId"]) if raw and raw.get("installationId") else None
    if env_configured(services):
        return AppCredentials(
            app_id=str(s.github_app_id),
            private_key=read_private_key(s.secret("github_private_key") or ""),
            installation_id=str(s.github_installation_id),
            stored_installation_id=stored_installation,
        )
    stored = None if raw is None else await stored_config(services, session)
    if stored is None:
        return None
    return AppCredentials(
        app_id=s.github_app_id or stored.app_id,
        private_key=read_private_key(s.secret("github_private_key") or stored.private_key),
        installation_id=s.github_installation_id or stored.installation_id,
        stored_installation_id=stored.installation_id,
    )


async def configured(services: Services, session: AsyncSession) -> bool:
    """Whether GitHub App credentials are available (environment or app_config)."""
    if env_configured(services):
        return True
    if services.cipher is None:
        return False
    repo = AppConfigRepository(session, services.cipher)
    return await repo.get_raw(ConfigType.GITHUB) is not None


def _exchange(creds: AppCredentials, base_url: str) -> InstallationToken:
    """JWT → installation token (blocking; run in a thread)."""
    integration = GithubIntegration(
        auth=Auth.AppAuth(creds.app_id, creds.private_key),
        base_url=base_url,
        timeout=HTTP_TIMEOUT_S,
        retry=None,
        seconds_between_requests=None,
        seconds_between_writes=None,
    )
    try:
        grant = integration.get_access_token(int(creds.installation_id))
    finally:
        integration.close()
    expires = grant.expires_at
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=dt.UTC)
    return InstallationToken(grant.token, expires)


class GitHubApp:
    """Installation tokens for this process: memory first, then app_config, then GitHub."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._cached: tuple[str, InstallationToken] | None = None
        self._lock = asyncio.Lock()

    async def token(self) -> InstallationToken:
        """A token valid for at least five more minutes."""
        async with self._lock:
            async with self.services.session_factory.begin() as session:
                creds = await credentials(self.services, session)
                if creds is None:
                    raise NotConfiguredError(
                        "GitHub App is not configured: set GITHUB_APP_ID, GITHUB_PRIVATE_KEY "
                        "and GITHUB_INSTALLATION_ID, or `clarity config set github`"
                    )
                if self._cached is not None:
                    installation, cached = self._cached
                    if installation == creds.installation_id and cached.fresh():
                        return cached
                # Replicas queue here; the first refreshes, the others find its token stored.
                await locks.hold(session, _REFRESH_LOCK)
                token = await self._stored_token(session, creds)
                if token is None:
                    token = await self._fetch(creds)
                    if creds.stored_installation_id == creds.installation_id:
                        assert self.services.cipher is not None
                        await AppConfigRepository(
                            session, self.services.cipher
                        ).update_github_token(token.token, token.expires_at.isoformat())
            self._cached = (creds.installation_id, token)
            return token

    async def _stored_token(
        self, session: AsyncSession, creds: AppCredentials
    ) -> InstallationToken | None:
        if self.services.cipher is None or creds.stored_installation_id != creds.installation_id:
            return None
        stored = await AppConfigRepository(session, self.services.cipher).get_github_config()
        if stored is None or not stored.installation_token or not stored.token_expires_at:
            return None
        try:
            expires = dt.datetime.fromisoformat(stored.token_expires_at.replace("Z", "+00:00"))
        except ValueError:
            return None
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=dt.UTC)
        token = InstallationToken(stored.installation_token, expires)
        return token if token.fresh() else None

    async def _fetch(self, creds: AppCredentials) -> InstallationToken:
        metrics = self.services.metrics.github_calls
        try:
            token = await asyncio.to_thread(_exchange, creds, self.services.settings.github_api_url)
        except GithubException:
            metrics.labels("installation_token", "error").inc()
            raise
        metrics.labels("installation_token", "ok").inc()
        log.info("GitHub installation token refreshed (expires %s)", token.expires_at.isoformat())
        return token

    async def scoped_token(
        self, repositories: list[str], permissions: dict[str, str]
    ) -> InstallationToken:
        """A fresh installation token limited to `repositories` (names in the installation's
        account, without the owner) and `permissions` (e.g. {"contents": "read"}).

        For a sandbox: never cached, never stored, never this process's own token. The REST
        call `POST /app/installations/{id}/access_tokens` with a body (PyGithub's
        get_access_token takes no repositories).
        """
        async with self.services.session_factory() as session:
            creds = await credentials(self.services, session)
        if creds is None:
            raise NotConfiguredError(
                "GitHub App is not configured: set GITHUB_APP_ID, GITHUB_PRIVATE_KEY "
                "and GITHUB_INSTALLATION_ID, or `clarity config set github`"
            )
        jwt = Auth.AppAuth(creds.app_id, creds.private_key).token
        url = (
            f"{self.services.settings.github_api_url}/app/installations/"
            f"{creds.installation_id}/access_tokens"
        )
        metrics = self.services.metrics.github_calls
        async with self.services.http_session().post(
            url,
            json={"repositories": repositories, "permissions": permissions},
            headers={
                "Authorization": f"Bearer {jwt}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
            },
            timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S),
        ) as response:
            data = await response.json(content_type=None)
            if response.status != 201 or not isinstance(data, dict) or "token" not in data:
                metrics.labels("scoped_token", "error").inc()
                raise GithubException(response.status, data, dict(response.headers))
        metrics.labels("scoped_token", "ok").inc()
        expires = dt.datetime.fromisoformat(str(data["expires_at"]).replace("Z", "+00:00"))
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=dt.UTC)
        return InstallationToken(str(data["token"]), expires)

    def cached_token(self) -> str | None:
        """The token this process holds, if any (to mask it in outgoing text)."""
        return self._cached[1].token if self._cached is not None else None

    def forget(self) -> None:
        """Drop the in-memory token (e.g. after GitHub said 401)."""
        self._cached = None


async def webhook_secret(services: Services, session: AsyncSession) -> str | None:
    """GITHUB_WEBHOOK_SECRET, else the stored one; None when neither is set."""
    from_env = services.settings.secret("github_webhook_secret")
    if from_env:
        return from_env
    stored = await stored_config(services, session)
    return stored.webhook_secret if stored is not None and stored.webhook_secret else None
