"""Bolt AsyncApp inside Clarity's aiohttp server: POST /slack/events, or Socket Mode.

The Bolt app is built at server start-up, once credentials are known (environment first,
then the stored `slack` config). Without them the server still runs, the log says what is
missing, and /slack/events answers 503.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp

from bot.slack import buttons, commands, home, threads
from bot.slack.errors import report_error
from bot.slack.feature import SlackCredentials, SlackFeature

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
SHUTDOWN_DRAIN_S = 25.0


class _ClientGivenFilter(logging.Filter):
    """Drops Bolt's warning that the token is unused because a client was given.

    Bolt reads SLACK_BOT_TOKEN from the environment itself and warns on every start when a
    client is passed too; ours is that token's client, built on the shared HTTP session.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "`token` will be unused" not in record.getMessage()


def _bolt_logger() -> logging.Logger:
    logger = logging.getLogger("clarity.slack.bolt")
    if not any(isinstance(f, _ClientGivenFilter) for f in logger.filters):
        logger.addFilter(_ClientGivenFilter())
    return logger


def build_bolt(feature: SlackFeature, credentials: SlackCredentials) -> AsyncApp:
    """The Bolt app with every listener and the one error handler."""
    bolt = AsyncApp(
        client=feature.web_client(credentials.bot_token or ""),
        signing_secret=credentials.signing_secret or "",
        name="clarity",
        logger=_bolt_logger(),
        # Listeners run before Bolt answers (an event too is acked only once its listener
        # returns), so what changes something is a committed job before Slack hears 200;
        # read-only work goes to `feature.inflight` after the ack (no polling for the ack).
        process_before_response=True,
    )
    for register in (commands.register, threads.register, buttons.register, home.register):
        register(bolt, feature)

    async def on_error(error: Exception, body: dict[str, Any]) -> None:
        await report_error(feature, error, body)

    bolt.error(on_error)
    # Work after the ack is reported the same way.
    feature.error_reporter = on_error
    return bolt


class SlackServer:
    """The Slack side of `clarity serve`: start-up, the HTTP route, shutdown."""

    def __init__(self, feature: SlackFeature) -> None:
        self.feature = feature
        self.problem: str | None = None
        self._socket_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Read credentials, build Bolt, connect Socket Mode if asked to."""
        try:
            credentials = await self.feature.credentials()
        except Exception:
            self.problem = "the stored Slack config could not be read (see the log)"
            log.exception("Slack: reading the stored Slack config failed; will retry on use")
            return
        missing = credentials.missing()
        if missing:
            self.problem = (
                f"missing {', '.join(missing)} (environment, or `clarity config set slack`)"
            )
            log.warning("Slack is not configured: %s; %s answers 503", self.problem, EVENTS_PATH)
            return
        self.problem = None
        bolt = build_bolt(self.feature, credentials)
        self.feature.bolt = bolt
        if credentials.socket_mode:
            from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

            self.feature.socket = AsyncSocketModeHandler(
                bolt, app_token=credentials.app_token, web_client=bolt.client
            )
            self._socket_task = asyncio.create_task(self._connect_socket())
            log.info("Slack: Socket Mode (credentials from %s)", credentials.source)
        else:
            log.info(
                "Slack: HTTP mode at POST %s (credentials from %s)", EVENTS_PATH, credentials.source
            )

    async def _connect_socket(self) -> None:
        socket = self.feature.socket
        assert socket is not None
        delay = 1.0
        while True:
            try:
                await socket.connect_async()  # type: ignore[no-untyped-call]
                log.info("Slack: Socket Mode connected")
                return
            except Exception:
                log.exception("Slack: Socket Mode connection failed; retrying in %.0fs", delay)
                self.feature.services.metrics.errors.labels("slack_socket").inc()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)

    async def bolt(self) -> AsyncApp | None:
        """The Bolt app; a start-up that could not read the config is tried again."""
        if self.feature.bolt is None and self.problem and "could not be read" in self.problem:
            await self.start()
        return self.feature.bolt

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """POST /slack/events: Bolt verifies the signature, acks, and dispatches."""
        bolt = await self.bolt()
        credentials = self.feature.loaded_credentials
        if bolt is None or (credentials is not None and not credentials.signing_secret):
            problem = self.problem or "HTTP mode needs SLACK_SIGNING_SECRET"
            return web.json_response(
                {"error": {"code": "slack_not_configured", "message": f"Slack: {problem}"}},
                status=503,
            )
        response = await bolt.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(response)

    async def stop(self) -> None:
        """Stop taking Slack work and let what was acked finish."""
        if self._socket_task is not None:
            self._socket_task.cancel()
            await asyncio.gather(self._socket_task, return_exceptions=True)
        if self.feature.socket is not None:
            await self.feature.socket.close_async()  # type: ignore[no-untyped-call]
        if not await self.feature.inflight.wait_idle(SHUTDOWN_DRAIN_S):
            log.warning(
                "Slack: %d listener(s) still running at shutdown", self.feature.inflight.count
            )
