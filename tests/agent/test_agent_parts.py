"""The agent program's parts that need no CLI: job document, prompt, scrubbing, branch
names, session archives, and the checkout's branch rules."""

from __future__ import annotations

import asyncio
import io
import os
import tarfile
from pathlib import Path

import pytest

from agent import credential, prompt, session
from agent.git import Checkout, GitError, branch_name, slugify
from agent.job import Job, JobError, load
from agent.outbox import Outbox
from agent.run import commit_message
from agent.scrub import Scrubber
from agent.sideapi import SideApi
from agent.stream import Activity
from tests.agent.conftest import REPO, Remote, git, make_job
from tests.agent.fake_sideapi import GIT_TOKEN, JOB_TOKEN, FakeSideApi


def test_branch_names() -> None:
    assert branch_name("req_4f2a9c1b7d3e", "Add a hello file!") == (
        "clarity/4f2a9c1b-add-a-hello-file"
    )
    assert branch_name("abc", "") == "clarity/abc"
    long = branch_name("req_12345678", "Make the widget's déjà-vu " + "very " * 20 + "fast")
    slug = long.removeprefix("clarity/12345678-")
    assert len(slug) <= 40 and slug == slugify(slug) and not slug.endswith("-")
    assert slugify("  Fix: crash on ÜBER-long names (#12)  ") == "fix-crash-on-ber-long-names-12"


def test_the_job_comes_from_a_file_the_environment_or_stdin(tmp_path: Path) -> None:
    api = FakeSideApi(url="http://127.0.0.1:9")
    document = make_job(api)
    path = tmp_path / "job.json"
    path.write_text(__import__("json").dumps(document))
    from_file = load(str(path), {"CLARITY_JOB": "not json"})
    assert from_file.request_id == document["requestId"] and from_file.repo == REPO
    from_env = load(None, {"CLARITY_JOB": path.read_text()}, stdin=io.StringIO(""))
    assert from_env == from_file
    assert load(None, {}, stdin=io.StringIO(path.read_text())) == from_file
    with pytest.raises(JobError, match="no job document"):
        load(None, {}, stdin=io.StringIO(""))
    for bad in (
        {"kind": "explode"},
        {"repo": "../etc"},
        {"apiUrl": "file:///x"},
        {"attempt": "1"},
        {"apiToken": ""},
    ):
        with pytest.raises(JobError):
            Job.parse({**document, **bad})


def test_prompts() -> None:
    api = FakeSideApi(url="http://127.0.0.1:9")
    conversation = [
        *make_job(api)["conversation"],
        {
            "type": "clarification_ask",
            "source": "system",
            "content": "Which file?",
            "metadata": {"options": ["a.txt", "b.txt"]},
        },
        {
            "type": "clarification_answer",
            "source": "slack",
            "actorName": "Ada",
            "content": "b.txt please",
            "metadata": {},
        },
    ]
    job = Job.parse(make_job(api, kind="clarification_answer", conversation=conversation))
    full = prompt.build(job, "clarity/x", resumed=False)
    assert full.startswith("# Add a hello file\n\nRepository: acme/widget (branch clarity/x)")
    # The initial request is the description: said once.
    assert full.count("Please add a hello file") == 1
    assert "**You asked:**\nWhich file?\n- a.txt\n- b.txt" in full
    assert "**Ada answered:**\nb.txt please" in full
    short = prompt.build(job, "clarity/x", resumed=True)
    assert short == "**Ada answered:**\nb.txt please\n\nContinue the work with the answer above."
    # Nothing new since the agent spoke: the resumed session gets the whole request.
    stale = Job.parse(make_job(api, kind="follow_up", conversation=conversation[:2]))
    assert prompt.build(stale, "clarity/x", resumed=True).startswith("# Add a hello file")
    rules = prompt.instructions(job, "clarity/x")
    assert "mcp__clarity__ask_user" in rules and "Do not push" in rules


def test_commit_messages_come_from_the_summary() -> None:
    assert commit_message("## **Add `hello`**\n\nWhy and how.", "t") == "Add hello\n\nWhy and how."
    assert commit_message("", "Title") == "Title"
    assert len(commit_message("x" * 200, "t").splitlines()[0]) == 72


def test_scrubbing() -> None:
    scrub = Scrubber([JOB_TOKEN, None, "short"])
    text = (
        f"{JOB_TOKEN} ghs_{'a' * 36} github_pat_{'b' * 30} xoxb-123-456-abcdefghij "
        "xapp-1-A0-123-abcdef sk-ant-api03-abcdefghijklmnop AKIAABCDEFGHIJKLMNOP short "
        "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----"
    )
    masked = scrub(text)
    assert masked.count("[redacted]") == 8 and masked.endswith("short [redacted]")
    scrub.add("learnt-later-value")
    assert scrub.deep({"k": ["learnt-later-value", 3]}) == {"k": ["[redacted]", 3]}


def test_session_archives_hold_the_session_and_nothing_else(tmp_path: Path) -> None:
    config = tmp_path / "cfg"
    project = config / "projects" / session.project_key("/work/req_1")
    assert project.name == "-work-req-1"
    (project / "s-1" / "subagents").mkdir(parents=True)
    (project / "s-1.jsonl").write_text('{"type":"user"}\n')
    (project / "s-1" / "subagents" / "agent-a.jsonl").write_text("{}\n")
    (project / "s-2.jsonl").write_text("other session\n")
    (config / "tasks" / "s-1").mkdir(parents=True)
    (config / "tasks" / "s-1" / "1.json").write_text("{}")
    (config / "tasks" / "s-1" / ".lock").write_text("")
    (config / ".claude.json").write_text('{"secret": "settings"}')
    archive = tmp_path / "s.tar.gz"
    assert session.pack(str(config), "s-1", str(archive))
    with tarfile.open(archive) as tar:
        names = sorted(tar.getnames())
    assert names == [
        "projects/-work-req-1/s-1.jsonl",
        "projects/-work-req-1/s-1/subagents/agent-a.jsonl",
        "tasks/s-1/1.json",
    ]
    restored = tmp_path / "restored"
    session.unpack(archive.read_bytes(), str(restored))
    assert (restored / "projects/-work-req-1/s-1.jsonl").read_text() == '{"type":"user"}\n'
    assert not session.pack(str(config), "missing", str(tmp_path / "none.tar.gz"))


@pytest.mark.parametrize(
    "name, kind",
    [
        ("../escape.jsonl", tarfile.REGTYPE),
        ("/etc/passwd", tarfile.REGTYPE),
        ("settings.json", tarfile.REGTYPE),
        ("projects/x/link", tarfile.SYMTYPE),
        ("projects/../../x", tarfile.REGTYPE),
    ],
)
def test_unsafe_session_archives_are_refused(tmp_path: Path, name: str, kind: bytes) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = "/etc/passwd" if kind == tarfile.SYMTYPE else ""
        tar.addfile(info, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
    with pytest.raises(session.SessionError):
        session.unpack(out.getvalue(), str(tmp_path / "cfg"))
    assert not (tmp_path / "cfg" / "projects").exists()


def checkout(
    tmp_path: Path,
    url: str,
    scrub: Scrubber | None = None,
    credential_env: dict[str, str] | None = None,
) -> Checkout:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "A",
        "GIT_AUTHOR_EMAIL": "a@x",
        "GIT_COMMITTER_NAME": "A",
        "GIT_COMMITTER_EMAIL": "a@x",
    }
    return Checkout(
        str(tmp_path / "work"),
        url,
        env=env,
        credential_env=credential_env or {},
        scrubber=scrub or Scrubber(),
    )


def test_the_branch_continues_local_work_and_follows_the_remote(
    tmp_path: Path, remote: Remote
) -> None:
    co = checkout(tmp_path, f"file://{remote.path}")
    co.sync()
    assert co.checkout_branch("clarity/x") is False
    (Path(co.path) / "a.txt").write_text("a\n")
    assert co.commit_all("Add a") and co.unpublished("clarity/x") == 1
    # An earlier run's commits that were not published yet are kept.
    co.sync()
    co.checkout_branch("clarity/x")
    assert co.unpublished("clarity/x") == 1
    # Once someone moved the remote branch elsewhere, the remote wins.
    other = tmp_path / "other"
    git("clone", "-q", str(remote.path), str(other), cwd=tmp_path)
    (other / "b.txt").write_text("b\n")
    git("checkout", "-q", "-b", "clarity/x", cwd=other)
    git("add", ".", cwd=other)
    git("commit", "-q", "-m", "Add b", cwd=other)
    git("push", "-q", "origin", "clarity/x", cwd=other)
    co.sync()
    assert co.checkout_branch("clarity/x") is True
    assert (Path(co.path) / "b.txt").exists() and not (Path(co.path) / "a.txt").exists()
    assert co.unpublished("clarity/x") == 0
    assert not co.bundle("clarity/x", str(tmp_path / "b.bundle"))


def test_an_empty_remote_gets_its_first_commit(tmp_path: Path) -> None:
    bare = tmp_path / "empty.git"
    git("init", "-q", "--bare", str(bare), cwd=tmp_path)
    co = checkout(tmp_path, f"file://{bare}")
    co.sync()
    co.checkout_branch("clarity/first")
    assert co.unpublished("clarity/first") == 0
    (Path(co.path) / "x.txt").write_text("x\n")
    assert co.commit_all("First")
    assert co.bundle("clarity/first", str(tmp_path / "first.bundle"))


async def test_the_credential_helper_reports_the_token_it_fetched(
    tmp_path: Path, remote: Remote, side_api: FakeSideApi
) -> None:
    scrub = Scrubber()
    url = f"{side_api.git_url}acme/widget.git"
    co = checkout(
        tmp_path, url, scrub, credential.helper_env(side_api.api_url, "req_1", JOB_TOKEN, url)
    )
    await asyncio.to_thread(co.sync)
    assert scrub(f"echo {GIT_TOKEN}") == "echo [redacted]"
    assert [c.path for c in side_api.calls] == ["/api/requests/req_1/git-credentials"]
    # A remote rewritten to another host (url.<base>.insteadOf in .git/config) gets nothing.
    elsewhere = side_api.git_url.replace("127.0.0.1", "localhost")
    git("config", f"url.{elsewhere}.insteadOf", side_api.git_url, cwd=co.path)
    with pytest.raises(GitError, match="git fetch failed"):
        await asyncio.to_thread(co.sync)
    assert len(side_api.calls) == 1
    # Without the helper's variables git gets no password, and says so without hanging.
    bare = checkout(tmp_path / "again", f"{side_api.git_url}acme/widget.git")
    with pytest.raises(GitError, match="git clone failed"):
        await asyncio.to_thread(bare.sync)


def test_file_changes_of_the_checkout(tmp_path: Path, remote: Remote) -> None:
    co = checkout(tmp_path, f"file://{remote.path}")
    co.sync()
    co.checkout_branch("clarity/x")
    root = Path(co.path)
    (root / ".github").mkdir()
    (root / ".github" / "ci.yml").write_text("on: push\n")
    (root / "README.md").write_text("# Widget\n\nChanged.\n")
    created = co.file_change(str(root / ".github" / "ci.yml"))
    assert created is not None and created[:2] == (".github/ci.yml", "created")
    assert "+on: push" in created[2]
    modified = co.file_change("README.md")
    assert modified is not None and modified[1] == "modified" and "+Changed." in modified[2]
    (root / "README.md").unlink()
    deleted = co.file_change(str(root / "README.md"))
    assert deleted is not None and deleted[1] == "deleted" and "-A small project." in deleted[2]
    assert co.file_change(str(root / ".git" / "config")) is None
    assert co.file_change(str(tmp_path / "elsewhere.txt")) is None


async def test_the_outbox_drops_what_the_side_api_refuses_and_keeps_the_order(
    side_api: FakeSideApi,
) -> None:
    api = SideApi(side_api.api_url, JOB_TOKEN, "req_1")
    outbox = Outbox(api, Scrubber([JOB_TOKEN]), sleep=lambda _: None).start()
    side_api.fail_messages = 2  # transient: tried again
    outbox.put(Activity("agent_thinking", f"first {JOB_TOKEN}"))
    outbox.put(Activity("bogus", "refused with 422: dropped, not retried"))
    outbox.put(Activity("agent_summary", "last", {"costCents": 3}))
    assert await asyncio.to_thread(outbox.close, 10.0)
    assert [(m["type"], m["content"]) for m in side_api.messages()] == [
        ("agent_thinking", "first [redacted]"),
        ("agent_summary", "last"),
    ]
    assert (outbox.sent, outbox.dropped) == (2, 1)
    assert [c.status for c in side_api.calls] == [503, 503, 201, 422, 201]
