"""Every button, and the answer modal, as signed `block_actions` / `view_submission`."""

from __future__ import annotations

import asyncio
import json

from bot.dispatch import DISPATCH_JOB
from storage.models import MessageSource, MessageType, RequestStatus
from tests.slack import agent
from tests.slack.fake_slack import FakeSlack
from tests.slack.harness import Clarity, running_clarity


def _kinds(jobs: list) -> list[str]:  # type: ignore[type-arg]
    return [j.payload["kind"] for j in jobs]


def _buttons(blocks: list[dict]) -> list[dict]:  # type: ignore[type-arg]
    return [e for b in blocks if b["type"] == "actions" for e in b["elements"]]


async def test_retry_on_error_redispatches_once_even_when_double_clicked(clarity: Clarity) -> None:
    request = await clarity.file()
    await agent.fail(clarity.graph, request.request_id, "container exited 137")
    await clarity.run_jobs()
    [error_post] = [
        c for c in clarity.slack.calls("chat.postMessage") if "The run failed" in c["text"]
    ]
    [retry_button] = _buttons(error_post["blocks"])
    assert (retry_button["action_id"], retry_button["value"]) == (
        "retry_request",
        request.request_id,
    )

    clicks = await asyncio.gather(
        clarity.sender.click("retry_request", request.request_id, user="U0BOB", user_name="bob"),
        clarity.sender.click("retry_request", request.request_id, user="U0BOB", user_name="bob"),
    )
    assert [c.status for c in clicks] == [200, 200]
    await clarity.settle()

    request = await clarity.request(request.request_id)
    assert request.status == RequestStatus.PROCESSING
    assert request.retry_count == 1 and request.last_retry_at is not None
    retries = [m for m in await clarity.messages(request.request_id) if m.type == MessageType.RETRY]
    assert len(retries) == 1
    assert (retries[0].actor_id, retries[0].actor_name) == ("U0BOB", "bob")
    assert _kinds(await clarity.jobs(DISPATCH_JOB)) == ["initial", "retry"]
    # The second click was told, privately, that there is nothing to retry.
    [refusal] = clarity.slack.responses
    assert "Nothing to retry" in refusal["text"]

    clarity.slack.clear()
    await clarity.run_jobs()
    [edited] = [
        c for c in clarity.slack.calls("chat.update") if "Retried by" in json.dumps(c["blocks"])
    ]
    assert "<@U0BOB>" in json.dumps(edited["blocks"])
    assert _buttons(edited["blocks"]) == []


async def test_retry_outside_error_does_nothing(clarity: Clarity) -> None:
    request = await clarity.file()
    await clarity.sender.click("retry_request", request.request_id)
    await clarity.settle()
    assert (await clarity.request(request.request_id)).retry_count == 0
    assert _kinds(await clarity.jobs(DISPATCH_JOB)) == ["initial"]
    assert "Nothing to retry" in clarity.slack.responses[-1]["text"]


async def test_cancel_by_requester_others_refused(db_url: str, fake_slack: FakeSlack) -> None:
    async with running_clarity(db_url, fake_slack, clarity_admin_user_ids="U0ADMIN") as clarity:
        request = await clarity.file(user="U0ALICE")
        await clarity.sender.click("cancel_request", request.request_id, user="U0BOB")
        await clarity.settle()
        assert "Only the person who filed" in fake_slack.responses[-1]["text"]
        assert (await clarity.request(request.request_id)).status == RequestStatus.PENDING

        await clarity.sender.click(
            "cancel_request", request.request_id, user="U0ALICE", user_name="alice"
        )
        await clarity.settle()
        request = await clarity.request(request.request_id)
        assert request.status == RequestStatus.CANCELLED and request.processed_at is not None
        cancelled = (await clarity.messages(request.request_id))[-1]
        assert cancelled.type == MessageType.CANCELLED
        assert (cancelled.source, cancelled.actor_id) == (MessageSource.SLACK, "U0ALICE")
        assert _kinds(await clarity.jobs(DISPATCH_JOB)) == ["initial", "cancel"]

        fake_slack.clear()
        await clarity.run_jobs()
        [root] = [c for c in fake_slack.calls("chat.update") if c["ts"] == request.slack_thread_ts]
        assert "Cancelled" in json.dumps(root["blocks"]) and _buttons(root["blocks"]) == []
        [note] = fake_slack.calls("chat.postMessage")
        assert (
            "Cancelled by <@U0ALICE>" in note["text"]
            and note["thread_ts"] == request.slack_thread_ts
        )

        # A second click (the admin's) finds it already cancelled.
        await clarity.sender.click("cancel_request", request.request_id, user="U0ADMIN")
        await clarity.settle()
        assert "already" in fake_slack.responses[-1]["text"]
        assert _kinds(await clarity.jobs(DISPATCH_JOB)) == ["initial", "cancel"]


async def test_admin_may_cancel(db_url: str, fake_slack: FakeSlack) -> None:
    async with running_clarity(
        db_url, fake_slack, clarity_admin_user_ids="U0ADMIN,U0OTHER"
    ) as clarity:
        request = await clarity.file(user="U0ALICE")
        await clarity.sender.click("cancel_request", request.request_id, user="U0ADMIN")
        await clarity.settle()
        assert (await clarity.request(request.request_id)).status == RequestStatus.CANCELLED


async def test_question_buttons_answer_modal_and_answered_once(clarity: Clarity) -> None:
    request = await clarity.file()
    question = await agent.ask(
        clarity.graph,
        request.request_id,
        "Dark grey or pure black?",
        ["Dark grey", "Pure black"],
    )
    await clarity.run_jobs()
    [post] = [c for c in clarity.slack.calls("chat.postMessage") if c.get("thread_ts")]
    buttons = _buttons(post["blocks"])
    assert [(b["action_id"], b["value"]) for b in buttons] == [
        ("answer_clarification", str(question.id)),
        ("clarification_option", "Dark grey"),
        ("clarification_option", "Pure black"),
    ]
    answer_block = next(b for b in post["blocks"] if b["type"] == "actions")

    # "Answer" opens a modal showing the question.
    await clarity.sender.click(
        "answer_clarification", str(question.id), block_id=answer_block["block_id"], user="U0BOB"
    )
    await clarity.settle()
    [opened] = clarity.slack.calls("views.open")
    assert opened["view"]["callback_id"] == "clarity_answer"
    assert "Dark grey or pure black?" in json.dumps(opened["view"]["blocks"])
    metadata = json.loads(opened["view"]["private_metadata"])

    empty = await clarity.sender.submit_view(
        "clarity_answer", {"answer": {"answer": ""}}, private_metadata=metadata, user="U0BOB"
    )
    assert empty.json["response_action"] == "errors" and "answer" in empty.json["errors"]

    # Meanwhile someone picks an option: that answer wins; the modal's comes second.
    option_blocks = [b for b in post["blocks"] if b["type"] == "actions"][1:]
    clicks = await asyncio.gather(
        clarity.sender.click(
            "clarification_option",
            "Pure black",
            block_id=option_blocks[1]["block_id"],
            user="U0ALICE",
        ),
        clarity.sender.click(
            "clarification_option",
            "Pure black",
            block_id=option_blocks[1]["block_id"],
            user="U0ALICE",
        ),
    )
    assert [c.status for c in clicks] == [200, 200]
    await clarity.settle()
    submitted = await clarity.sender.submit_view(
        "clarity_answer",
        {"answer": {"answer": "Dark grey"}},
        private_metadata=metadata,
        user="U0BOB",
    )
    assert submitted.status == 200
    await clarity.settle()

    answers = [
        m
        for m in await clarity.messages(request.request_id)
        if m.type == MessageType.CLARIFICATION_ANSWER
    ]
    assert [(a.content, a.actor_id, a.metadata_["answeredVia"]) for a in answers] == [
        ("Pure black", "U0ALICE", "option")
    ]
    assert _kinds(await clarity.jobs(DISPATCH_JOB)) == ["initial", "clarification_answer"]
    assert "already been answered" in clarity.slack.responses[-1]["text"]
    [late] = clarity.slack.calls("chat.postEphemeral")
    assert late["user"] == "U0BOB" and "already been answered" in late["text"]

    clarity.slack.clear()
    await clarity.run_jobs()
    [closed] = [c for c in clarity.slack.calls("chat.update") if c["ts"] != request.slack_thread_ts]
    assert "Answered by <@U0ALICE>: Pure black" in json.dumps(closed["blocks"])
    assert _buttons(closed["blocks"]) == []

    # The modal path on a fresh question.
    second = await agent.ask(clarity.graph, request.request_id, "Also the sidebar?")
    await clarity.run_jobs()
    await clarity.sender.submit_view(
        "clarity_answer",
        {"answer": {"answer": "Yes, the sidebar too"}},
        private_metadata={"questionId": second.id, "channelId": "C0GENERAL"},
        user="U0BOB",
    )
    await clarity.settle()
    last = (await clarity.messages(request.request_id))[-1]
    assert (last.type, last.content, last.metadata_["answeredVia"]) == (
        MessageType.CLARIFICATION_ANSWER,
        "Yes, the sidebar too",
        "modal",
    )
    # The old question's buttons are stale now.
    await clarity.sender.click("answer_clarification", str(question.id), user="U0BOB")
    await clarity.settle()
    assert "already been answered" in clarity.slack.responses[-1]["text"]
