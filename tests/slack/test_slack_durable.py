"""Thread replies, clicks, answer forms and `/clarity repo` are committed jobs before the ack.

Each test shows the job row right after Slack's HTTP 200 with nothing run and nothing held
in memory, then runs the jobs: one effect, however often the same delivery came, and even
when the server that acked it is gone.
"""

from __future__ import annotations

import json
import socket
from urllib.parse import parse_qsl

from bot.dispatch import DISPATCH_JOB
from bot.slack.interactions import INTERACTION_JOB
from storage.models import ChannelSetting, Job, MessageType, RequestStatus
from tests.slack import agent
from tests.slack.fake_slack import FakeSlack
from tests.slack.harness import Clarity, running_clarity
from tests.slack.signing import block_actions_body, event_body, next_ts, slash_command_body

FORM = "application/x-www-form-urlencoded"


async def _queued(clarity: Clarity) -> list[Job]:
    return [j for j in await clarity.jobs(INTERACTION_JOB) if j.status == "queued"]


async def _kinds(clarity: Clarity) -> list[str]:
    return [j.payload["kind"] for j in await clarity.jobs(DISPATCH_JOB)]


def _nothing_in_memory(clarity: Clarity) -> None:
    assert clarity.feature.inflight.count == 0


async def test_thread_reply_is_a_job_before_the_ack_and_answers_once_for_three_deliveries(
    clarity: Clarity,
) -> None:
    request = await clarity.file()
    await agent.ask(clarity.graph, request.request_id, "Which shade?")
    await clarity.run_jobs()
    clarity.slack.clear()

    for retry in (None, 1, 2):
        sent = await clarity.sender.thread_reply(
            channel="C0GENERAL",
            thread_ts=request.slack_thread_ts,
            text="Charcoal",
            event_id="Ev0DURABLE",
            ts="1800000066.000100",
            retry_num=retry,
        )
        assert sent.status == 200
        _nothing_in_memory(clarity)
        [job] = await _queued(clarity)
        assert job.payload["route"] == "thread_reply"
        assert job.payload["body"]["event"]["text"] == "Charcoal"
        # The legacy verification token is not kept.
        assert "token" not in job.payload["body"]
    # Durable, and nothing done yet.
    waiting = await clarity.request(request.request_id)
    assert waiting.status == RequestStatus.AWAITING_CLARIFICATION

    assert await clarity.run_jobs(INTERACTION_JOB) == 1
    # Slack's last retry arrives after the job ran: a new job, and no second effect.
    sent = await clarity.sender.thread_reply(
        channel="C0GENERAL",
        thread_ts=request.slack_thread_ts,
        text="Charcoal",
        event_id="Ev0DURABLE",
        ts="1800000066.000100",
        retry_num=3,
    )
    assert sent.status == 200
    assert await clarity.run_jobs(INTERACTION_JOB) == 1

    messages = await clarity.messages(request.request_id)
    assert [m.type for m in messages].count(MessageType.CLARIFICATION_ANSWER) == 1
    assert await _kinds(clarity) == ["initial", "clarification_answer"]
    await clarity.run_jobs()
    assert len(clarity.slack.calls("reactions.add")) == 1
    assert clarity.slack.calls("chat.postEphemeral") == []


async def test_replies_outside_request_threads_are_not_queued(clarity: Clarity) -> None:
    request = await clarity.file()
    await clarity.sender.thread_reply(channel="C0GENERAL", thread_ts="1700000000.999999", text="x")
    await clarity.sender.thread_reply(
        channel="C0GENERAL", thread_ts=request.slack_thread_ts, text="x", subtype="message_changed"
    )
    assert await clarity.jobs(INTERACTION_JOB) == []


async def test_click_is_a_job_before_the_ack_and_retries_once_for_three_deliveries(
    clarity: Clarity,
) -> None:
    request = await clarity.file()
    await agent.fail(clarity.graph, request.request_id, "container exited 137")
    await clarity.run_jobs()
    clarity.slack.clear()

    # One click, delivered three times (a proxy retrying, two replicas): the same body.
    body = block_actions_body(
        "retry_request",
        request.request_id,
        user="U0BOB",
        user_name="bob",
        response_url=clarity.slack.response_url(),
        trigger_id="1.one-click",
    )
    for _ in range(3):
        sent = await clarity.sender.post(body, FORM)
        assert (sent.status, sent.text) == (200, "")
        _nothing_in_memory(clarity)
        [job] = await _queued(clarity)
        assert job.payload["route"] == "retry_request"
    assert (await clarity.request(request.request_id)).status == RequestStatus.ERROR

    assert await clarity.run_jobs(INTERACTION_JOB) == 1
    # The same click again after its job ran: queued, run, and neither an effect nor a word.
    assert (await clarity.sender.post(body, FORM)).status == 200
    assert await clarity.run_jobs(INTERACTION_JOB) == 1

    request = await clarity.request(request.request_id)
    assert (request.status, request.retry_count) == (RequestStatus.PROCESSING, 1)
    retries = [m for m in await clarity.messages(request.request_id) if m.type == MessageType.RETRY]
    assert [(m.actor_id, m.actor_name) for m in retries] == [("U0BOB", "bob")]
    assert await _kinds(clarity) == ["initial", "retry"]
    assert clarity.slack.responses == []

    # A second, separate click is told privately that there is nothing to retry.
    await clarity.sender.click("retry_request", request.request_id, user="U0BOB")
    await clarity.settle()
    [refusal] = clarity.slack.responses
    assert "Nothing to retry" in refusal["text"]
    assert await _kinds(clarity) == ["initial", "retry"]


async def test_option_click_and_answer_form_are_jobs_before_the_ack(clarity: Clarity) -> None:
    request = await clarity.file()
    question = await agent.ask(clarity.graph, request.request_id, "Grey or black?", ["Grey"])
    await clarity.run_jobs()
    body = block_actions_body(
        "clarification_option",
        "Grey",
        block_id=f"clarity_q:{question.id}:0",
        response_url=clarity.slack.response_url(),
        trigger_id="2.option",
    )
    for _ in range(2):
        assert (await clarity.sender.post(body, FORM)).status == 200
    [job] = await _queued(clarity)
    assert job.payload["route"] == "clarification_option"
    assert await clarity.run_jobs(INTERACTION_JOB) == 1
    assert (await clarity.sender.post(body, FORM)).status == 200
    assert await clarity.run_jobs(INTERACTION_JOB) == 1
    answers = [
        (m.content, m.metadata_["answeredVia"])
        for m in await clarity.messages(request.request_id)
        if m.type == MessageType.CLARIFICATION_ANSWER
    ]
    assert answers == [("Grey", "option")]
    # The clicker answered; being told "already answered" about their own click would be wrong.
    assert clarity.slack.responses == []

    second = await agent.ask(clarity.graph, request.request_id, "The sidebar too?")
    await clarity.run_jobs()
    for _ in range(2):
        sent = await clarity.sender.submit_view(
            "clarity_answer",
            {"answer": {"answer": "Yes"}},
            private_metadata={"questionId": second.id, "channelId": "C0GENERAL"},
            view_id="V0ANSWERFORM",
        )
        assert (sent.status, sent.text) == (200, "")
    [job] = await _queued(clarity)
    assert job.payload["route"] == "clarity_answer"
    assert (await clarity.messages(request.request_id))[-1].type == MessageType.CLARIFICATION_ASK
    await clarity.settle()
    last = (await clarity.messages(request.request_id))[-1]
    assert (last.type, last.content) == (MessageType.CLARIFICATION_ANSWER, "Yes")
    assert clarity.slack.calls("chat.postEphemeral") == []


async def test_acked_interactions_survive_the_server_that_acked_them(
    db_url: str, fake_slack: FakeSlack
) -> None:
    async with running_clarity(db_url, fake_slack) as first:
        failed = await first.file("acme/web add dark mode")
        asking = await first.file("acme/api add rate limiting")
        await agent.fail(first.graph, failed.request_id, "container exited 137")
        await agent.ask(first.graph, asking.request_id, "Per user or per key?")
        await first.run_jobs()

        retry = block_actions_body(
            "retry_request", failed.request_id, response_url=fake_slack.response_url()
        )
        acks = [
            await first.sender.post(retry, FORM),
            await first.sender.post(retry, FORM),
            await first.sender.thread_reply(
                channel="C0GENERAL",
                thread_ts=asking.slack_thread_ts,
                text="Per key",
                event_id="Ev0CRASH",
            ),
            await first.sender.command("repo acme/web", channel="C0CRASH"),
        ]
        assert [a.status for a in acks] == [200, 200, 200, 200]
        _nothing_in_memory(first)
        assert len(await _queued(first)) == 3
        # The server goes away before any worker ran.

    async with running_clarity(db_url, fake_slack) as second:
        assert await second.run_jobs(INTERACTION_JOB) == 3
        assert await second.run_jobs(INTERACTION_JOB) == 0
        failed = await second.request(failed.request_id)
        assert (failed.status, failed.retry_count) == (RequestStatus.PROCESSING, 1)
        answer = (await second.messages(asking.request_id))[-1]
        assert (answer.type, answer.content) == (MessageType.CLARIFICATION_ANSWER, "Per key")
        assert await _kinds(second) == ["initial", "initial", "retry", "clarification_answer"]
        async with second.services.session_factory() as session:
            setting = await session.get(ChannelSetting, "C0CRASH")
        assert setting is not None and setting.default_repo == "acme/web"
        assert "acme/web" in fake_slack.responses[-1]["text"]


async def test_socket_mode_acks_a_thread_reply_once_it_is_a_job(
    db_url: str, fake_slack: FakeSlack
) -> None:
    async with running_clarity(
        db_url, fake_slack, slack_app_token="xapp-1-A0CLARITY-1-abcdef", slack_signing_secret=None
    ) as clarity:
        payload = dict(parse_qsl(slash_command_body("acme/web add dark mode")))
        await fake_slack.send_envelope("slash_commands", payload)
        await clarity.settle()
        await clarity.run_jobs()
        [request] = await clarity.requests()
        reply = {
            "type": "message",
            "channel": "C0GENERAL",
            "user": "U0BOB",
            "text": "Also the footer",
            "ts": next_ts(),
            "thread_ts": request.slack_thread_ts,
        }
        ack = await fake_slack.send_envelope("events_api", json.loads(event_body(reply)))
        assert ack["envelope_id"]
        [job] = await _queued(clarity)
        assert job.payload["body"]["event"]["text"] == "Also the footer"
        await clarity.settle()
        note = (await clarity.messages(request.request_id))[-1]
        assert (note.type, note.content) == (MessageType.FOLLOW_UP_REQUEST, "Also the footer")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_database_down_nothing_is_acked_as_if_recorded(fake_slack: FakeSlack) -> None:
    dead = f"postgresql://nobody:nothing@127.0.0.1:{_closed_port()}/clarity"
    async with running_clarity(dead, fake_slack) as clarity:
        # A click: acked, and told privately through its response URL.
        click = await clarity.sender.click("cancel_request", "req_000000000000")
        assert click.status == 200
        # The answer form stays open and says why.
        form = await clarity.sender.submit_view(
            "clarity_answer",
            {"answer": {"answer": "Per key"}},
            private_metadata={"questionId": 1, "channelId": "C0GENERAL"},
        )
        assert form.json["response_action"] == "errors"
        assert "cannot reach its database" in form.json["errors"]["answer"]
        # A command that changes something is answered in its ack.
        repo = await clarity.sender.command("repo acme/web")
        assert "cannot reach its database" in repo.text
        # An event is refused, so Slack delivers it again; only its last try is reported.
        replies = [
            await clarity.sender.thread_reply(
                channel="C0GENERAL",
                thread_ts="1800000000.000001",
                text="Per key",
                event_id="Ev0DBDOWN",
                retry_num=retry,
            )
            for retry in (None, 1, 3)
        ]
        assert [r.status for r in replies] == [503, 503, 503]
        assert replies[0].json["error"]["code"] == "not_recorded"
        assert await clarity.feature.inflight.wait_idle(10)
    [told] = fake_slack.responses
    assert "cannot reach its database" in told["text"]
    [ephemeral] = fake_slack.calls("chat.postEphemeral")
    assert (ephemeral["channel"], ephemeral["user"], ephemeral["thread_ts"]) == (
        "C0GENERAL",
        "U0ALICE",
        "1800000000.000001",
    )
    assert "cannot reach its database" in ephemeral["text"]


async def test_an_interaction_that_keeps_failing_is_reported(clarity: Clarity) -> None:
    body = {"response_url": clarity.slack.response_url(), "user": {"id": "U0ALICE"}}
    async with clarity.services.session_factory.begin() as session:
        session.add(
            Job(
                kind=INTERACTION_JOB,
                payload={"route": "no_such_route", "body": body},
                dedupe_key=f"test:{next_ts()}",
            )
        )
    assert await clarity.run_jobs(INTERACTION_JOB) == 1
    [job] = await clarity.jobs(INTERACTION_JOB)
    assert job.status == "failed" and "no_such_route" in (job.last_error or "")
    [told] = clarity.slack.responses
    assert f"job `{job.id}`" in told["text"]
    assert told["response_type"] == "ephemeral"
