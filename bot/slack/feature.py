"""The Slack feature's long-lived state: credentials, Web API client, scrubber, in-flight work."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.requests.actions import RequestLifecycle
from bot.scrub import Scrubber, truncate
from bot.services import NotConfiguredError, Services
from bot.slack.client import SlackApi
from bot.slack.intake import Intake
from storage.repositories import AppConfigRepository

if TYPE_CHECKING:
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
    from slack_bolt.async_app import AsyncApp

log = logging.getLogger(__name__)

ErrorReporter = Callable[[Exception, dict[str, Any]], Awaitable[None]]


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


class AfterAck:
    """Runs the work a listener does after its ack, bounded, and counts it for draining."""

    # Slack wants its answer within 3 s, so listeners ack and hand the rest here. At most
    # `concurrency` units use the database at once (the pool is finite); once `backlog` units
    # wait, new work runs before the answer instead, so a flood slows its senders down
    # rather than piling acknowledged work up in memory. Only work that changes nothing comes
    # here (answers to reads, opening forms, App Home, error notes): what changes something
    # is a committed job before the ack (bot.slack.intake).

    def __init__(
        self,
        report: ErrorReporter,
        *,
        concurrency: int = 8,
        backlog: int = 2000,
    ) -> None:
        self._report = report
        self._slots = asyncio.Semaphore(concurrency)
        self._backlog = backlog
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def count(self) -> int:
        return self._count

    async def run(self, work: Coroutine[Any, Any, None], body: dict[str, Any]) -> None:
        """Start `work` in the background (or, past the backlog, finish it now)."""
        if self._count >= self._backlog:
            async with self._slots:
                await work
            return
        self._count += 1
        self._idle.clear()
        task = asyncio.create_task(self._background(work, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _background(self, work: Coroutine[Any, Any, None], body: dict[str, Any]) -> None:
        try:
            async with self._slots:
                await work
        except Exception as exc:
            # Past the ack Bolt cannot see it: the same global handler reports it.
            await self._report(exc, body)
        finally:
            self._count -= 1
            if self._count == 0:
                self._idle.set()

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
    """The Slack side of one process: credentials, client, intake, and the lifecycle it calls.

    Made once when the app is wired (bot.app) and handed to every Slack listener and job.
    """

    def __init__(
        self,
        services: Services,
        lifecycle: RequestLifecycle,
        *,
        intake: Intake | None = None,
        credentials: SlackCredentials | None = None,
        progress_interval_s: float = 1.0,
    ) -> None:
        self.services = services
        self.lifecycle = lifecycle
        self.intake = intake or Intake(services)
        self.scrub = Scrubber(services.settings.known_secrets())
        self.error_reporter: ErrorReporter | None = None
        self.inflight = AfterAck(self._report)
        self.user_names = UserNames()
        self.progress_interval_s = progress_interval_s
        self.bolt: AsyncApp | None = None
        self.socket: AsyncSocketModeHandler | None = None
        self._credentials = credentials
        self._api: SlackApi | None = None
        self._lock = asyncio.Lock()

    async def _report(self, error: Exception, body: dict[str, Any]) -> None:
        # Set by bot.slack.errors when the listeners are registered (it renders the report).
        if self.error_reporter is not None:
            await self.error_reporter(error, body)
        else:
            log.error("Slack work failed after the ack", exc_info=error)

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

    def clean(self, text: str, limit: int) -> str:
        """Text safe to show in Slack: known secrets masked, cut to `limit`."""
        return truncate(self.scrub(text), limit)
