"""A request page's changes section: a local branch's diff (file:// remotes), else the PR link.

The repository is a real bare one made here, as the demo's publish job leaves it: a default
branch `main` and the request's branch pushed beside it.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from storage.models import MessageType, RequestStatus
from storage.repositories import FeatureRequestRepository
from tests.slack.fake_slack import FakeSlack
from tests.web.conftest import Served, screenshot_path, serve

BRANCH = "clarity/abc123-rate-limits"
GIT_ENV = {
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    "HOME": "/nonexistent",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "LANG": "C.UTF-8",
}


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=GIT_ENV, check=True, capture_output=True, text=True
    )
    return done.stdout


@dataclass
class Remotes:
    """A file:// GITHUB_GIT_URL base and the working copy that pushed to it."""

    base: str
    work: Path


@pytest.fixture
def remotes(tmp_path: Path) -> Remotes:
    """`<base>acme/app.git`: main, and BRANCH with two changed files; main moved on since."""
    root = tmp_path / "git"
    bare = root / "acme" / "app.git"
    bare.mkdir(parents=True)
    git(bare, "init", "--quiet", "--bare", "--initial-branch=main")
    work = tmp_path / "work"
    git(tmp_path, "clone", "--quiet", str(bare), str(work))
    (work / "app").mkdir()
    (work / "app" / "limits.py").write_text("import time\nLIMIT = 10\n\n\ndef allowed(key):\n")
    (work / "README.md").write_text("# app\n")
    git(work, "add", ".")
    git(work, "commit", "--quiet", "-m", "start")
    git(work, "push", "--quiet", "origin", "main")
    git(work, "switch", "--quiet", "-c", BRANCH)
    (work / "app" / "limits.py").write_text(
        "import time\nLIMIT = 100\nWINDOW_S = 60\n\n\ndef allowed(key):\n"
    )
    (work / "app" / "banner.html").write_text("<script>alert('x')</script>\n")
    git(work, "add", ".")
    git(work, "commit", "--quiet", "-m", "rate limits")
    git(work, "push", "--quiet", "origin", BRANCH)
    # The default branch moves on: not part of what the request's branch changes.
    git(work, "switch", "--quiet", "main")
    (work / "README.md").write_text("# app\n\nMAIN ONLY LINE\n")
    git(work, "commit", "--quiet", "-am", "docs")
    git(work, "push", "--quiet", "origin", "main")
    return Remotes(base=f"file://{root}/", work=work)


@pytest.fixture
async def local(db_url: str, fake_slack: FakeSlack, remotes: Remotes) -> AsyncIterator[Served]:
    """The server with GITHUB_GIT_URL at the local repositories (and no GitHub App)."""
    async with serve(db_url, fake_slack, github_git_url=remotes.base) as value:
        yield value


async def _published(served: Served, request_id: str, repo: str = "acme/app") -> None:
    """A request whose branch the demo's publish job pushed (its PR link is its own page)."""
    await served.add_request(
        request_id,
        repo=repo,
        status=RequestStatus.PR_CREATED,
        pr_url=f"{served.url}/requests/{request_id}#changes",
        pr_branch_name=BRANCH,
    )


def _section(body: str) -> str:
    start = body.index('<section id="changes"')
    return body[start : body.index("</section>", start)]


async def test_a_local_branch_shows_its_diff_against_the_default_branch(local: Served) -> None:
    await _published(local, "req-chg")
    client = await local.client()
    try:
        status, body, _ = await client.get("/requests/req-chg")
    finally:
        await client.close()
    assert status == 200
    section = _section(body)
    assert f"Branch <code>{BRANCH}</code> against <code>main</code>" in section
    assert "2 files changed, 3 insertions(+), 1 deletion(-)" in section
    # The same coloured lines as an agent's file change.
    assert '<span class="d-del">-LIMIT = 10</span>' in section
    assert '<span class="d-add">+LIMIT = 100</span>' in section
    assert '<span class="d-add">+WINDOW_S = 60</span>' in section
    assert '<span class="d-meta">+++ b/app/banner.html</span>' in section
    assert '<span class="d-meta">new file mode 100644</span>' in section
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in section
    assert "<script>alert" not in body
    # What only the default branch changed since is not the request's.
    assert "MAIN ONLY LINE" not in section
    # The PR link is this very page: no link out, and the header's link points here.
    assert "shows the changes" not in section
    assert f'href="{local.url}/requests/req-chg#changes"' in body


async def test_a_long_diff_is_cut_at_whole_lines(local: Served) -> None:
    await _published(local, "req-long")
    local.dash.changes.max_bytes = 200
    client = await local.client()
    try:
        _, body, _ = await client.get("/requests/req-long")
    finally:
        await client.close()
    section = _section(body)
    assert 'id="changes-truncated"' in section
    assert f"git diff main...{BRANCH}" in section
    assert "2 files changed" in section  # the totals still count everything
    shown = section[section.index('<pre class="diff">') : section.index("</pre>")]
    assert "+++ b/app/banner.html" in shown and "LIMIT = 100" not in shown


async def test_what_cannot_be_shown_is_said(local: Served) -> None:
    await _published(local, "req-gone")
    await local.add_request(
        "req-norepo",
        repo="acme/nope",
        status=RequestStatus.PR_CREATED,
        pr_url=f"{local.url}/requests/req-norepo#changes",
        pr_branch_name=BRANCH,
    )
    await local.add_request(
        "req-option",
        status=RequestStatus.PR_CREATED,
        pr_url=f"{local.url}/requests/req-option#changes",
        pr_branch_name="--output=clarity-pwned",
    )
    async with local.session_factory.begin() as session:
        await FeatureRequestRepository(session).update_fields(
            "req-gone", pr_branch_name="clarity/never-pushed"
        )
    client = await local.client()
    try:
        expected = {
            "req-gone": "The branch clarity/never-pushed is not in the repository.",
            "req-norepo": "There is no repository acme/nope.",
            "req-option": "This request&#39;s branch cannot be shown.",
        }
        for request_id, sentence in expected.items():
            status, body, _ = await client.get(f"/requests/{request_id}")
            assert status == 200
            assert sentence in _section(body), request_id
            assert '<pre class="diff">' not in _section(body)
    finally:
        await client.close()


async def test_other_remotes_link_to_the_pull_request(served: Served) -> None:
    await served.add_request(
        "req-gh",
        status=RequestStatus.PR_CREATED,
        pr_url="https://github.com/acme/app/pull/43",
        pr_number=43,
        pr_branch_name=BRANCH,
    )
    await served.add_request("req-none")
    client = await served.client()
    try:
        _, body, _ = await client.get("/requests/req-gh")
        section = _section(body)
        assert '<a href="https://github.com/acme/app/pull/43">Pull request #43</a>' in section
        assert '<pre class="diff">' not in section
        _, body, _ = await client.get("/requests/req-none")
        assert 'id="changes"' not in body
    finally:
        await client.close()


async def test_live_updates_carry_the_changes_when_the_branch_moved(
    local: Served, remotes: Remotes
) -> None:
    await local.add_request("req-live", status=RequestStatus.PROCESSING)
    await local.add_message("req-live", MessageType.AGENT_THINKING, "looking around")
    client = await local.client()
    try:
        _, body, _ = await client.get("/requests/req-live")
        assert 'id="changes"' not in body
        # A full refresh has the section (empty: no branch yet).
        status, text, _ = await client.get("/requests/req-live/live?after=0")
        first = json.loads(text)
        assert status == 200 and first["changes"] == "" and first["last"] > 0

        # Agent activity alone does not read the branch again.
        await local.add_message("req-live", MessageType.AGENT_THINKING, "working")
        _, text, _ = await client.get(f"/requests/req-live/live?after={first['last']}")
        update = json.loads(text)
        assert "changes" not in update

        # The publish job pushes the branch and records the PR: the page gets the diff.
        async with local.session_factory.begin() as session:
            await local.clarity.graph.lifecycle.published(
                session,
                "req-live",
                pr_url=f"{local.url}/requests/req-live#changes",
                pr_number=None,
                branch=BRANCH,
                commit=git(remotes.work, "rev-parse", BRANCH).strip(),
                created=True,
                final=True,
            )
        _, text, _ = await client.get(f"/requests/req-live/live?after={update['last']}")
        published = json.loads(text)
        assert '<span class="d-add">+LIMIT = 100</span>' in published["changes"]
        assert 'id="changes"' in published["changes"]
    finally:
        await client.close()


async def test_the_diff_appears_on_an_open_page_when_the_branch_is_published(
    local: Served, remotes: Remotes, browser: Any
) -> None:
    await local.add_request("req-page", status=RequestStatus.PROCESSING)
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = await context.new_page()
        await page.goto(await local.login_link())
        await page.get_by_role("button", name="Sign in").click()
        await page.goto(local.url + "/requests/req-page")
        await local.following("req-page")
        await page.evaluate("window.__sameDocument = true")
        await expect(page.locator("#changes")).to_have_count(0)

        async with local.session_factory.begin() as session:
            await local.clarity.graph.lifecycle.published(
                session,
                "req-page",
                pr_url=f"{local.url}/requests/req-page#changes",
                pr_number=None,
                branch=BRANCH,
                commit=git(remotes.work, "rev-parse", BRANCH).strip(),
                created=True,
                final=True,
            )
        await expect(page.locator("#status")).to_have_text("Pull request open")
        await expect(page.locator("#changes .d-add").first).to_have_text(
            "+<script>alert('x')</script>"
        )
        await expect(page.locator("#changes .d-del")).to_have_text("-LIMIT = 10")
        assert await page.evaluate("window.__sameDocument") is True
        await page.locator("#changes").screenshot(path=screenshot_path("request-changes"))
    finally:
        await context.close()
