"""The dashboard in headless Chromium against the real server, database and lifecycle.

Sign in through the link `/clarity dashboard` sends → the list → a filter → a request's
page → agent activity posted through the side-API appears without a reload → Cancel → the
page shows the new status and the request's Slack thread is told. A screenshot of each page
goes to test-output/screenshots/.
"""

from __future__ import annotations

import re
from typing import Any

from playwright.async_api import expect

from storage.models import MessageType, RequestOrigin, RequestStatus
from tests.slack.fake_slack import TEAM_ID
from tests.web.conftest import Served, ago, screenshot_path

expect.set_options(timeout=5_000)

HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"><b>bold?</b>'
DIFF = "\n".join(
    [
        "--- a/app/limits.py",
        "+++ b/app/limits.py",
        "@@ -1,4 +1,6 @@",
        " import time",
        "-LIMIT = 10",
        "+LIMIT = 100",
        "+WINDOW_S = 60",
        " ",
        " def allowed(key):",
    ]
)
SLACK_LINK = re.compile(r"<(http[^|>]+)\|Open the Clarity dashboard>")


async def _file_in_slack(served: Served) -> str:
    """The request under test is filed with /clarity, so it has a real thread in Slack."""
    slack = served.clarity
    sent = await slack.sender.command(
        "acme/app Add rate limiting to the public API\n"
        "100 requests a minute per key, counted in a sliding window.",
        user="U0REQ1",
        user_name="Ada Lovelace",
        channel="C0CHAN",
        channel_name="eng",
    )
    assert sent.status == 200, sent.text
    await slack.settle()
    await slack.run_jobs()
    [request] = await slack.requests()
    assert request.slack_thread_ts is not None
    return request.request_id


async def _seed(served: Served) -> str:
    rid = await _file_in_slack(served)
    # The agent's first run reports in, through the side-API.
    await served.report_status(rid, RequestStatus.PROCESSING, costUsd=1.82, durationMs=312_000)
    await served.add_request(
        "req-docs",
        repo="acme/docs",
        title="Fix the broken links in the getting-started guide",
        description="Several links in docs/getting-started.md point to pages that moved.",
        status=RequestStatus.ERROR,
        slack_user_id="U0OTHER",
        slack_user_name="Grace Hopper",
        created_at=ago(hours=3),
    )
    await served.add_request(
        "req-issue",
        repo="acme/api",
        title="Paginate GET /v1/orders",
        description="Orders come back all at once; add cursor pagination.",
        origin=RequestOrigin.GITHUB_ISSUE,
        status=RequestStatus.PR_CREATED,
        slack_user_id=None,
        slack_user_name=None,
        slack_channel_id=None,
        slack_thread_ts=None,
        issue_author="linus",
        issue_number=42,
        pr_url="https://github.com/acme/api/pull/43",
        pr_number=43,
        cost_usd=95,
        duration_ms=185_000,
        created_at=ago(days=1),
    )
    await served.add_message(
        rid, MessageType.AGENT_THINKING, "Looking at how requests reach the API first."
    )
    await served.add_message(
        rid,
        MessageType.AGENT_TERMINAL,
        "pytest -q tests/test_limits.py",
        {
            "command": "pytest -q tests/test_limits.py",
            "exitCode": 1,
            "stdout": "F.\n1 failed, 1 passed in 0.12s",
        },
    )
    await served.add_message(
        rid,
        MessageType.AGENT_FILE_CHANGE,
        "modified app/limits.py",
        {"filePath": "app/limits.py", "fileAction": "modified", "diffPreview": DIFF},
    )
    return rid


async def _link_from_slack(served: Served) -> str:
    """`/clarity dashboard`: the sign-in link, as it reaches the person (privately)."""
    sent = await served.clarity.sender.command(
        "dashboard", user="U0REQ1", user_name="Ada Lovelace", channel="C0CHAN"
    )
    assert sent.status == 200
    await served.clarity.settle()
    answer = served.slack.responses[-1]
    assert answer["response_type"] == "ephemeral"
    found = SLACK_LINK.search(answer["text"])
    assert found is not None, answer["text"]
    return found.group(1)


async def test_sign_in_list_filter_request_live_update_and_cancel(
    served: Served, browser: Any
) -> None:
    rid = await _seed(served)
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    try:
        # A signed-out visit goes to the "sign in from Slack" page.
        await page.goto(served.url + "/requests")
        await expect(page.get_by_role("heading", name="Sign in from Slack")).to_be_visible()
        await page.screenshot(path=screenshot_path("signin"))

        # The link from Slack opens a page with one button; pressing it signs in.
        await page.goto(await _link_from_slack(served))
        await page.screenshot(path=screenshot_path("login"))
        await page.get_by_role("button", name="Sign in").click()
        await expect(page).to_have_url(served.url + "/requests")
        rows = page.locator("table.requests tbody tr")
        await expect(rows).to_have_count(3)
        await expect(page.locator(".counts")).to_contain_text("All 3")
        await page.screenshot(path=screenshot_path("requests"), full_page=True)

        # A filter, through the form.
        await page.locator('select[name="status"]').select_option("processing")
        await page.get_by_role("button", name="Apply").click()
        await expect(rows).to_have_count(1)
        await expect(rows.first).to_contain_text("Add rate limiting")

        # The list follows changes by itself: a new request appears without a reload.
        await page.goto(served.url + "/requests")
        await page.evaluate("window.__sameDocument = true")
        await served.following(None)
        await served.add_request("req-new", title="Nightly export to S3", created_at=ago(seconds=1))
        await expect(rows).to_have_count(4)
        assert await page.evaluate("window.__sameDocument") is True

        # A request's page.
        await page.get_by_role("link", name="Add rate limiting to the public API").click()
        await expect(page.get_by_role("heading", level=1)).to_have_text(
            "Add rate limiting to the public API"
        )
        await expect(page.locator("#status")).to_have_text("Working")
        await expect(page.locator(".d-add").first).to_have_text("+LIMIT = 100")
        await expect(page.locator(".d-del").first).to_have_text("-LIMIT = 10")
        slack = page.get_by_role("link", name="Slack thread")
        # The team is the one the sign-in link was asked for in.
        assert f"app_redirect?team={TEAM_ID}&channel=C0CHAN" in (
            await slack.get_attribute("href") or ""
        )
        await page.evaluate("window.__sameDocument = true")

        # Agent activity posted through the side-API shows up without a reload, as text.
        await served.following(rid)
        await served.add_message(rid, MessageType.AGENT_THINKING, HOSTILE)
        await served.add_message(
            rid,
            MessageType.AGENT_SUMMARY,
            "Rate limiting added with a sliding window; tests pass.",
            {"costCents": 182, "durationMs": 312000},
        )
        step = page.locator("li.t-agent_thinking").last
        await expect(step).to_contain_text("<script>window.__pwned = 1</script>")
        await expect(step).to_contain_text("<b>bold?</b>")
        await expect(page.locator("li.t-agent_summary")).to_contain_text("sliding window")
        assert await page.evaluate("window.__sameDocument") is True
        assert await page.evaluate("window.__pwned") is None
        assert await page.locator("#runs b").count() == 0
        await page.screenshot(path=screenshot_path("request"), full_page=True)

        # Cancel (after the confirm dialog), through the lifecycle: the page shows the new
        # status, and the request's Slack thread is told once Slack's jobs run.
        await served.clarity.run_jobs()  # what Slack had to hear before (progress)
        before = len(served.slack.calls("chat.postMessage"))
        await page.get_by_role("button", name="Cancel request").click()
        await expect(page.locator("#status")).to_have_text("Cancelled")
        await expect(page.locator("#conversation")).to_contain_text("Cancelled by Ada Lovelace")
        assert served.actions.calls == [("cancel", rid, "U0REQ1")]
        await expect(page.get_by_role("button", name="Cancel request")).to_have_count(0)
        request = await served.clarity.request(rid)
        assert request.status == RequestStatus.CANCELLED
        await served.clarity.run_jobs()
        [told] = served.slack.calls("chat.postMessage")[before:]
        assert (told["channel"], told["thread_ts"]) == ("C0CHAN", request.slack_thread_ts)
        assert "Cancelled by Ada Lovelace" in told["text"]

        # Stats, and the same pages at phone width in the dark.
        await page.goto(served.url + "/stats?days=30")
        await expect(page.locator("svg.chart").first).to_be_visible()
        await page.screenshot(path=screenshot_path("stats"), full_page=True)
    finally:
        await context.close()

    phone = await browser.new_context(
        viewport={"width": 390, "height": 844}, color_scheme="dark", device_scale_factor=2
    )
    try:
        page = await phone.new_page()
        await page.goto(await served.login_link())
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.locator("table.requests tbody tr")).to_have_count(4)
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, "the list fits a phone's width"
        await page.screenshot(path=screenshot_path("requests-phone-dark"), full_page=False)
        await page.goto(served.url + "/requests/req-docs")
        await expect(page.locator("#status")).to_have_text("Failed")
        await page.screenshot(path=screenshot_path("request-phone-dark"), full_page=False)
    finally:
        await phone.close()


async def test_a_page_updates_the_status_live_and_keyboard_reaches_everything(
    served: Served, browser: Any
) -> None:
    await served.add_request("req-k", status=RequestStatus.PROCESSING)
    context = await browser.new_context()
    page = await context.new_page()
    try:
        await page.goto(await served.login_link())
        await page.get_by_role("button", name="Sign in").click()
        await page.goto(served.url + "/requests/req-k")
        # The first Tab lands on the skip link, which moves focus to the content.
        await page.keyboard.press("Tab")
        await expect(page.locator(".skip")).to_be_focused()
        await page.keyboard.press("Enter")
        await expect(page).to_have_url(served.url + "/requests/req-k#main")

        await served.following("req-k")
        await served.set_status("req-k", RequestStatus.ERROR)
        await expect(page.locator("#status")).to_have_text("Failed")
        await expect(page.get_by_role("button", name="Retry")).to_be_visible()
        await page.get_by_role("button", name="Retry").focus()
        await page.keyboard.press("Enter")
        await expect(page.locator("#status")).to_have_text("Working")
        assert served.actions.calls == [("retry", "req-k", "U0REQ1")]
    finally:
        await context.close()
