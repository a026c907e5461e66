"""The simulator as one object, mounted on an aiohttp app (`setup`) or served on its own
(`SimulatorServer`).

Routes, under the prefix (default `/_sim`):
  GET  /                     the channel page        GET /home      App Home
  GET  /events               Server-Sent Events      POST /ui/<what> what the person does
  GET  /ui/thread, /ui/pane  fragments              GET /archives/<C>/<p…>  permalinks
  *    /api/<method>         Slack's Web API (SLACK_API_URL = <base>/api/)
  POST /response/<token>     response URLs           GET /socket    Socket Mode WebSocket
  GET  /static/…             the page's script and styles
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Self

from aiohttp import web

from bot.simulator.delivery import ACK_TIMEOUT_S, RETRY_DELAYS_S, Delivery, SocketSend
from bot.simulator.interactions import Interactions
from bot.simulator.page import STATIC_DIR, Page
from bot.simulator.webapi import Call, WebApi
from bot.simulator.workspace import JSON, TRIGGER_TTL_S, Workspace

log = logging.getLogger(__name__)

PREFIX = "/_sim"
EVENTS_PATH = "/slack/events"


def is_enabled(value: str | None) -> bool:
    """CLARITY_SIMULATOR's value: on only when set to 1 / true / yes / on."""
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


class Simulator:
    """A Slack workspace double: Web API, deliveries to the app, and the page."""

    def __init__(
        self,
        *,
        target_url: str | None = None,
        signing_secret: str = "",
        bot_token: str | None = None,
        app_token: str | None = None,
        public_url: str | None = None,
        prefix: str = PREFIX,
        commands: Sequence[str] = ("/clarity",),
        ack_timeout_s: float = ACK_TIMEOUT_S,
        retry_delays_s: tuple[float, ...] = RETRY_DELAYS_S,
        trigger_ttl_s: float = TRIGGER_TTL_S,
        lenient: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # target_url: the app's Request URL; a path ("/slack/events", the default) means the
        # server the simulator is mounted on. public_url: this server's origin as the app
        # reaches it, if not the address a request arrived on.
        self.prefix = prefix.rstrip("/")
        self._target = target_url or EVENTS_PATH
        self._origin = public_url.rstrip("/") if public_url else None
        self.workspace = Workspace(lenient=lenient, trigger_ttl_s=trigger_ttl_s, clock=clock)
        self.api = WebApi(
            self.workspace, bot_token=bot_token, app_token=app_token, base_url=self.base_url
        )
        self.delivery = Delivery(
            target_url=self.target_url,
            signing_secret=signing_secret,
            socket=self._socket,
            ack_timeout_s=ack_timeout_s,
            retry_delays_s=retry_delays_s,
        )
        self.people = Interactions(self.workspace, self.api, self.delivery, commands=commands)
        self.page = Page(self.workspace, self.people, base=self.prefix)

    # --- addresses ------------------------------------------------------------------------

    @property
    def origin(self) -> str | None:
        return self._origin

    def learn_origin(self, origin: str) -> None:
        """Where this server is reached (the first request tells, unless configured)."""
        if self._origin is None:
            self._origin = origin.rstrip("/")

    def base_url(self) -> str:
        """The simulator's absolute base URL (`http://host:port/_sim`)."""
        return f"{self._origin or 'http://127.0.0.1'}{self.prefix}"

    @property
    def api_url(self) -> str:
        """What SLACK_API_URL should be."""
        return f"{self.base_url()}/api/"

    def set_target(self, target_url: str) -> None:
        """Point deliveries at another Request URL (an app started after the simulator)."""
        self._target = target_url

    def target_url(self) -> str | None:
        if self._target.startswith("/"):
            return f"{self._origin}{self._target}" if self._origin else None
        return self._target

    def _socket(self) -> SocketSend | None:
        return self.api.send_envelope if self.api.socket_connected else None

    # --- the aiohttp side -----------------------------------------------------------------

    def app(self) -> web.Application:
        """The simulator's routes as an aiohttp application, to mount under the prefix."""

        @web.middleware
        async def learn(request: web.Request, handler: Any) -> web.StreamResponse:
            if self._origin is None:
                self.learn_origin(_local_origin(request))
            response: web.StreamResponse = await handler(request)
            return response

        sub = web.Application(middlewares=[learn])
        sub.router.add_get("/", self.page.channel_page)
        sub.router.add_get("/home", self.page.home_page)
        sub.router.add_get("/events", self.page.events)
        sub.router.add_get("/ui/thread", self.page.thread_fragment)
        sub.router.add_get("/ui/pane", self.page.pane_fragment)
        sub.router.add_post("/ui/{what}", self.page.ui)
        sub.router.add_get("/archives/{channel}/{p}", self.page.archives)
        sub.router.add_route("POST", "/api/{method}", self.api.handle)
        sub.router.add_route("GET", "/api/{method}", self.api.handle)
        sub.router.add_post("/response/{token}", self.api.handle_response)
        sub.router.add_get("/socket", self.api.handle_socket)
        sub.router.add_static("/static/", STATIC_DIR)

        async def on_shutdown(_: web.Application) -> None:
            self.page.close()
            await self.api.close_sockets()

        async def on_cleanup(_: web.Application) -> None:
            await self.shutdown()

        sub.on_shutdown.append(on_shutdown)
        sub.on_cleanup.append(on_cleanup)
        return sub

    async def shutdown(self) -> None:
        """Stop background deliveries and close the simulator's HTTP client."""
        self.page.close()
        await self.delivery.close()

    async def wait_idle(self, timeout_s: float = 10.0) -> bool:
        """Wait until every background delivery (events and their retries) is done."""
        return await self.delivery.wait_idle(timeout_s)

    # --- the recording fake's interface ---------------------------------------------------

    @property
    def log(self) -> list[Call]:
        return self.api.log

    @property
    def responses(self) -> list[Call]:
        return self.api.responses

    @property
    def messages(self) -> dict[str, list[JSON]]:
        """Messages posted with chat.postMessage, per channel, as posted (oldest first)."""
        return self.api.posted

    @property
    def socket_envelopes(self) -> list[JSON]:
        return self.api.socket_envelopes

    def calls(self, method: str | None = None) -> list[Call]:
        return self.api.calls(method)

    def fail_next(
        self,
        method: str,
        *,
        status: int = 429,
        retry_after: float | None = 1,
        error: str | None = None,
        times: int = 1,
    ) -> None:
        self.api.fail_next(method, status=status, retry_after=retry_after, error=error, times=times)

    def lose_next(self, method: str, *, times: int = 1) -> None:
        self.api.lose_next(method, times=times)

    def clear(self) -> None:
        self.api.clear()

    def add_user(self, user_id: str, name: str) -> None:
        """A person in the workspace (a member of #general)."""
        self.workspace.add_user(user_id, name)

    def response_url(self, token: str | None = None) -> str:
        return self.api.response_url(token)

    async def send_envelope(self, kind: str, payload: JSON, *, timeout_s: float = 5.0) -> JSON:
        return await self.api.send_envelope(kind, payload, timeout_s=timeout_s)


SIMULATOR_KEY = web.AppKey("slack_simulator", Simulator)


def _local_origin(request: web.Request) -> str:
    """This server's own address as seen from this machine (0.0.0.0 → 127.0.0.1)."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if not sockname:
        return f"{request.scheme}://{request.host}"
    host, port = str(sockname[0]), int(sockname[1])
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"{request.scheme}://{host}:{port}"
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    shown = f"[{address}]" if address.version == 6 else str(address)
    return f"http://{shown}:{port}"


def setup(
    app: web.Application,
    *,
    target_url: str | None = None,
    signing_secret: str,
    bot_token: str,
    prefix: str = PREFIX,
    **options: Any,
) -> Simulator:
    """Mount the simulator on `app` under `prefix` (Clarity: only under `clarity demo` or
    CLARITY_SIMULATOR=1). `target_url` defaults to this server's /slack/events."""
    simulator = Simulator(
        target_url=target_url,
        signing_secret=signing_secret,
        bot_token=bot_token,
        prefix=prefix,
        **options,
    )
    app.add_subapp(simulator.prefix, simulator.app())
    app[SIMULATOR_KEY] = simulator
    log.warning(
        "SLACK SIMULATOR IS ON at %s/ — a fake Slack workspace for demos and tests: anyone who "
        "can reach this server can act as any of its people. Never enable it in production.",
        simulator.prefix,
    )
    return simulator


class SimulatorServer(Simulator):
    """The simulator on its own server on 127.0.0.1 (tests, tools)::

    async with SimulatorServer(target_url=app_url, signing_secret=secret) as sim:
        sim.api_url            # SLACK_API_URL for the app
        await sim.people.say(YOU, DEMO_CHANNEL, "/clarity help")
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, **options: Any) -> None:
        super().__init__(**options)
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> Self:
        root = web.Application()
        root.add_subapp(self.prefix, self.app())
        simulator: Simulator = self
        root[SIMULATOR_KEY] = simulator
        self._runner = web.AppRunner(root, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        self.learn_origin(f"http://{self.host}:{self.port}")
        return self

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()  # runs the simulator's own shutdown
        await self.shutdown()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        """The server's origin, `http://127.0.0.1:<port>`."""
        return f"http://{self.host}:{self.port}"

    @property
    def page_url(self) -> str:
        return f"{self.base_url()}/"
