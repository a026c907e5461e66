"""Replies in a request's thread, as `message` events over real HTTP."""

from __future__ import annotations

import json

from sqlalchemy import func, select

from bot.dispatch import DISPATCH_JOB
from storage.models import InboundDelivery, MessageSource, MessageType, RequestStatus
from tests.slack import agent
from tests.slack.harness import Clarity


def _dispatch_kinds(jobs: list) -> list[str]:  # type: ignore[type-arg]
    return [j.payload["kind"] for j in jobs]


async def test_reply_while_awaiting_clarification_is_an_answer(clarity: Clarity) -> None:
    request = await clarity.file()
    question = await agent.ask(clarity.graph, request.request_id, "Which shade of dark?")
    await clarity.run_jobs()
    [question_post] = [
        p for p in await clarity.posts(request.request_id) if p.purpose == "question"
    ]

    sent = await clarity.sender.thread_reply(
        channel="C0GENERAL",
        thread_ts=request.slack_thread_ts,
        text="Charcoal, please",
        user="U0BOB",
        ts="1800000099.000100",
    )
    assert sent.status == 200
    await clarity.settle()

    answer = (await clarity.messages(request.request_id))[-1]
    assert answer.type == MessageType.CLARIFICATION_ANSWER
    assert answer.source == MessageSource.SLACK
    assert (answer.content, answer.actor_id, answer.actor_name) == (
        "Charcoal, please",
        "U0BOB",
        "bob",
    )
    assert answer.metadata_["questionMessageId"] == question.id
    assert answer.metadata_["slackTs"] == "1800000099.000100"
    assert (await clarity.request(request.request_id)).status == RequestStatus.PROCESSING
    assert _dispatch_kinds(await clarity.jobs(DISPATCH_JOB)) == ["initial", "clarification_answer"]

    clarity.slack.clear()
    await clarity.run_jobs()
    # The question's buttons are replaced by who answered; the reply gets a reaction.
    [closed] = [c for c in clarity.slack.calls("chat.update") if c["ts"] == question_post.ts]
    assert "Answered by <@U0BOB>" in json.dumps(closed["blocks"])
    assert "answer_clarification" not in json.dumps(closed["blocks"])
    [reaction] = clarity.slack.calls("reactions.add")
    assert (reaction["channel"], reaction["timestamp"]) == ("C0GENERAL", "1800000099.000100")
    # The root shows the new status.
    [root] = [c for c in clarity.slack.calls("chat.update") if c["ts"] == request.slack_thread_ts]
    assert "Working" in json.dumps(root["blocks"])


async def test_reply_after_pr_is_a_follow_up(clarity: Clarity) -> None:
    request = await clarity.file()
    await agent.open_pr(clarity.graph, request.request_id)
    await clarity.run_jobs()

    await clarity.sender.thread_reply(
        channel="C0GENERAL", thread_ts=request.slack_thread_ts, text="Also make the footer dark"
    )
    await clarity.settle()
    follow_up = (await clarity.messages(request.request_id))[-1]
    assert follow_up.type == MessageType.FOLLOW_UP_REQUEST
    assert follow_up.metadata_["dispatched"] is True
    assert (await clarity.request(request.request_id)).status == RequestStatus.PROCESSING
    assert _dispatch_kinds(await clarity.jobs(DISPATCH_JOB)) == ["initial", "follow_up"]
    # Same branch: the PR fields stay on the request for the runner.
    assert (await clarity.request(request.request_id)).pr_branch_name == "clarity/dark-mode"


async def test_reply_in_any_other_state_is_kept_and_acknowledged(clarity: Clarity) -> None:
    request = await clarity.file()
    await agent.set_status(clarity.graph, request.request_id, RequestStatus.PROCESSING)
    await clarity.run_jobs()
    clarity.slack.clear()

    await clarity.sender.thread_reply(
        channel="C0GENERAL",
        thread_ts=request.slack_thread_ts,
        text="Keep the old colours as an option",
        ts="1800000077.000100",
    )
    await clarity.settle()
    note = (await clarity.messages(request.request_id))[-1]
    assert note.type == MessageType.FOLLOW_UP_REQUEST
    assert note.content == "Keep the old colours as an option"
    assert note.metadata_["dispatched"] is False
    assert (await clarity.request(request.request_id)).status == RequestStatus.PROCESSING
    assert _dispatch_kinds(await clarity.jobs(DISPATCH_JOB)) == ["initial"]
    await clarity.run_jobs()
    [reaction] = clarity.slack.calls("reactions.add")
    assert reaction["timestamp"] == "1800000077.000100" and reaction["name"] == "eyes"
    assert clarity.slack.calls("chat.postMessage") == []


async def test_bots_edits_deletions_and_other_threads_are_ignored(clarity: Clarity) -> None:
    request = await clarity.file()
    before = len(await clarity.messages(request.request_id))
    thread = request.slack_thread_ts
    ignored = [
        {"bot_id": "B0OTHER", "subtype": "bot_message"},
        {"subtype": "message_changed"},
        {"subtype": "message_deleted"},
        {"subtype": "channel_join"},
    ]
    for extra in ignored:
        sent = await clarity.sender.thread_reply(
            channel="C0GENERAL", thread_ts=thread, text="x", **extra
        )
        assert sent.status == 200
    # A thread that is not a request's, and the root message itself.
    await clarity.sender.thread_reply(channel="C0GENERAL", thread_ts="1700000000.999999", text="hi")
    await clarity.sender.thread_reply(channel="C0GENERAL", thread_ts=thread, ts=thread, text="root")
    await clarity.settle()
    assert len(await clarity.messages(request.request_id)) == before
    async with clarity.services.session_factory() as session:
        seen = await session.scalar(
            select(func.count())
            .select_from(InboundDelivery)
            .where(InboundDelivery.source == "slack_event")
        )
    assert seen == 0


async def test_same_event_delivered_three_times_has_one_effect(clarity: Clarity) -> None:
    request = await clarity.file()
    await agent.ask(clarity.graph, request.request_id, "Which shade?")
    await clarity.run_jobs()
    for retry in (None, 1, 2):
        sent = await clarity.sender.thread_reply(
            channel="C0GENERAL",
            thread_ts=request.slack_thread_ts,
            text="Charcoal",
            event_id="Ev0SAMEEVENT",
            ts="1800000055.000100",
            retry_num=retry,
        )
        assert sent.status == 200
        await clarity.settle()
    messages = await clarity.messages(request.request_id)
    assert [m.type for m in messages].count(MessageType.CLARIFICATION_ANSWER) == 1
    assert _dispatch_kinds(await clarity.jobs(DISPATCH_JOB)) == ["initial", "clarification_answer"]
    await clarity.run_jobs()
    assert len(clarity.slack.calls("reactions.add")) == 1
