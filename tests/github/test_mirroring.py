"""GitHub as a destination: tracking issues for Slack requests, comments, scrubbing, failures."""

from __future__ import annotations

from fakes import github_events as gh
from fakes.harness import API_TOKEN, APP_ID, Harness, app_key, running_clarity

from bot.requests.events import RequestChange
from bot.requests.queue import DispatchKind, enqueue_dispatch
from bot.workers import WorkerPool
from storage.models import MessageSource, MessageType, RequestOrigin
from storage.repositories import (
    AppConfigRepository,
    FeatureRequestRepository,
    RequestMessagesRepository,
)
from storage.schemas import GitHubConfig


async def slack_request(h: Harness, request_id: str = "slack-req-1") -> str:
    """A request as the Slack front door records it (row, initial_request, event)."""
    async with h.services.session_factory.begin() as session:
        row = await FeatureRequestRepository(session).create(
            request_id=request_id,
            origin=RequestOrigin.SLACK,
            repo=gh.REPO,
            title="Dark mode",
            description="Add a dark mode toggle",
            slack_user_id="U1",
            slack_user_name="ada",
            slack_channel_id="C1",
            slack_channel_name="eng",
        )
        message = await RequestMessagesRepository(session).add_message(
            request_id, MessageType.INITIAL_REQUEST, MessageSource.SLACK, "Add a dark mode toggle"
        )
        await h.clarity.events.publish(session, RequestChange(row, message, True))
    return request_id


async def test_slack_request_opens_a_tracking_issue(harness: Harness) -> None:
    rid = await slack_request(harness)
    assert len(await harness.jobs("github_tracking_issue")) == 1
    # The tracking issue first (pending → issue_created), then dispatch (→ processing).
    async with harness.services.session_factory.begin() as session:
        await enqueue_dispatch(session, rid, DispatchKind.INITIAL, max_attempts=3)
    await harness.run_jobs()
    (call,) = harness.github.calls_to("POST", f"/repos/{gh.REPO}/issues")
    assert call.body["title"] == "Dark mode"
    assert "Filed from Slack by ada in #eng" in call.body["body"] and rid in call.body["body"]
    row = await harness.request(rid)
    assert (row.issue_number, row.issue_url) == (1, f"https://github.com/{gh.REPO}/issues/1")
    assert row.issue_id is not None and row.issue_author == "clarity-app[bot]"
    assert row.status.value == "processing"
    statuses = [
        (m.metadata_ or {}).get("toStatus") for m in await harness.messages(rid) if m.metadata_
    ]
    assert "issue_created" in statuses
    assert harness.runner.accepted[0].body["issueNumber"] == 1


async def test_first_dispatch_opens_the_tracking_issue_before_posting(harness: Harness) -> None:
    rid = await slack_request(harness)
    async with harness.services.session_factory.begin() as session:
        await enqueue_dispatch(session, rid, DispatchKind.INITIAL, max_attempts=3)
    only_dispatch = {"dispatch": harness.clarity.jobs["dispatch"]}
    await WorkerPool(harness.services, only_dispatch).run_until_idle()
    assert harness.runner.accepted[0].body["issueNumber"] == 1
    await harness.run_jobs()  # the tracking job finds the issue opened
    assert len(harness.github.calls_to("POST", f"/repos/{gh.REPO}/issues")) == 1
    moves = [(m.metadata_ or {}).get("toStatus") for m in await harness.messages(rid)]
    assert [s for s in moves if s] == ["issue_created"]
    assert (await harness.request(rid)).status.value == "processing"


async def test_github_down_does_not_hold_up_dispatch(harness: Harness) -> None:
    rid = await slack_request(harness)
    async with harness.services.session_factory.begin() as session:
        await enqueue_dispatch(session, rid, DispatchKind.INITIAL, max_attempts=3)
    harness.github.fail_next(1, status=502)  # the token exchange fails once
    only_dispatch = {"dispatch": harness.clarity.jobs["dispatch"]}
    await WorkerPool(harness.services, only_dispatch).run_until_idle()
    assert harness.runner.accepted[0].body["issueNumber"] is None
    assert (await harness.request(rid)).status.value == "processing"
    await harness.run_jobs()  # the tracking job retries; the issue is recorded, no going back
    row = await harness.request(rid)
    assert row.status.value == "processing" and row.issue_number == 1


async def test_no_tracking_issue_without_github(db_url: str) -> None:
    async with running_clarity(db_url, github_configured=False) as h:
        await slack_request(h)
        assert await h.jobs("github_tracking_issue") == []


async def test_secrets_are_masked_in_github_comments(harness: Harness) -> None:
    await harness.webhook("issues", gh.labeled())
    await harness.run_jobs()
    (row,) = await harness.requests()
    live = (await harness.api("GET", "/config/github"))[1]["token"]
    status, _ = await harness.api(
        "PATCH",
        f"/requests/{row.request_id}/status",
        {
            "status": "error",
            "errorCode": "AGENT_CRASHED",
            "errorMessage": f"curl -H 'Authorization: {API_TOKEN}' failed; token {live}",
        },
    )
    assert status == 200
    await harness.run_jobs()
    body = harness.github.comments_on(gh.REPO, 12)[-1]["body"]
    assert API_TOKEN not in body and live not in body
    assert body.count("[redacted]") == 2


async def test_github_failures_are_retried_then_given_up(harness: Harness) -> None:
    await harness.webhook("issues", gh.labeled(association="NONE"))
    harness.github.fail_next(1, status=502)
    await harness.run_jobs()
    assert len(harness.github.comments_on(gh.REPO, 12)) == 1  # second try worked
    await harness.webhook("issues", gh.labeled(association="NONE", full_name="octo-org/gone"))
    harness.github.fail_next(10, status=404)
    await harness.run_jobs()
    (failed,) = [j for j in await harness.jobs("github_comment") if j.status == "failed"]
    assert failed.attempts == 1  # a 404 is not retried


async def test_stored_app_config_is_used_when_the_environment_has_none(db_url: str) -> None:
    private_pem, _ = app_key()
    async with running_clarity(db_url, github_configured=False) as h:
        assert h.services.cipher is not None
        async with h.services.session_factory.begin() as session:
            await AppConfigRepository(session, h.services.cipher).set_github_config(
                GitHubConfig(
                    app_id=APP_ID,
                    private_key=private_pem,
                    webhook_secret="stored-webhook-secret",
                    installation_id=str(h.github.installation_id),
                )
            )
        status, body = await h.api("GET", "/config/github")
        assert status == 200 and body["token"] in h.github.tokens


async def test_cancelling_a_github_request_says_so_on_the_issue(harness: Harness) -> None:
    await harness.webhook("issues", gh.labeled())
    await harness.run_jobs()
    (row,) = await harness.requests()
    status, _ = await harness.api(
        "PATCH", f"/requests/{row.request_id}/status", {"status": "cancelled"}
    )
    assert status == 200
    await harness.run_jobs()
    assert "was cancelled" in harness.github.comments_on(gh.REPO, 12)[-1]["body"]


async def test_a_comment_whose_answer_was_lost_is_not_posted_twice(harness: Harness) -> None:
    await harness.webhook("issues", gh.labeled(association="NONE"))  # a polite refusal
    harness.github.lose_next("POST", f"/issues/{12}/comments")
    await harness.run_jobs()
    (comment,) = harness.github.comments_on(gh.REPO, 12)
    assert "<!-- clarity:comment:" in comment["body"]
    # The second try looked for its marker, found the comment and stopped there.
    assert len(harness.github.calls_to("GET", "/issues/12/comments")) == 1
    (job,) = await harness.jobs("github_comment")
    assert (job.status, job.attempts) == ("done", 2)


async def test_a_tracking_issue_whose_answer_was_lost_is_opened_once(harness: Harness) -> None:
    rid = await slack_request(harness)
    harness.github.lose_next("POST", f"/repos/{gh.REPO}/issues")
    async with harness.services.session_factory.begin() as session:
        await enqueue_dispatch(session, rid, DispatchKind.INITIAL, max_attempts=3)
    await harness.run_jobs()
    # Dispatch tried first and lost GitHub's answer; the tracking job found the issue.
    assert len(harness.github.calls_to("POST", f"/repos/{gh.REPO}/issues")) == 1
    assert list(harness.github.issues) == [(gh.REPO, 1)]
    row = await harness.request(rid)
    assert (row.issue_number, row.issue_url) == (1, f"https://github.com/{gh.REPO}/issues/1")
    assert row.status.value == "processing"


async def test_a_first_try_opens_without_looking(harness: Harness) -> None:
    rid = await slack_request(harness)
    await harness.run_jobs()
    assert harness.github.calls_to("GET", f"/repos/{gh.REPO}/issues") == []
    assert len(harness.github.calls_to("POST", f"/repos/{gh.REPO}/issues")) == 1
    assert (await harness.request(rid)).issue_number == 1
