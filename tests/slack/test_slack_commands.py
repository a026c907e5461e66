"""`/clarity` over real HTTP: filing by command and by modal, and the ephemeral answers."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from bot.dispatch import DISPATCH_JOB
from storage.models import (
    ChannelSetting,
    InboundDelivery,
    MessageSource,
    MessageType,
    RequestOrigin,
    RequestStatus,
)
from tests.slack.fake_slack import FakeSlack
from tests.slack.harness import Clarity, running_clarity


async def test_command_files_a_request_posts_its_root_and_queues_its_dispatch(
    clarity: Clarity,
) -> None:
    sent = await clarity.sender.command(
        "acme/web Add a dark mode toggle to the settings page\nIt should remember the choice.",
        user="U0ALICE",
        user_name="alice",
        channel="C0GENERAL",
        channel_name="general",
    )
    # Acked at once with an empty body: the root message in the channel is the answer.
    assert sent.status == 200 and sent.text == ""
    await clarity.settle()

    [request] = await clarity.requests()
    assert request.request_id.startswith("req_")
    assert request.origin == RequestOrigin.SLACK
    assert request.status == RequestStatus.PENDING
    assert request.repo == "acme/web"
    assert request.title == "Add a dark mode toggle to the settings page"
    assert request.description.endswith("It should remember the choice.")
    assert (request.slack_user_id, request.slack_user_name) == ("U0ALICE", "alice")
    assert (request.slack_channel_id, request.slack_channel_name) == ("C0GENERAL", "general")
    assert request.response_url == sent.response_url
    assert request.repository_url == "https://github.com/acme/web"
    assert request.repository_name == "acme/web"
    assert (request.repository_owner, request.repository_name_only) == ("acme", "web")
    assert request.slack_thread_ts is None

    [message] = await clarity.messages(request.request_id)
    assert message.type == MessageType.INITIAL_REQUEST
    assert message.source == MessageSource.SLACK
    assert (message.actor_id, message.actor_name) == ("U0ALICE", "alice")

    # The dispatch was recorded in the same transaction as the request.
    [dispatch] = await clarity.jobs(DISPATCH_JOB)
    assert dispatch.payload == {"requestId": request.request_id, "kind": "initial", "attempt": 1}
    assert dispatch.status == "queued"

    await clarity.run_jobs()
    [root] = clarity.slack.calls("chat.postMessage")
    assert root["channel"] == "C0GENERAL"
    assert "thread_ts" not in root.params
    rendered = json.dumps(root["blocks"])
    for expected in ("acme/web", "<@U0ALICE>", "Pending", request.request_id, "cancel_request"):
        assert expected in rendered
    request = await clarity.request(request.request_id)
    assert request.slack_thread_ts is not None
    [post] = await clarity.posts(request.request_id)
    assert (post.purpose, post.ts, post.channel_id) == (
        "root",
        request.slack_thread_ts,
        "C0GENERAL",
    )

    # Running the jobs again posts nothing more.
    await clarity.run_jobs()
    assert len(clarity.slack.calls("chat.postMessage")) == 1


async def test_same_command_delivered_twice_files_once(clarity: Clarity) -> None:
    for _ in range(2):
        sent = await clarity.sender.command("acme/web add a button", trigger_id="1.same-trigger")
        assert sent.status == 200
        await clarity.settle()
    assert len(await clarity.requests()) == 1


async def test_bad_input_gets_help_and_writes_nothing(clarity: Clarity) -> None:
    cases = {
        "acme/web": "Describe what to build",
        "help": "/clarity owner/repo what to build",
        "repo not-a-repo": "/clarity repo owner/repo",
        "status": "Say which request",
        "acme/": "not a repository name",
    }
    for text, expected in cases.items():
        sent = await clarity.sender.command(text)
        assert sent.status == 200
        assert expected in sent.text, (text, sent.text)
    await clarity.settle()
    assert await clarity.requests() == []
    assert await clarity.jobs() == []


async def test_default_repository_lets_commands_leave_it_out(clarity: Clarity) -> None:
    sent = await clarity.sender.command("add a search box", channel="C0DESIGN")
    await clarity.settle()
    assert "no default repository" in clarity.slack.responses[-1]["text"]
    assert clarity.slack.responses[-1]["response_type"] == "ephemeral"
    assert await clarity.requests() == []

    sent = await clarity.sender.command("repo acme/design-system", channel="C0DESIGN")
    assert sent.status == 200
    await clarity.settle()
    assert "acme/design-system" in clarity.slack.responses[-1]["text"]
    async with clarity.services.session_factory() as session:
        setting = await session.get(ChannelSetting, "C0DESIGN")
    assert setting is not None and setting.default_repo == "acme/design-system"

    await clarity.sender.command("add a search box", channel="C0DESIGN")
    await clarity.settle()
    [request] = await clarity.requests()
    assert request.repo == "acme/design-system"
    assert request.description == "add a search box"
    # Another channel has no default.
    await clarity.sender.command("add a search box", channel="C0OTHER")
    await clarity.settle()
    assert len(await clarity.requests()) == 1


async def test_modal_filing_with_inline_validation(clarity: Clarity) -> None:
    await clarity.sender.command("repo acme/web", channel="C0GENERAL")
    await clarity.settle()
    sent = await clarity.sender.command("", channel="C0GENERAL", channel_name="general")
    assert sent.status == 200 and sent.text == ""
    await clarity.settle()
    [opened] = clarity.slack.calls("views.open")
    view = opened["view"]
    assert view["callback_id"] == "clarity_file_request"
    assert view["blocks"][0]["element"]["initial_value"] == "acme/web"
    metadata = json.loads(view["private_metadata"])
    assert metadata["channelId"] == "C0GENERAL"

    bad = await clarity.sender.submit_view(
        "clarity_file_request",
        {"repo": {"repo": "nope"}, "description": {"description": "  "}},
        private_metadata=metadata,
    )
    assert bad.status == 200
    assert bad.json["response_action"] == "errors"
    assert set(bad.json["errors"]) == {"repo", "description"}
    await clarity.settle()
    assert await clarity.requests() == []

    good = await clarity.sender.submit_view(
        "clarity_file_request",
        {"repo": {"repo": "acme/api"}, "description": {"description": "Add rate limiting"}},
        private_metadata=metadata,
        view_id="V0FILEMODAL",
        user="U0BOB",
        user_name="bob",
    )
    assert good.status == 200 and good.text == ""
    await clarity.settle()
    # The same submission delivered again has no second effect.
    await clarity.sender.submit_view(
        "clarity_file_request",
        {"repo": {"repo": "acme/api"}, "description": {"description": "Add rate limiting"}},
        private_metadata=metadata,
        view_id="V0FILEMODAL",
        user="U0BOB",
    )
    await clarity.settle()
    [request] = await clarity.requests()
    assert (request.repo, request.description, request.slack_user_id) == (
        "acme/api",
        "Add rate limiting",
        "U0BOB",
    )
    assert request.slack_channel_id == "C0GENERAL"
    assert len(await clarity.jobs(DISPATCH_JOB)) == 1
    await clarity.run_jobs()
    [root] = clarity.slack.calls("chat.postMessage")
    assert root["channel"] == "C0GENERAL"


async def test_list_status_stats_and_help_answer_privately(clarity: Clarity) -> None:
    first = await clarity.file("acme/web add dark mode")
    await clarity.file("acme/api add rate limiting", user="U0BOB", user_name="bob")
    clarity.slack.responses.clear()

    await clarity.sender.command("list", user="U0ALICE")
    await clarity.settle()
    listing = clarity.slack.responses[-1]["text"]
    assert first.request_id in listing and "acme/api" not in listing

    await clarity.sender.command(f"status {first.request_id}")
    await clarity.settle()
    status = clarity.slack.responses[-1]["text"]
    assert first.request_id in status and "Pending" in status

    await clarity.sender.command("status req_doesnotexist")
    await clarity.settle()
    assert "No request" in clarity.slack.responses[-1]["text"]

    await clarity.sender.command("stats")
    await clarity.settle()
    stats = clarity.slack.responses[-1]["text"]
    assert "Last 7 days" in stats and "2" in stats

    assert all(r["response_type"] == "ephemeral" for r in clarity.slack.responses)
    help_ack = await clarity.sender.command("help")
    assert "/clarity list" in help_ack.text


async def test_allowlist_refuses_others_politely(db_url: str, fake_slack: FakeSlack) -> None:
    async with running_clarity(db_url, fake_slack, clarity_allowed_slack_users="U0BOB") as clarity:
        refused = await clarity.sender.command("acme/web add dark mode", user="U0ALICE")
        await clarity.settle()
        assert "not enabled for you" in refused.text
        assert await clarity.requests() == []
        await clarity.sender.command("acme/web add dark mode", user="U0BOB")
        await clarity.settle()
        assert len(await clarity.requests()) == 1
        async with clarity.services.session_factory() as session:
            deliveries = await session.scalar(select(func.count()).select_from(InboundDelivery))
        assert deliveries == 1


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        ({"runner_url": None, "clarity_runner": "http"}, "no runner is configured"),
        (
            {"clarity_runner": "local", "clarity_agent_cli": "no-such-claude-cli --x"},
            "`no-such-claude-cli` (CLARITY_AGENT_CLI) is not installed",
        ),
    ],
)
async def test_without_a_runner_the_person_is_told_plainly_and_gets_no_retry_button(
    db_url: str, fake_slack: FakeSlack, settings: dict[str, object], said: str
) -> None:
    async with running_clarity(
        db_url, fake_slack, handlers=lambda graph: graph.jobs, **settings
    ) as clarity:
        assert clarity.graph.dispatcher.problem is not None
        assert said in clarity.graph.dispatcher.problem
        request = await clarity.file()
        await clarity.run_jobs()
        request = await clarity.request(request.request_id)
        assert request.status.value == "error"
        error = (await clarity.messages(request.request_id))[-1]
        assert error.metadata_ is not None and error.metadata_["errorCode"] == "NO_RUNNER"
        posted = [c for c in fake_slack.calls("chat.postMessage") if c.get("thread_ts")]
        failure = next(c for c in posted if said in json.dumps(c["blocks"]))
        actions = [
            e["action_id"]
            for block in failure["blocks"]
            if block["type"] == "actions"
            for e in block["elements"]
        ]
        assert "retry_request" not in actions
        # Nothing was handed anywhere: no dispatch was POSTed, and no retry is queued.
        assert [j.status for j in await clarity.jobs("dispatch")] == ["done"]
