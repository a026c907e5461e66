"""Budgets: `--budget N` and the form's field set a request's spending limit, the sandbox gets
what is left of it, a run stopped by it says so with a button to continue with more."""

from __future__ import annotations

import json
from typing import Any

from bot.requests.actions import SYSTEM, Actor
from bot.slack.commands import parse_command, take_budget
from bot.slack.interactions import INTERACTION_JOB
from storage.models import MessageSource, RequestStatus
from storage.repositories import FeatureRequestRepository, RequestMessagesRepository
from tests.runner.local_support import REPO, Loop, running_loop
from tests.slack.fake_slack import FakeSlack
from tests.slack.harness import running_clarity


def test_budget_is_read_anywhere_in_the_command() -> None:
    assert take_budget("acme/web add dark mode --budget 3") == ("acme/web add dark mode", 3.0, "")
    assert take_budget("acme/web --budget=$2.50 add it") == ("acme/web add it", 2.5, "")
    parsed = parse_command("--budget 7 acme/web add dark mode")
    assert parsed.kind.value == "file"
    assert (parsed.budget_usd, parsed.description) == (7.0, "add dark mode")
    for wrong in ("acme/web add --budget", "acme/web add --budget lots", "x --budget 0"):
        assert parse_command(wrong).kind.value == "invalid", wrong
    assert "once" in parse_command("acme/web a --budget 1 --budget 2").problem
    assert parse_command("list --budget 3").kind.value == "invalid"
    # Words that merely contain the flag are left alone.
    assert take_budget("acme/web add a --budgets page")[1] is None


async def test_over_the_cap_is_refused_privately(db_url: str) -> None:
    async with (
        FakeSlack() as slack,
        running_clarity(db_url, slack, clarity_max_budget_usd=50) as clarity,
    ):
        sent = await clarity.sender.command("acme/web add dark mode --budget 80")
        assert sent.status == 200
        assert "at most $50" in sent.text and "--budget 50" in sent.text
        await clarity.settle()
        assert await clarity.requests() == []


async def test_the_form_takes_a_budget(db_url: str) -> None:
    async with FakeSlack() as slack, running_clarity(db_url, slack) as clarity:
        values = {"repo": {"repo": "acme/web"}, "description": {"description": "Add dark mode"}}
        wrong = await clarity.sender.submit_view(
            "clarity_file_request", {**values, "budget": {"budget": "lots"}}
        )
        assert wrong.json["response_action"] == "errors"
        assert "budget" in wrong.json["errors"]
        over = await clarity.sender.submit_view(
            "clarity_file_request", {**values, "budget": {"budget": "51"}}
        )
        assert over.json["errors"]["budget"] == "At most $50."
        sent = await clarity.sender.submit_view(
            "clarity_file_request",
            {**values, "budget": {"budget": "$4.50"}},
            private_metadata={"channelId": "C0GENERAL", "channelName": "general"},
        )
        assert sent.status == 200 and not sent.text
        await clarity.settle()
        (request,) = await clarity.requests()
        (initial, *_) = await clarity.messages(request.request_id)
        assert initial.metadata_ is not None and initial.metadata_["budgetUsd"] == 4.5


async def test_raise_budget_is_refused_unless_a_budget_stopped_the_run(db_url: str) -> None:
    async with FakeSlack() as slack, running_clarity(db_url, slack) as clarity:
        request = await clarity.file("acme/web add dark mode --budget 45")
        rid = request.request_id
        lifecycle = clarity.graph.lifecycle
        alice = Actor("U0ALICE", "alice", MessageSource.SLACK)
        async with clarity.services.session_factory.begin() as session:
            refused = await lifecycle.raise_budget(session, rid, alice)
        assert refused.refusal is not None and "Nothing to continue" in refused.refusal
        async with clarity.services.session_factory.begin() as session:
            await lifecycle.run_failed(session, rid, "AGENT_FAILED", "It broke.")
            refused = await lifecycle.raise_budget(session, rid, alice)
        assert refused.refusal == "The last run was not stopped by its budget."
        async with clarity.services.session_factory.begin() as session:
            await RequestMessagesRepository(session).add_error(
                rid, "BUDGET_EXCEEDED", "Stopped at the budget."
            )
            bob = Actor("U0BOB", "bob", MessageSource.SLACK)
            not_theirs = await lifecycle.raise_budget(session, rid, bob)
            assert "Only the person" in str(not_theirs.refusal)
            raised = await lifecycle.raise_budget(session, rid, alice)
        assert raised.done and raised.message is not None
        # $45 of at most $50: only $5 more.
        assert raised.message.metadata_ == {
            "retryCount": 1,
            "budgetUsd": 50,
            "budgetRaisedUsd": 5,
        }
        async with clarity.services.session_factory.begin() as session:
            await lifecycle.run_failed(session, rid, "X", "x")
            messages = RequestMessagesRepository(session)
            await messages.add_error(rid, "BUDGET_EXCEEDED", "Stopped again.")
            row = await FeatureRequestRepository(session).get(rid)
            assert row.status == RequestStatus.ERROR
            at_cap = await lifecycle.raise_budget(session, rid, SYSTEM)
        assert "the most a request may have" in str(at_cap.refusal)


async def test_a_budget_stop_offers_more_and_a_click_runs_again(db_url: str) -> None:
    async with running_loop(db_url, publish=True) as loop:
        request = await loop.file(f"{REPO} [fake:budget] rewrite everything --budget 3")
        rid = request.request_id
        (initial, *_) = await loop.messages(rid)
        assert initial.metadata_ is not None and initial.metadata_["budgetUsd"] == 3

        error = await loop.wait_for(lambda: _budget_error(loop, rid), "the budget stop")
        assert "$3.00" in error.content
        first = loop.fake_log()[0]["argv"]
        assert first[first.index("--max-budget-usd") + 1] == "3"
        # The thread says what was spent, and offers to continue with as much again.
        (button,) = await loop.wait_for(lambda: _raise_buttons(loop), "the raise button")
        assert button["text"]["text"] == "Continue with $3 more"
        assert button["value"] == rid
        posted = json.dumps(
            [c.get("blocks") for c in loop.slack.calls("chat.postMessage") if c.get("thread_ts")]
        )
        assert "Stopped at the budget" in posted and "spent $3.01 so far" in posted
        # The work so far was handed over (a draft).
        assert (await loop.bundle(rid, 1)) is not None

        # Two clicks: one raise, one new run.
        for _ in range(2):
            clicked = await loop.sender.click("raise_budget", rid)
            assert clicked.status == 200
        await loop.wait_for(lambda: _start_count(loop, 2), "the run with more budget")
        retries = [m for m in await loop.messages(rid) if m.type.value == "retry"]
        assert len(retries) == 1 and retries[0].metadata_ is not None
        assert retries[0].metadata_["budgetUsd"] == 6
        runs = [(r.attempt, r.kind) for r in await loop.runs(rid)]
        assert runs == [(1, "initial"), (2, "retry")]
        # The new run gets what is left: $6 less the $3.01 spent.
        second = loop.fake_log()[1]["argv"]
        assert second[second.index("--max-budget-usd") + 1] == "2.99"
        # It started once the first run's work was published (the branch continues).
        assert loop.published[0] == (rid, 1)
        await loop.wait_for(lambda: _interactions_done(loop), "the clicks' jobs")


async def _budget_error(loop: Loop, request_id: str) -> Any:
    for message in reversed(await loop.messages(request_id)):
        if message.type.value == "error":
            meta = message.metadata_ or {}
            return message if meta.get("errorCode") == "BUDGET_EXCEEDED" else None
    return None


async def _raise_buttons(loop: Loop) -> list[dict[str, Any]]:
    return loop.buttons("raise_budget")


async def _start_count(loop: Loop, count: int) -> bool:
    return len(loop.fake_log()) >= count


async def _interactions_done(loop: Loop) -> bool:
    return all(j.status != "queued" for j in await loop.jobs(INTERACTION_JOB))
