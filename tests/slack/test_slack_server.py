"""Serving Slack: signatures, missing credentials, stored config, Socket Mode, App Home,
errors the user is told about, and draining at shutdown."""

from __future__ import annotations

import json
import logging
import socket
import time
from urllib.parse import parse_qsl

import aiohttp
import pytest
from prometheus_client import generate_latest
from sqlalchemy import func, select

from bot.services import build_cipher
from bot.settings import load_settings
from storage.engine import create_engine, create_session_factory
from storage.models import FeatureRequest, InboundDelivery, Job, RequestStatus
from storage.repositories import AppConfigRepository
from storage.schemas import SlackConfig
from tests.slack import agent
from tests.slack.fake_slack import FakeSlack
from tests.slack.harness import ENCRYPTION_KEY, SIGNING_SECRET, Clarity, running_clarity
from tests.slack.signing import SlackSender, slash_command_body


async def _nothing_written(clarity: Clarity) -> None:
    async with clarity.services.session_factory() as session:
        for table in (FeatureRequest, InboundDelivery, Job):
            assert await session.scalar(select(func.count()).select_from(table)) == 0, table


async def test_bad_signature_and_stale_timestamp_are_rejected(clarity: Clarity) -> None:
    body = slash_command_body("acme/web add dark mode")
    form = "application/x-www-form-urlencoded"
    forged = await clarity.sender.post(body, form, secret="not-the-signing-secret")
    stale = await clarity.sender.post(body, form, timestamp=int(time.time()) - 6 * 60)
    assert (forged.status, stale.status) == (401, 401)
    await clarity.settle()
    await _nothing_written(clarity)
    assert clarity.slack.calls() == []
    # The same body, correctly signed and fresh, is accepted.
    assert (await clarity.sender.post(body, form)).status == 200


async def test_without_credentials_server_runs_and_says_what_is_missing(
    db_url: str, fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.slack.app")
    async with running_clarity(
        db_url, fake_slack, slack_bot_token=None, slack_signing_secret=None
    ) as clarity:
        sent = await clarity.sender.command("acme/web add dark mode")
        assert sent.status == 503
        error = sent.json["error"]
        assert error["code"] == "slack_not_configured"
        assert "SLACK_BOT_TOKEN" in error["message"] and "SLACK_SIGNING_SECRET" in error["message"]
        async with clarity.sender.session.get(f"{clarity.url}/healthz") as health:
            assert health.status == 200
        await _nothing_written(clarity)
    assert any("SLACK_BOT_TOKEN" in r.getMessage() for r in caplog.records)


async def test_stored_slack_config_is_used_when_environment_has_none(
    db_url: str, fake_slack: FakeSlack
) -> None:
    settings = load_settings(_env_file=None, encryption_key=ENCRYPTION_KEY)
    cipher = build_cipher(settings)
    assert cipher is not None
    engine = create_engine(db_url)
    try:
        async with create_session_factory(engine).begin() as session:
            await AppConfigRepository(session, cipher).set_slack_config(
                SlackConfig(signing_secret="stored-signing-secret", bot_token="xoxb-stored-token-1")
            )
    finally:
        await engine.dispose()
    async with running_clarity(
        db_url, fake_slack, slack_bot_token=None, slack_signing_secret=None
    ) as clarity:
        clarity.sender.secret = "stored-signing-secret"
        assert (await clarity.sender.command("acme/web add dark mode")).status == 200
        await clarity.settle()
        await clarity.run_jobs()
        [post] = fake_slack.calls("chat.postMessage")
        assert post.headers["Authorization"] == "Bearer xoxb-stored-token-1"
        clarity.sender.secret = SIGNING_SECRET
        assert (await clarity.sender.command("acme/web add more")).status == 401


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_database_down_user_gets_a_clear_private_error(
    fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    dead = f"postgresql://nobody:nothing@127.0.0.1:{_closed_port()}/clarity"
    caplog.set_level(logging.ERROR, logger="bot.slack.errors")
    async with running_clarity(dead, fake_slack) as clarity:
        started = time.monotonic()
        sent = await clarity.sender.command("acme/web add dark mode")
        # Answered at once, privately, with what went wrong and a reference.
        assert sent.status == 200
        assert time.monotonic() - started < 2.5
        assert "cannot reach its database" in sent.text
        reference = sent.text.split("reference `")[1].split("`")[0]
        # Work after the ack (here `/clarity list`) reports through the response URL.
        assert (await clarity.sender.command("list")).status == 200
        assert await clarity.feature.inflight.wait_idle(10)
        [told] = fake_slack.responses
        assert "cannot reach its database" in told["text"]
        assert told["response_type"] == "ephemeral"
    logged = [r for r in caplog.records if reference in r.getMessage()]
    assert logged and logged[0].exc_info is not None


async def test_unexpected_failure_is_logged_and_reported_with_a_reference(
    clarity: Clarity, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="bot.slack.errors")
    clarity.slack.fail_next("views.open", status=200, error="expired_trigger_id")
    assert (await clarity.sender.command("")).status == 200
    await clarity.settle()
    [told] = clarity.slack.responses
    assert "reference `" in told["text"] and "expired_trigger_id" in told["text"]
    reference = told["text"].split("reference `")[1].split("`")[0]
    [record] = [r for r in caplog.records if reference in r.getMessage()]
    assert record.exc_info is not None and "expired_trigger_id" in str(record.exc_info[1])
    metrics = generate_latest(clarity.services.metrics.registry).decode()
    assert 'clarity_errors_total{where="slack"} 1.0' in metrics


async def test_app_home_shows_recent_requests_and_weekly_stats(clarity: Clarity) -> None:
    mine = await clarity.file("acme/web add dark mode", user="U0ALICE")
    await clarity.file("acme/api add rate limiting", user="U0BOB")
    await agent.open_pr(clarity.graph, mine.request_id, number=9)
    await agent.set_status(
        clarity.graph, mine.request_id, RequestStatus.COMPLETED, cost_usd=250, duration_ms=60_000
    )
    sent = await clarity.sender.app_home_opened("U0ALICE")
    assert sent.status == 200
    await clarity.settle()
    [published] = clarity.slack.calls("views.publish")
    assert published["user_id"] == "U0ALICE" and published["view"]["type"] == "home"
    rendered = json.dumps(published["view"]["blocks"])
    assert mine.request_id in rendered and "acme/api" not in rendered
    assert "pull/9" in rendered and "Completed" in rendered
    for stat in ("Last 7 days", "Success rate", "100%", "$2.50", "1m 0s", "*Requests*\\n2"):
        assert stat in rendered, stat


async def test_socket_mode_receives_commands_over_the_websocket(
    db_url: str, fake_slack: FakeSlack
) -> None:
    async with running_clarity(
        db_url, fake_slack, slack_app_token="xapp-1-A0CLARITY-1-abcdef", slack_signing_secret=None
    ) as clarity:
        payload = dict(parse_qsl(slash_command_body("acme/web add dark mode via socket")))
        ack = await fake_slack.send_envelope("slash_commands", payload)
        assert ack["envelope_id"]
        await clarity.settle()
        [request] = await clarity.requests()
        assert request.description == "add dark mode via socket"
        assert (
            fake_slack.calls("apps.connections.open")[0]
            .headers["Authorization"]
            .startswith("Bearer xapp-")
        )
        # HTTP mode is off without a signing secret.
        assert (await clarity.sender.command("acme/web add more")).status == 503


async def test_shutdown_finishes_work_that_was_acknowledged(
    db_url: str, fake_slack: FakeSlack
) -> None:
    async with running_clarity(db_url, fake_slack) as clarity:
        filed = await clarity.sender.command("acme/web add dark mode")
        default = await clarity.sender.command("repo acme/web", channel="C0DRAIN")
        listed = await clarity.sender.command("list")
        assert (filed.status, default.status, listed.status) == (200, 200, 200)
        # No settle: the server shuts down right after the acks.
    engine = create_engine(db_url)
    try:
        async with create_session_factory(engine)() as session:
            kinds = (await session.scalars(select(Job.kind).order_by(Job.id))).all()
    finally:
        await engine.dispose()
    # The filing and the change were durable before their acks; the read answered after its
    # ack finished before the server stopped.
    assert kinds == ["slack.file", "slack.interaction"]
    [answer] = fake_slack.responses
    assert answer.params["text"] and answer["response_type"] == "ephemeral"


async def test_metrics_count_slack_calls(clarity: Clarity) -> None:
    await clarity.file()
    async with aiohttp.ClientSession() as http, http.get(f"{clarity.url}/metrics") as resp:
        text = await resp.text()
    assert 'clarity_slack_api_calls_total{method="chat.postMessage",outcome="ok"} 1.0' in text


async def test_sender_helper_is_reusable(clarity: Clarity) -> None:
    """The signed-request helper works with any session and URL (used by other suites)."""
    async with aiohttp.ClientSession() as http:
        sender = SlackSender(http, f"{clarity.url}/slack/events", SIGNING_SECRET, clarity.slack)
        assert (await sender.command("help")).status == 200
