"""The whole loop through real servers: Slack (fake), Clarity, the runner (fake), GitHub (fake)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from fakes import github_events as gh
from fakes.fake_github import FakeGitHub
from fakes.fake_runner import FakeRunner
from fakes.harness import API_TOKEN, APP_ID, WEBHOOK_SECRET, app_key, sign

from tests.slack.fake_slack import FakeSlack
from tests.slack.harness import BOT_TOKEN, Clarity, running_clarity

REPO = gh.REPO


@dataclass
class Loop:
    clarity: Clarity
    slack: FakeSlack
    runner: FakeRunner
    github: FakeGitHub
    http: aiohttp.ClientSession

    async def api(self, method: str, path: str, body: Any, token: str) -> tuple[int, Any]:
        """What the runner does: call the side-API with the job's token."""
        async with self.http.request(
            method,
            f"{self.clarity.url}/api{path}",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            return resp.status, await resp.json()

    async def webhook(self, event: str, payload: dict[str, Any]) -> tuple[int, Any]:
        body = json.dumps(payload).encode()
        async with self.http.post(
            f"{self.clarity.url}/github/webhook",
            data=body,
            headers={
                "X-GitHub-Event": event,
                "X-GitHub-Delivery": f"delivery-{time.monotonic_ns()}",
                "X-Hub-Signature-256": sign(body),
                "Content-Type": "application/json",
            },
        ) as resp:
            return resp.status, await resp.json()

    async def jobs_settled(self) -> None:
        """Run jobs until none is due, waiting out the progress throttle."""
        await self.clarity.run_jobs()
        interval = self.clarity.feature.progress_interval_s
        await asyncio.sleep(interval + 0.05)
        await self.clarity.run_jobs()

    def slack_calls(self) -> list[tuple[str, str]]:
        """(method, what) for each Slack call that changes something people see."""
        out = []
        for call in self.slack.calls():
            if call.method not in ("chat.postMessage", "chat.update", "reactions.add"):
                continue
            where = (
                "root" if not call.get("thread_ts") and call.method == "chat.postMessage" else ""
            )
            if call.method == "chat.update":
                where = "root" if call["ts"] == self._root_ts() else "thread"
            else:
                where = where or "thread"
            out.append((call.method, where))
        return out

    def _root_ts(self) -> str:
        first = next(c for c in self.slack.calls("chat.postMessage") if not c.get("thread_ts"))
        return str(first.get("ts") or "")


@asynccontextmanager
async def loop(db_url: str, **settings: Any) -> AsyncIterator[Loop]:
    private_pem, public_pem = app_key()
    async with FakeSlack() as slack:
        slack.add_user("U0ALICE", "alice")
        runner = await FakeRunner().start()
        github = await FakeGitHub(app_id=APP_ID, public_key=public_pem).start()
        values: dict[str, Any] = {
            "runner_url": runner.url,
            "clarity_api_token": API_TOKEN,
            "clarity_public_url": "http://clarity.test",
            "clarity_job_max_attempts": 3,
            "github_api_url": github.url,
            "github_app_id": APP_ID,
            "github_private_key": private_pem,
            "github_installation_id": str(github.installation_id),
            "github_webhook_secret": WEBHOOK_SECRET,
            **settings,
        }
        try:
            async with (
                running_clarity(
                    db_url,
                    slack,
                    handlers=lambda graph: graph.jobs,
                    progress_interval_s=0.5,
                    **values,
                ) as clarity,
                aiohttp.ClientSession() as http,
            ):
                yield Loop(clarity, slack, runner, github, http)
        finally:
            await runner.close()
            await github.close()


def visible(slack: FakeSlack) -> list[tuple[str, str]]:
    """Each Slack call people see: (method, text)."""
    return [
        (c.method, str(c.get("text")))
        for c in slack.calls()
        if c.method in ("chat.postMessage", "chat.update", "reactions.add", "chat.postEphemeral")
    ]


async def test_the_whole_loop(db_url: str) -> None:
    async with loop(db_url) as lp:
        # /clarity → root message, tracking issue, dispatch with the contract's fields.
        request = await lp.clarity.file(f"{REPO} add a dark mode toggle")
        await lp.jobs_settled()
        rid = request.request_id
        (job,) = lp.runner.accepted
        assert set(job.body) == {
            "requestId", "attempt", "kind", "repo", "title", "description", "branch",
            "prNumber", "issueNumber", "conversation", "apiUrl", "apiToken",
        }  # fmt: skip
        assert (job.body["kind"], job.body["repo"], job.body["issueNumber"]) == ("initial", REPO, 1)
        assert job.idempotency_key == f"{rid}:1"
        assert [e["type"] for e in job.body["conversation"]] == ["initial_request"]
        assert job.body["apiUrl"] == "http://clarity.test/api"
        token = job.body["apiToken"]
        (issue,) = lp.github.calls_to("POST", f"/repos/{REPO}/issues")
        assert rid in issue.body["body"]

        # 200 agent events, as fast as the runner can post them; the last one leaks a secret.
        for i in range(200):
            content = f"Read file {i}" if i < 199 else f"env has SLACK_BOT_TOKEN={BOT_TOKEN}"
            status, _ = await lp.api(
                "POST",
                f"/requests/{rid}/messages",
                {"type": "agent_tool_call", "content": content, "metadata": {"toolName": "Read"}},
                token,
            )
            assert status == 201
        await lp.jobs_settled()

        # The agent asks a question with two options; the user clicks one.
        status, _ = await lp.api(
            "POST",
            f"/requests/{rid}/messages",
            {"type": "clarification_ask", "content": "Follow the OS theme or a toggle?",
             "metadata": {"options": ["Follow the OS", "A toggle"]}},
            token,
        )  # fmt: skip
        assert status == 201
        await lp.jobs_settled()
        (question,) = [c for c in lp.slack.calls("chat.postMessage") if "OS theme" in c["text"]]
        option_blocks = [b for b in question["blocks"] if b["type"] == "actions"][1:]
        clicked = await lp.clarity.sender.click(
            "clarification_option", "A toggle", block_id=option_blocks[1]["block_id"]
        )
        assert clicked.status == 200
        await lp.clarity.settle()
        await lp.jobs_settled()
        second = lp.runner.accepted[-1]
        assert (second.body["kind"], second.idempotency_key) == (
            "clarification_answer",
            f"{rid}:2",
        )
        assert [(e["type"], e["content"]) for e in second.body["conversation"]][-2:] == [
            ("clarification_ask", "Follow the OS theme or a toggle?"),
            ("clarification_answer", "A toggle"),
        ]

        # The PR, then the merge on GitHub.
        status, _ = await lp.api(
            "PATCH",
            f"/requests/{rid}/status",
            {"status": "pr_created", "prUrl": f"https://github.com/{REPO}/pull/9", "prNumber": 9,
             "prBranchName": "clarity/dark-mode", "costUsd": 2.5, "durationMs": 300_000},
            second.body["apiToken"],
        )  # fmt: skip
        assert status == 200
        await lp.jobs_settled()
        status, merged = await lp.webhook("pull_request", gh.pr_closed(9, merged=True))
        assert (status, merged["result"]) == (200, "completed")
        await lp.jobs_settled()

        # The database has the whole trail.
        row = await lp.clarity.request(rid)
        assert row.status.value == "completed" and row.cost_usd == 250 and row.issue_number == 1
        trail = [m.type.value for m in await lp.clarity.messages(rid)]
        assert trail == [
            "initial_request",
            "processing_update",  # tracking issue opened: pending → issue_created
            "processing_started",
            *["agent_tool_call"] * 200,
            "clarification_ask",
            "clarification_answer",
            "processing_started",
            "pr_created",
            "processing_update",  # PR merged: → completed
        ]

        # And Slack got exactly these calls: 200 agent events became one progress edit.
        title = "add a dark mode toggle — octo-org/widgets —"
        calls = visible(lp.slack)
        assert calls == [
            ("chat.postMessage", f"{title} :gear: Working"),
            ("chat.postMessage", "Working: 1 step"),
            ("chat.update", "Working: 201 steps"),
            ("chat.update", f"{title} :question: Waiting for an answer"),
            ("chat.postMessage", "Clarity needs your input: Follow the OS theme or a toggle?"),
            ("chat.update", "Run finished: 201 steps"),
            ("chat.update", f"{title} :gear: Working"),
            ("chat.update", "Answered: Follow the OS theme or a toggle?"),
            ("chat.update", f"{title} :twisted_rightwards_arrows: Pull request open"),
            (
                "chat.postMessage",
                f":twisted_rightwards_arrows: *Pull request opened*: <https://github.com/{REPO}/pull/9|#9>",
            ),
            ("chat.update", f"{title} :white_check_mark: Completed"),
            ("chat.postMessage", "Completed. Total cost $2.50 · total time 5m 0s"),
            ("chat.postMessage", "Run finished: 1 step"),
        ]
        # The bot token the agent echoed reached Slack masked.
        everything = json.dumps([c.params for c in lp.slack.calls()])
        assert BOT_TOKEN not in everything
        assert "SLACK_BOT_TOKEN=[redacted]" in everything


async def test_runner_down_until_tries_run_out_then_retry(db_url: str) -> None:
    async with loop(db_url, clarity_job_max_attempts=3) as lp:
        lp.runner.always_fail(500)
        request = await lp.clarity.file(f"{REPO} add a dark mode toggle")
        await lp.jobs_settled()
        rid = request.request_id
        assert [c.status for c in lp.runner.calls] == [500, 500, 500]
        assert (await lp.clarity.request(rid)).status.value == "error"
        buttons = [
            element
            for call in lp.slack.calls("chat.postMessage")
            for block in call.get("blocks") or []
            if block["type"] == "actions"
            for element in block["elements"]
        ]
        (retry,) = [b for b in buttons if b["action_id"] == "retry_request"]
        error = (await lp.clarity.messages(rid))[-1]
        assert error.metadata_ is not None and error.metadata_["errorCode"] == "RUNNER_UNAVAILABLE"

        lp.runner.recover()
        clicked = await lp.clarity.sender.click("retry_request", retry["value"])
        assert clicked.status == 200
        await lp.clarity.settle()
        await lp.jobs_settled()
        accepted = lp.runner.accepted
        assert [(c.body["kind"], c.idempotency_key) for c in accepted] == [("retry", f"{rid}:2")]
        row = await lp.clarity.request(rid)
        assert row.status.value == "processing" and row.retry_count == 1


async def test_server_killed_before_dispatch_then_restarted(db_url: str) -> None:
    # First process: accepts /clarity, posts to Slack, and dies before any dispatch ran.
    async with loop(db_url) as first:
        slack_only = {k: v for k, v in first.clarity.pool.handlers.items() if k.startswith("slack")}
        first.clarity.pool.handlers = slack_only
        request = await first.clarity.file(f"{REPO} add a dark mode toggle")
        assert first.runner.calls == []
    # Second process on the same database: the runner receives the job exactly once.
    async with loop(db_url) as second:
        await asyncio.gather(second.clarity.run_jobs(), second.clarity.run_jobs())
        await second.jobs_settled()
        assert [c.body["requestId"] for c in second.runner.calls] == [request.request_id]
        assert second.runner.calls[0].idempotency_key == f"{request.request_id}:1"


async def test_agent_text_with_the_bot_token_reaches_slack_masked(db_url: str) -> None:
    async with loop(db_url) as lp:
        request = await lp.clarity.file(f"{REPO} add a dark mode toggle")
        await lp.jobs_settled()
        token = lp.runner.accepted[0].body["apiToken"]
        rid = request.request_id
        for body in (
            {"type": "agent_terminal", "content": f"echo {BOT_TOKEN}",
             "metadata": {"command": "env", "stdout": f"SLACK_BOT_TOKEN={BOT_TOKEN}"}},
            {"type": "clarification_ask", "content": f"Is {BOT_TOKEN} the token to use?"},
        ):  # fmt: skip
            status, _ = await lp.api("POST", f"/requests/{rid}/messages", body, token)
            assert status == 201
        await lp.jobs_settled()
        sent = json.dumps([c.params for c in lp.slack.calls()])
        assert BOT_TOKEN not in sent
        assert "Is [redacted] the token to use?" in sent
        # The database keeps what the agent said; only what leaves is masked.
        assert BOT_TOKEN in (await lp.clarity.messages(rid))[-1].content
