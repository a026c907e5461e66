"""Publishing a run's bundle: checks, push to a real git remote, the PR on the fake GitHub."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fakes.harness import Harness, running_clarity

from bot.requests.ids import short_id
from storage import artifacts
from storage.jobs import ClaimedJob

REPO = "octo/widgets"


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[Path]:
    """A bare repository `octo/widgets.git` with one commit on main, under tmp_path."""
    bare = tmp_path / "remotes" / "octo" / "widgets.git"
    bare.mkdir(parents=True)
    git("init", "--bare", "--quiet", "--initial-branch=main", cwd=bare)
    seed = tmp_path / "seed"
    git("clone", "--quiet", str(bare), str(seed), cwd=tmp_path)
    (seed / "README.md").write_text("# widgets\n")
    for args in (
        ("add", "."),
        ("-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", "start"),
        ("push", "--quiet", "origin", "HEAD:main"),
    ):
        git(*args, cwd=seed)
    yield bare


def make_bundle(remote: Path, work: Path, branch: str, files: dict[str, str]) -> bytes:
    """What the agent uploads: the branch's new commits, without what the remote has."""
    if not work.exists():
        git("clone", "--quiet", str(remote), str(work), cwd=remote.parent)
    existing = git("ls-remote", "origin", f"refs/heads/{branch}", cwd=work)
    git("fetch", "--quiet", "origin", cwd=work)
    if existing:
        git("checkout", "--quiet", "-B", branch, f"origin/{branch}", cwd=work)
    else:
        git("checkout", "--quiet", "-B", branch, "origin/main", cwd=work)
    for name, text in files.items():
        (work / name).write_text(text)
    git("add", ".", cwd=work)
    git("-c", "user.name=a", "-c", "user.email=a@a", "commit", "--quiet", "-m", "work", cwd=work)
    exclude = f"^origin/{branch}" if existing else "^origin/main"
    out = work.parent / "run.bundle"
    git("bundle", "create", str(out), branch, exclude, cwd=work)
    return out.read_bytes()


async def upload(h: Harness, rid: str, attempt: int, data: bytes, outcome: str) -> None:
    async def pieces() -> AsyncIterator[bytes]:
        yield data

    async with h.services.session_factory.begin() as session:
        stored = await artifacts.store(
            session,
            request_id=rid,
            kind=artifacts.BUNDLE,
            attempt=attempt,
            label=outcome,
            data=pieces(),
            limit=10_000_000,
        )
        await h.clarity.lifecycle.bundle_received(session, rid, attempt, outcome, stored.sha256)


async def file_request(h: Harness) -> str:
    status, body = await h.api(
        "POST", "/requests", {"repo": REPO, "description": "Add a dark mode toggle"}
    )
    assert status == 201, body
    await h.run_jobs()  # dispatched: processing
    return str(body["requestId"])


KINDS = frozenset({"dispatch", "publish", "github_comment"})


async def test_a_completed_run_is_pushed_and_opens_one_pr(
    db_url: str, remote: Path, tmp_path: Path
) -> None:
    git_url = f"file://{remote.parent.parent}/"
    async with running_clarity(db_url, kinds=KINDS, github_git_url=git_url) as h:
        rid = await file_request(h)
        branch = f"clarity/{short_id(rid)}-dark-mode"
        bundle = make_bundle(remote, tmp_path / "work", branch, {"dark.css": "body{}\n"})
        await upload(h, rid, 1, bundle, "completed")
        await h.run_jobs()

        head = git("rev-parse", f"refs/heads/{branch}", cwd=remote)
        assert head == git("rev-parse", "HEAD", cwd=tmp_path / "work")
        (created,) = h.github.calls_to("POST", f"/repos/{REPO}/pulls")
        assert created.body["head"] == branch and created.body["base"] == "main"
        assert created.body["draft"] is False
        assert rid in created.body["body"]
        row = await h.request(rid)
        assert row.status.value == "pr_created"
        assert (row.pr_branch_name, row.pr_number) == (branch, 1)
        assert row.pr_url == f"https://github.com/{REPO}/pull/1"

        # The same bundle again changes nothing: no second push, PR or message.
        messages = len(await h.messages(rid))
        (job,) = await h.jobs("publish")
        await h.clarity.publisher.run(
            ClaimedJob(job.id, job.kind, job.payload, job.request_id, 2, 3, job.dedupe_key)
        )
        assert len(h.github.calls_to("POST", f"/repos/{REPO}/pulls")) == 1
        assert len(await h.messages(rid)) == messages

        # A follow-up run on the same branch updates the same PR.
        status, _ = await h.api("PATCH", f"/requests/{rid}/status", {"status": "processing"})
        assert status == 200
        again = make_bundle(remote, tmp_path / "work", branch, {"dark.css": "body{color:#eee}\n"})
        await upload(h, rid, 2, again, "completed")
        await h.run_jobs()
        assert len(h.github.calls_to("POST", f"/repos/{REPO}/pulls")) == 1
        assert len(h.github.calls_to("PATCH", f"/repos/{REPO}/pulls/1")) == 1
        assert [m.type.value for m in await h.messages(rid)][-1] == "pr_updated"
        assert git("rev-parse", f"refs/heads/{branch}", cwd=remote) == git(
            "rev-parse", "HEAD", cwd=tmp_path / "work"
        )


async def test_a_bundle_with_a_secret_is_refused_and_nothing_is_pushed(
    db_url: str, remote: Path, tmp_path: Path
) -> None:
    git_url = f"file://{remote.parent.parent}/"
    async with running_clarity(db_url, kinds=KINDS, github_git_url=git_url) as h:
        rid = await file_request(h)
        branch = f"clarity/{short_id(rid)}-dark-mode"
        leaked = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
        bundle = make_bundle(
            remote, tmp_path / "work", branch, {"config.py": f"TOKEN = '{leaked}'\n"}
        )
        await upload(h, rid, 1, bundle, "completed")
        await h.run_jobs()

        assert git("ls-remote", str(remote), f"refs/heads/{branch}", cwd=tmp_path) == ""
        assert h.github.calls_to("POST", f"/repos/{REPO}/pulls") == []
        row = await h.request(rid)
        assert row.status.value == "error"
        error = (await h.messages(rid))[-1]
        assert error.metadata_ is not None and error.metadata_["errorCode"] == "PUBLISH_REFUSED"
        assert "config.py" in error.content and leaked not in error.content


async def test_a_bundle_of_another_branch_is_refused(
    db_url: str, remote: Path, tmp_path: Path
) -> None:
    git_url = f"file://{remote.parent.parent}/"
    async with running_clarity(db_url, kinds=KINDS, github_git_url=git_url) as h:
        rid = await file_request(h)
        bundle = make_bundle(remote, tmp_path / "work", "main", {"x.txt": "overwrite main\n"})
        await upload(h, rid, 1, bundle, "completed")
        await h.run_jobs()
        assert git("rev-parse", "refs/heads/main", cwd=remote) != git(
            "rev-parse", "HEAD", cwd=tmp_path / "work"
        )
        error = (await h.messages(rid))[-1]
        assert error.metadata_ is not None and error.metadata_["errorCode"] == "PUBLISH_REFUSED"


async def test_work_kept_after_a_question_is_a_draft_pr_and_the_request_waits(
    db_url: str, remote: Path, tmp_path: Path
) -> None:
    git_url = f"file://{remote.parent.parent}/"
    async with running_clarity(db_url, kinds=KINDS, github_git_url=git_url) as h:
        rid = await file_request(h)
        status, _ = await h.api(
            "POST",
            f"/requests/{rid}/messages",
            {"type": "clarification_ask", "content": "Light or dark?"},
        )
        assert status == 201
        branch = f"clarity/{short_id(rid)}-dark-mode"
        bundle = make_bundle(remote, tmp_path / "work", branch, {"wip.css": "/* wip */\n"})
        await upload(h, rid, 1, bundle, "asked")
        await h.run_jobs()
        (created,) = h.github.calls_to("POST", f"/repos/{REPO}/pulls")
        assert created.body["draft"] is True
        row = await h.request(rid)
        assert row.status.value == "awaiting_clarification"
        assert row.pr_number == 1 and row.pr_branch_name == branch
