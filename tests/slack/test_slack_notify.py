"""Slack jobs: the thread mirrors the request, progress is coalesced, Slack failures retried."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time

from prometheus_client import generate_latest
from sqlalchemy import delete

from storage.models import MessageType, RequestStatus, SlackPost, utcnow
from tests.slack import agent
from tests.slack.fake_slack import FakeSlack
from tests.slack.harness import BOT_TOKEN, Clarity, running_clarity


def _thread_posts(slack: FakeSlack) -> list:  # type: ignore[type-arg]
    return [c for c in slack.calls("chat.postMessage") if c.get("thread_ts")]


async def test_thread_shows_pr_and_completion_with_cost_and_duration(clarity: Clarity) -> None:
    request = await clarity.file()
    await agent.open_pr(clarity.graph, request.request_id, number=42)
    await clarity.run_jobs()
    [pr_post] = _thread_posts(clarity.slack)
    assert "https://github.com/acme/web/pull/42" in json.dumps(pr_post["blocks"])
    assert pr_post["thread_ts"] == request.slack_thread_ts
    root_updates = [
        c for c in clarity.slack.calls("chat.update") if c["ts"] == request.slack_thread_ts
    ]
    assert "Pull request open" in json.dumps(root_updates[-1]["blocks"])

    await agent.set_status(
        clarity.graph,
        request.request_id,
        RequestStatus.COMPLETED,
        cost_usd=456,
        duration_ms=125_000,
    )
    clarity.slack.clear()
    await clarity.run_jobs()
    [done] = _thread_posts(clarity.slack)
    rendered = json.dumps(done["blocks"])
    assert "Completed" in rendered and "$4.56" in rendered and "2m 5s" in rendered
    [root] = [c for c in clarity.slack.calls("chat.update") if c["ts"] == request.slack_thread_ts]
    assert "Completed" in json.dumps(root["blocks"]) and "cancel_request" not in json.dumps(
        root["blocks"]
    )
    # Idempotent: nothing is posted twice.
    clarity.slack.clear()
    await clarity.run_jobs()
    assert clarity.slack.calls() == []


async def test_agent_text_is_scrubbed_and_cut_before_slack(clarity: Clarity) -> None:
    request = await clarity.file()
    await agent.set_status(clarity.graph, request.request_id, RequestStatus.PROCESSING)
    await agent.activity(clarity.graph, request.request_id, f"using token {BOT_TOKEN} now")
    await agent.fail(
        clarity.graph, request.request_id, f"auth failed with {BOT_TOKEN} " + "x" * 10_000
    )
    await clarity.run_jobs()
    sent = json.dumps([c.params for c in clarity.slack.calls() if c.method.startswith("chat.")])
    assert BOT_TOKEN not in sent
    assert "[redacted]" in sent
    for call in clarity.slack.calls("chat.postMessage"):
        for block in call["blocks"]:
            text = (block.get("text") or {}).get("text", "")
            assert len(text) <= 3000


async def test_thousand_agent_events_make_a_handful_of_slack_calls(
    db_url: str, fake_slack: FakeSlack
) -> None:
    async with running_clarity(db_url, fake_slack, progress_interval_s=1.0) as clarity:
        request = await clarity.file()
        await agent.set_status(clarity.graph, request.request_id, RequestStatus.PROCESSING)
        await clarity.run_jobs()
        fake_slack.clear()

        stop = asyncio.Event()

        async def workers() -> None:
            while not stop.is_set():
                await clarity.run_jobs()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await stop.wait()

        running = asyncio.create_task(workers())
        started = time.monotonic()
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(1000):
            queue.put_nowait(i)

        async def agent_posts() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                kind = MessageType.AGENT_TOOL_CALL if i % 2 else MessageType.AGENT_THINKING
                await agent.activity(clarity.graph, request.request_id, f"step {i}", kind)

        await asyncio.gather(*(agent_posts() for _ in range(8)))
        await agent.activity(
            clarity.graph, request.request_id, "All done", MessageType.AGENT_SUMMARY
        )
        posting_s = time.monotonic() - started
        # Let the last coalesced update run, then stop (a slow machine may need a while).
        for _ in range(300):
            await asyncio.sleep(0.1)
            if not [
                j for j in await clarity.jobs("slack.progress") if j.status in ("queued", "running")
            ]:
                break
        stop.set()
        await running

        calls = [c for c in fake_slack.calls() if c.method in ("chat.postMessage", "chat.update")]
        print(f"1000 agent events in {posting_s:.1f}s -> {len(calls)} Slack calls")
        assert 1 <= len(calls) <= 30, (len(calls), posting_s)
        assert len(fake_slack.calls("chat.postMessage")) == 1
        # At most about one update per second.
        gaps = [b.at - a.at for a, b in itertools.pairwise(calls)]
        assert all(gap > 0.8 for gap in gaps), gaps
        final = json.dumps(calls[-1]["blocks"])
        assert "1001 steps" in final and "All done" in final and "500 tool calls" in final


async def test_each_run_gets_its_own_progress_message(clarity: Clarity) -> None:
    request = await clarity.file()
    await agent.set_status(clarity.graph, request.request_id, RequestStatus.PROCESSING)
    await agent.activity(clarity.graph, request.request_id, "first run")
    await agent.fail(clarity.graph, request.request_id)
    await clarity.run_jobs()
    await clarity.sender.click("retry_request", request.request_id)
    await clarity.settle()
    await agent.activity(clarity.graph, request.request_id, "second run")
    await clarity.run_jobs()
    progress = [p for p in await clarity.posts(request.request_id) if p.purpose == "progress"]
    assert sorted(p.ref for p in progress) == ["1", "2"]
    second = [c for c in _thread_posts(clarity.slack) if "second run" in json.dumps(c["blocks"])]
    assert len(second) == 1 and "first run" not in json.dumps(second[0]["blocks"])
    assert "(run 2)" in json.dumps(second[0]["blocks"])


async def test_slack_429_is_retried_after_retry_after_then_succeeds(clarity: Clarity) -> None:
    clarity.slack.fail_next("chat.postMessage", status=429, retry_after=1)
    await clarity.sender.command("acme/web add dark mode")
    await clarity.settle()
    await clarity.run_jobs()
    [request] = await clarity.requests()
    assert request.slack_thread_ts is None
    [root_job] = await clarity.jobs("slack.root")
    assert root_job.status == "queued" and "rate limited" in (root_job.last_error or "")
    assert (root_job.run_at - utcnow()).total_seconds() > 0.5

    await asyncio.sleep(1.1)
    await clarity.run_jobs()
    attempts = clarity.slack.calls("chat.postMessage")
    assert len(attempts) == 2
    request = await clarity.request(request.request_id)
    assert request.slack_thread_ts is not None
    [root_job] = await clarity.jobs("slack.root")
    assert root_job.status == "done" and root_job.attempts == 2
    metrics = generate_latest(clarity.services.metrics.registry).decode()
    assert (
        'clarity_slack_api_calls_total{method="chat.postMessage",outcome="rate_limited"} 1.0'
        in metrics
    )
    assert 'clarity_slack_api_calls_total{method="chat.postMessage",outcome="ok"} 1.0' in metrics


async def test_slack_5xx_is_retried_with_backoff(clarity: Clarity) -> None:
    request = await clarity.file()
    clarity.slack.fail_next("chat.update", status=503, retry_after=None, times=2)
    await agent.set_status(clarity.graph, request.request_id, RequestStatus.PROCESSING)
    await clarity.run_jobs()
    updates = [c for c in clarity.slack.calls("chat.update") if c["ts"] == request.slack_thread_ts]
    assert len(updates) == 3
    [job] = [j for j in await clarity.jobs("slack.root") if j.attempts == 3]
    assert job.status == "done"


async def test_root_that_cannot_be_posted_tells_the_requester(clarity: Clarity) -> None:
    clarity.slack.fail_next("chat.postMessage", status=200, error="not_in_channel")
    await clarity.sender.command("acme/web add dark mode")
    await clarity.settle()
    await clarity.run_jobs()
    [job] = await clarity.jobs("slack.root")
    assert job.status == "failed"
    [told] = clarity.slack.responses
    assert "not_in_channel" in told["text"] and "/invite" in told["text"]
    # The request and its dispatch are safe in the database regardless.
    [request] = await clarity.requests()
    assert [j.payload["kind"] for j in await clarity.jobs("dispatch")] == ["initial"]
    assert request.request_id in told["text"]


async def test_adopted_thread_without_post_rows_is_edited_not_reposted(clarity: Clarity) -> None:
    request = await clarity.file()
    async with clarity.services.session_factory.begin() as session:
        await session.execute(delete(SlackPost).where(SlackPost.request_id == request.request_id))
    clarity.slack.clear()
    await agent.set_status(clarity.graph, request.request_id, RequestStatus.PROCESSING)
    await clarity.run_jobs()
    assert clarity.slack.calls("chat.postMessage") == []
    [update] = clarity.slack.calls("chat.update")
    assert update["ts"] == request.slack_thread_ts
    assert (await clarity.request(request.request_id)).slack_thread_ts == request.slack_thread_ts


async def test_posts_whose_answer_was_lost_are_not_made_twice(clarity: Clarity) -> None:
    """Slack posted, but the answer never came back: the next try finds the post."""
    clarity.slack.lose_next("chat.postMessage")  # the root message
    request = await clarity.file()
    channel = str(request.slack_channel_id)
    [root] = [m for m in clarity.slack.messages[channel] if "thread_ts" not in m]
    assert request.slack_thread_ts == root["ts"]
    assert len(clarity.slack.calls("conversations.history")) == 1

    await agent.set_status(clarity.graph, request.request_id, RequestStatus.PROCESSING)
    await agent.activity(clarity.graph, request.request_id, "reading the code")
    await agent.ask(clarity.graph, request.request_id, "Dark or light?", ["Dark", "Light"])
    clarity.slack.lose_next("chat.postMessage", times=2)  # the question and the progress
    await clarity.run_jobs()
    replies = [m for m in clarity.slack.messages[channel] if m.get("thread_ts") == root["ts"]]
    keys = [m["metadata"]["event_payload"]["key"] for m in replies]
    assert sorted(k.split(":")[1] for k in keys) == ["progress", "question"]
    assert len(clarity.slack.calls("conversations.replies")) == 2
    # What was found is recorded as posted: edits go to those messages.
    posts = {p.purpose: p.ts for p in await clarity.posts(request.request_id)}
    assert {posts["question"], posts["progress"]} == {m["ts"] for m in replies}


async def test_first_tries_post_without_looking(clarity: Clarity) -> None:
    request = await clarity.file()
    await agent.ask(clarity.graph, request.request_id, "Dark or light?", ["Dark", "Light"])
    await clarity.run_jobs()
    assert len(_thread_posts(clarity.slack)) == 1
    assert clarity.slack.calls("conversations.history") == []
    assert clarity.slack.calls("conversations.replies") == []
