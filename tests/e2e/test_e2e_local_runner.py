"""The whole loop with no outside runner: Slack (fake) → Clarity → the `local` backend runs the
agent program → Claude Code (the fake, in its `demo` script) asks, is answered with a
button, resumes and finishes → its work comes back as a bundle, ready to publish.

bot/publish.py (pushing, opening the PR) is tested on its own; here a stand-in pushes the
bundle to the bare remote so the next run finds the branch.
"""

from __future__ import annotations

from tests.runner.local_support import REPO, Loop, git, running_loop


async def _visible(loop: Loop) -> list[str]:
    return [
        str(c.get("text"))
        for c in loop.slack.calls()
        if c.method == "chat.update" or (c.method == "chat.postMessage" and c.get("thread_ts"))
    ]


async def test_slack_to_agent_to_bundle_with_a_question_on_the_way(db_url: str) -> None:
    async with running_loop(
        db_url, cli="clarity-fake-claude --scenario demo", publish=True, step_s=0
    ) as loop:
        request = await loop.file(f"{REPO} choose a greeting for the project")
        rid = request.request_id
        await loop.wait_for(lambda: loop.status_is(rid, "awaiting_clarification"), "a question")
        question = await loop.wait_for(lambda: _question_post(loop), "the question in the thread")
        assert "Which greeting should the project use?" in question["text"]
        options = [
            e
            for b in question["blocks"]
            if b["type"] == "actions"
            for e in b["elements"]
            if e["action_id"] == "clarification_option"
        ]
        assert [o["value"] for o in options] == ["Hello, world!", "Howdy, partner!", "Hi there!"]
        block = next(
            b["block_id"]
            for b in question["blocks"]
            if b["type"] == "actions" and b["elements"][0]["value"] == "Hi there!"
        )
        clicked = await loop.sender.click("clarification_option", "Hi there!", block_id=block)
        assert clicked.status == 200

        stored = await loop.wait_for(lambda: loop.bundle(rid, 2), "the finished run's bundle")
        assert stored.label == "completed"
        await loop.wait_for(lambda: _published(loop, rid, 2), "the publish")
        branch = next(
            line.split()[1].removeprefix("refs/heads/")
            for line in git("--git-dir", str(loop.remote), "show-ref").splitlines()
            if "refs/heads/clarity/" in line
        )
        shown = git("--git-dir", str(loop.remote), "show", f"{branch}:hello.txt")
        assert shown == "Hi there!\n"
        starts = loop.fake_log()
        assert len(starts) == 2 and "--resume" in starts[1]["argv"]

        # The thread: one progress message per run (edited, not one post per step), the
        # question with its buttons, then answered.
        thread = await _visible(loop)
        assert any(t.startswith("Clarity needs your input") for t in thread)
        assert any(t.startswith("Answered: Which greeting") for t in thread)
        progress_posts = [
            c
            for c in loop.slack.calls("chat.postMessage")
            if c.get("thread_ts") and str(c.get("text")).startswith(("Working", "Run finished"))
        ]
        assert 1 <= len(progress_posts) <= 2
        trail = [m.type.value for m in await loop.messages(rid)]
        assert trail.count("clarification_ask") == 1
        assert trail.count("clarification_answer") == 1


async def _question_post(loop: Loop) -> dict[str, object] | None:
    for call in loop.slack.calls("chat.postMessage"):
        if str(call.get("text")).startswith("Clarity needs your input"):
            return dict(call.params)
    return None


async def _published(loop: Loop, request_id: str, attempt: int) -> bool:
    return (request_id, attempt) in loop.published
