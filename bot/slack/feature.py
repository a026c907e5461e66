"""The Slack feature's long-lived state: credentials, Web API client, scrubber, in-flight work."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.scrub import Scrubber, truncate
from bot.services import NotConfiguredError, Services
from bot.slack.client import SlackApi
from storage.repositories import AppConfigRepository

if TYPE_CHECKING:
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
    from slack_bolt.async_app import AsyncApp

log = logging.getLogger(__name__)

EXTRAS_KEY = "slack"

ListenerFn = Callable[..., Awaitable[None]]
_REPORT_PENDING = "_clarity_report_pending"


@dataclass(frozen=True)
class SlackCredentials:
    """What Clarity needs to talk to Slack, and where each value came from."""

    bot_token: str | None = None
    signing_secret: str | None = None
    app_token: str | None = None
    source: str = "environment"

    @property
    def socket_mode(self) -> bool:
        return bool(self.app_token)

    def missing(self) -> list[str]:
        """Names of the settings still needed for the chosen mode (empty when complete)."""
        needed = {"SLACK_BOT_TOKEN": self.bot_token}
        if self.socket_mode:
            needed["SLACK_APP_TOKEN"] = self.app_token
        else:
            needed["SLACK_SIGNING_SECRET"] = self.signing_secret
        return [name for name, value in needed.items() if not value]


class InFlight:
    """Counts listener work still running after its ack, so shutdown and tests can wait."""

    def __init__(self) -> None:
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def count(self) -> int:
        return self._count

    def enter(self) -> None:
        self._count += 1
        self._idle.clear()

    def exit(self) -> None:
        self._count -= 1
        if self._count <= 0:
            self._count = 0
            self._idle.set()

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Mark one unit of work as running for the duration of the block."""
        self.enter()
        try:
            yield
        finally:
            self.exit()

    async def middleware(self, next: Callable[[], Awaitable[None]]) -> None:
        """Bolt listener middleware: counts the work before the ack is sent, so the HTTP
        answer never races ahead of it (Bolt runs the listener in a task of its own)."""
        self.enter()
        await next()

    def tracked(self, listener: ListenerFn) -> ListenerFn:
        """The listener, ending the unit of work `middleware` started."""

        @functools.wraps(listener)
        async def run(**kwargs: Any) -> None:
            try:
                await listener(**kwargs)
            except Exception as exc:
                # Bolt passes it to the error handler next, which ends the unit of work
                # (`exit_after`) once the user has been told.
                exc.__dict__[_REPORT_PENDING] = True
                raise
            except BaseException:
                self.exit()
                raise
            else:
                self.exit()

        return run

    def exit_after(self, error: BaseException) -> None:
        """End the unit of work of a listener whose failure has now been reported."""
        if error.__dict__.pop(_REPORT_PENDING, False):
            self.exit()

    async def wait_idle(self, timeout_s: float = 30.0) -> bool:
        """Wait until no work is running; False if the timeout came first."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True


class UserNames:
    """A small LRU of Slack user id → display name (users.info is rate limited)."""

    def __init__(self, size: int = 2048) -> None:
        self._size = size
        self._names: OrderedDict[str, str] = OrderedDict()

    def get(self, user_id: str) -> str | None:
        name = self._names.get(user_id)
        if name is not None:
            self._names.move_to_end(user_id)
        return name

    def put(self, user_id: str, name: str) -> None:
        self._names[user_id] = name
        self._names.move_to_end(user_id)
        while len(self._names) > self._size:
            self._names.popitem(last=False)


class SlackFeature:
    """One per process: made on first use from Services, kept in `services.extras`."""

    def __init__(
        self,
        services: Services,
        *,
        credentials: SlackCredentials | None = None,
        progress_interval_s: float = 1.0,
    ) -> None:
        self.services = services
        self.scrub = Scrubber(services.settings.known_secrets())
        self.inflight = InFlight()
        self.user_names = UserNames()
        self.progress_interval_s = progress_interval_s
        self.bolt: AsyncApp | None = None
        self.socket: AsyncSocketModeHandler | None = None
        self._credentials = credentials
        self._api: SlackApi | None = None
        self._lock = asyncio.Lock()

    @property
    def loaded_credentials(self) -> SlackCredentials | None:
        """The credentials if already read, without reading them."""
        return self._credentials

    @property
    def admins(self) -> frozenset[str]:
        return self.services.settings.split(self.services.settings.clarity_admin_user_ids)

    async def credentials(self) -> SlackCredentials:
        """Environment first, then the stored `slack` config; read once."""
        if self._credentials is not None:
            return self._credentials
        async with self._lock:
            if self._credentials is None:
                self._credentials = await self._load_credentials()
        return self._credentials

    async def _load_credentials(self) -> SlackCredentials:
        settings = self.services.settings
        env = SlackCredentials(
            bot_token=settings.secret("slack_bot_token"),
            signing_secret=settings.secret("slack_signing_secret"),
            app_token=settings.secret("slack_app_token"),
        )
        if not env.missing() or self.services.cipher is None:
            return env
        async with self.services.session_factory() as session:
            stored = await AppConfigRepository(session, self.services.cipher).get_slack_config()
        if stored is None:
            return env
        return SlackCredentials(
            bot_token=env.bot_token or stored.bot_token,
            signing_secret=env.signing_secret or stored.signing_secret,
            app_token=env.app_token,
            source="environment and stored config" if env.bot_token else "stored config",
        )

    def web_client(self, token: str) -> AsyncWebClient:
        """The Slack Web API client (Bolt's too), on the shared HTTP session."""
        return AsyncWebClient(
            token=token,
            base_url=self.services.settings.slack_api_url,
            session=self.services.http_session(),
            # Retries are the job queue's business (Retry-After, backoff), not the client's.
            retry_handlers=[],
            logger=logging.getLogger("slack_sdk.web"),
        )

    async def api(self) -> SlackApi:
        """The Web API wrapper, or NotConfiguredError naming what is missing."""
        if self._api is None:
            creds = await self.credentials()
            if not creds.bot_token:
                raise NotConfiguredError(
                    "SLACK_BOT_TOKEN is not set and no Slack config is stored "
                    "(`clarity config set slack`)"
                )
            self._api = SlackApi(
                self.web_client(creds.bot_token), self.services.metrics, self.services.http_session
            )
        return self._api

    def use_api(self, api: SlackApi) -> None:
        """Share one client between Bolt and the jobs of this process."""
        self._api = api

    def clean(self, text: str, limit: int) -> str:
        """Text safe to show in Slack: known secrets masked, cut to `limit`."""
        return truncate(self.scrub(text), limit)


def feature(services: Services) -> SlackFeature:
    """This process's Slack feature, made on first use."""
    existing = services.extras.get(EXTRAS_KEY)
    if isinstance(existing, SlackFeature):
        return existing
    made = SlackFeature(services)
    services.extras[EXTRAS_KEY] = made
    return made
