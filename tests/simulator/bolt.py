"""A minimal real Bolt app on 127.0.0.1, for the simulator to deliver to.

async with SimulatorServer(signing_secret=SECRET, bot_token=BOT_TOKEN) as sim:
    async with running_bolt(sim, register) as app:
        await sim.people.say(YOU, DEMO_CHANNEL, "/clarity hi")
        app.requests      # what reached /slack/events: headers and body, in order
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.test_utils import TestServer
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.simulator import SimulatorServer

SECRET = "sim-test-signing-secret-0123456789"
BOT_TOKEN = "xoxb-1111-2222-simulatortesttoken"


@dataclass(frozen=True)
class Seen:
    """One request that reached the app."""

    headers: dict[str, str]
    body: str


@dataclass
class BoltServer:
    bolt: AsyncApp
    url: str
    requests: list[Seen] = field(default_factory=list)


@contextlib.asynccontextmanager
async def running_bolt(
    sim: SimulatorServer,
    register: Callable[[AsyncApp], None],
    *,
    signing_secret: str = SECRET,
    on_request: Callable[[Seen], None] | None = None,
) -> AsyncIterator[BoltServer]:
    """A Bolt AsyncApp (its Web API client on the simulator) serving POST /slack/events."""
    client = AsyncWebClient(token=BOT_TOKEN, base_url=sim.api_url)
    bolt = AsyncApp(client=client, signing_secret=signing_secret, process_before_response=True)
    register(bolt)
    requests: list[Seen] = []

    async def events(request: web.Request) -> web.StreamResponse:
        body = await request.text()
        seen = Seen(dict(request.headers), body)
        requests.append(seen)
        if on_request is not None:
            on_request(seen)
        response = await bolt.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(response)

    app = web.Application()
    app.router.add_post("/slack/events", events)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("/slack/events"))
    sim.set_target(url)
    try:
        yield BoltServer(bolt, url, requests)
    finally:
        await server.close()
