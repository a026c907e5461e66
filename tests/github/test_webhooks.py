"""POST /github/webhook over HTTP with signed deliveries: triggers, answers, merged PRs."""

from __future__ import annotations

import json

import pytest
from fakes import github_events as gh
from fakes.harness import Harness, running_clarity, sign, types_of


async def file_request(h: Harness, **issue_fields: object) -> str:
    status, body = await h.webhook("issues", gh.labeled(**issue_fields))
    assert status == 200 and body["result"] == "filed", body
    (row,) = [r for r in await h.requests() if r.issue_id == issue_fields.get("issue_id", 5550012)]
    return row.request_id


async def test_label_files_one_request_with_issue_fields_and_comments(harness: Harness) -> None:
    rid = await file_request(harness)
    row = await harness.request(rid)
    assert row.origin.value == "github_issue" and row.repo == gh.REPO
    assert (row.issue_id, row.issue_number, row.issue_author) == (5550012, 12, "octocat")
    assert row.issue_title == "Add a dark mode toggle" and row.issue_labels == ["clarity"]
    assert row.issue_url == f"https://github.com/{gh.REPO}/issues/12"
    assert (row.repository_owner, row.repository_name_only, row.repository_id) == (
        "octo-org",
        "widgets",
        1296269,
    )
    assert row.description == "The settings page needs a dark mode switch."
    initial = (await harness.messages(rid))[0]
    assert (initial.type.value, initial.source.value, initial.actor_id) == (
        "initial_request",
        "github",
        "octocat",
    )
    await harness.run_jobs()
    assert [c.body["issueNumber"] for c in harness.runner.accepted] == [12]
    (comment,) = harness.github.comments_on(gh.REPO, 12)
    assert rid in comment["body"]


async def test_same_delivery_twice_has_one_effect(harness: Harness) -> None:
    payload = gh.labeled()
    first = await harness.webhook("issues", payload, delivery="d-1")
    second = await harness.webhook("issues", payload, delivery="d-1")
    assert first[1]["result"] == "filed" and second[1]["result"] == "duplicate"
    # Relabelling (a new delivery) does not file a second request either.
    third = await harness.webhook("issues", payload, delivery="d-2")
    assert third[1]["result"] == "already filed"
    await harness.run_jobs()
    assert len(await harness.requests()) == 1
    assert len(harness.github.comments_on(gh.REPO, 12)) == 1
    assert len(harness.runner.accepted) == 1


@pytest.mark.parametrize(
    "signature",
    ["", "sha256=" + "0" * 64, "sha1=abc", "sha256=bad"],
    ids=["missing", "wrong", "sha1", "garbage"],
)
async def test_bad_signature_is_refused_before_anything(harness: Harness, signature: str) -> None:
    before = await harness.counts()
    status, body = await harness.webhook("issues", gh.labeled(), signature=signature)
    assert status == 401 and body["error"]["code"] == "unauthorized"
    assert await harness.counts() == before


async def test_body_signed_with_another_secret_is_refused(harness: Harness) -> None:
    before = await harness.counts()
    payload = gh.labeled()
    forged = sign(json.dumps(payload).encode(), secret="not-our-secret")
    assert (await harness.webhook("issues", payload, signature=forged))[0] == 401
    assert await harness.counts() == before


async def test_no_webhook_secret_means_no_webhooks(db_url: str) -> None:
    async with running_clarity(db_url, github_webhook_secret=None) as h:
        before = await h.counts()
        assert (await h.webhook("issues", gh.labeled()))[0] == 401
        assert await h.counts() == before


@pytest.mark.parametrize(
    ("event", "payload"),
    [
        ("ping", gh.ping()),
        ("star", {"action": "created", "repository": gh.repository()}),
        ("issues", {**gh.labeled(), "action": "opened"}),
        ("issues", gh.labeled(label="bug")),
        ("issue_comment", gh.comment_created("hi", kind="Bot", author="ci[bot]")),
        ("pull_request", {**gh.pr_closed(3, merged=True), "action": "opened"}),
    ],
    ids=["ping", "unhandled event", "other action", "other label", "bot comment", "pr opened"],
)
async def test_events_we_do_not_act_on_get_2xx_and_no_effect(
    harness: Harness, event: str, payload: dict[str, object]
) -> None:
    before = await harness.counts()
    status, _ = await harness.webhook(event, payload)
    assert status == 200
    assert await harness.counts() == before


async def test_signed_but_malformed_payload_is_400_and_writes_nothing(harness: Harness) -> None:
    before = await harness.counts()
    payload = gh.labeled()
    del payload["issue"]["number"]
    assert (await harness.webhook("issues", payload))[0] == 400
    assert await harness.counts() == before


async def test_outsiders_get_a_polite_refusal_and_no_dispatch(harness: Harness) -> None:
    status, body = await harness.webhook("issues", gh.labeled(association="NONE"))
    assert status == 200 and body["result"] == "refused"
    await harness.run_jobs()
    assert await harness.requests() == [] and harness.runner.calls == []
    (comment,) = harness.github.comments_on(gh.REPO, 12)
    assert comment["body"].startswith("Sorry @maintainer")


async def test_repositories_outside_the_allowlist_are_refused(db_url: str) -> None:
    async with running_clarity(db_url, clarity_allowed_repos="octo-org/other") as h:
        assert (await h.webhook("issues", gh.labeled()))[1]["result"] == "refused"
        await h.run_jobs()
        assert await h.requests() == []
        assert "not enabled" in h.github.comments_on(gh.REPO, 12)[0]["body"]


async def awaiting(h: Harness) -> str:
    rid = await file_request(h)
    await h.run_jobs()
    status, _ = await h.api(
        "POST",
        f"/requests/{rid}/messages",
        {
            "type": "clarification_ask",
            "content": "Light or dark default?",
            "metadata": {"options": ["Light", "Dark"]},
        },
    )
    assert status == 201
    await h.run_jobs()
    return rid


async def test_human_comment_answers_a_waiting_request(harness: Harness) -> None:
    rid = await awaiting(harness)
    question = harness.github.comments_on(gh.REPO, 12)[-1]["body"]
    assert "Light or dark default?" in question and "- Dark" in question
    status, body = await harness.webhook("issue_comment", gh.comment_created("Dark, please"))
    assert status == 200 and body["result"] == "answered"
    assert (await harness.request(rid)).status.value == "processing"
    answer = (await harness.messages(rid))[-1]
    assert (answer.type.value, answer.actor_id, answer.content) == (
        "clarification_answer",
        "octocat",
        "Dark, please",
    )
    # Answers from every door claim the question and record which one they answer.
    question = next(m for m in await harness.messages(rid) if m.type.value == "clarification_ask")
    assert answer.metadata_ == {
        "issueCommentId": 777001,
        "answeredVia": "issue_comment",
        "questionMessageId": question.id,
    }
    await harness.run_jobs()
    last = harness.runner.accepted[-1].body
    assert last["kind"] == "clarification_answer"
    assert last["conversation"][-1]["content"] == "Dark, please"


async def test_comments_that_are_not_answers_have_no_effect(harness: Harness) -> None:
    rid = await file_request(harness)
    await harness.run_jobs()  # processing, not waiting
    before = await harness.counts()
    assert (await harness.webhook("issue_comment", gh.comment_created("+1")))[1]["result"] == (
        "ignored (processing)"
    )
    assert (
        await harness.webhook("issue_comment", gh.comment_created("me too", association="NONE"))
    )[1]["result"] == "ignored"
    assert await harness.counts() == {
        **before,
        "clarity_inbound_deliveries": before["clarity_inbound_deliveries"] + 1,
    }
    assert (await harness.request(rid)).status.value == "processing"


async def with_pr(h: Harness, number: int = 34) -> str:
    rid = await file_request(h)
    await h.run_jobs()
    status, _ = await h.api(
        "PATCH",
        f"/requests/{rid}/status",
        {
            "status": "pr_created",
            "prUrl": f"https://github.com/{gh.REPO}/pull/{number}",
            "prNumber": number,
            "costUsd": 1.25,
            "durationMs": 125_000,
        },
    )
    assert status == 200
    await h.run_jobs()
    return rid


async def test_merged_pr_completes_the_request(harness: Harness) -> None:
    rid = await with_pr(harness)
    assert "pull/34" in harness.github.comments_on(gh.REPO, 12)[-1]["body"]
    payload = gh.pr_closed(34, merged=True, full_name="Octo-Org/Widgets")
    status, body = await harness.webhook("pull_request", payload)
    assert status == 200 and body["result"] == "completed"
    row = await harness.request(rid)
    assert row.status.value == "completed" and row.processed_at is not None
    merged = (await harness.messages(rid))[-1]
    assert merged.content == "Pull request #34 was merged by @maintainer"
    assert merged.metadata_ is not None and merged.metadata_["toStatus"] == "completed"
    await harness.run_jobs()
    done = harness.github.comments_on(gh.REPO, 12)[-1]["body"]
    assert done.startswith("✅ Done") and "$1.25" in done and "2m 5s" in done


async def test_pr_closed_unmerged_is_recorded_only(harness: Harness) -> None:
    rid = await with_pr(harness)
    status, body = await harness.webhook("pull_request", gh.pr_closed(34, merged=False))
    assert status == 200 and body["result"] == "closed"
    assert (await harness.request(rid)).status.value == "pr_created"
    assert (await harness.messages(rid))[-1].content.endswith(
        "closed without merging by @maintainer"
    )


async def test_relabelling_a_failed_request_retries_it(harness: Harness) -> None:
    rid = await file_request(harness)
    harness.runner.always_fail()
    await harness.run_jobs()
    assert (await harness.request(rid)).status.value == "error"
    assert "label again to retry" in harness.github.comments_on(gh.REPO, 12)[-1]["body"]
    harness.runner.recover()
    assert (await harness.webhook("issues", gh.labeled()))[1]["result"] == "retried"
    await harness.run_jobs()
    assert harness.runner.accepted[-1].body["kind"] == "retry"
    assert (await harness.request(rid)).retry_count == 1
    assert "retry" in types_of(await harness.messages(rid))
