"""The test suite's fake Slack: the Slack simulator (bot/simulator) on 127.0.0.1.

One Slack double for the demo and every test, held to Slack's wire format: the Web API
checks tokens, blocks and arguments as Slack does and answers with Slack's errors. As the
suite's fake it runs in its lenient mode: channel ids it has not seen are made on first use
(everyone a member), and trigger_ids it did not issue are accepted once.

Usage (reusable from any test; import as `tests.slack.fake_slack` from the repository root)::

    async with FakeSlack() as slack:
        settings = ...(slack_api_url=slack.api_url)
        ...
        slack.calls("chat.postMessage")          # [Call(method, params, headers), ...]
        slack.fail_next("chat.update", status=429, retry_after=1)
        slack.lose_next("chat.postMessage")      # takes effect, then answers 500
        slack.responses                          # POSTs to response URLs (slack.response_url())
        slack.messages["C0GENERAL"]              # what chat.postMessage made, as posted
        await slack.send_envelope("slash_commands", payload)   # Socket Mode

The workspace itself (messages with threads and reactions, views, App Home) is
`slack.workspace`; what a person does is `slack.people` (see bot/simulator).
"""

from __future__ import annotations

from typing import Any

from bot.simulator import BOT_ID, BOT_USER_ID, TEAM_ID, Call, SimulatorServer

__all__ = ["BOT_ID", "BOT_USER_ID", "TEAM_ID", "Call", "FakeSlack"]


class FakeSlack(SimulatorServer):
    """Start with `async with FakeSlack() as slack:` (or `await slack.start()`)."""

    def __init__(self, **options: Any) -> None:
        options.setdefault("lenient", True)
        super().__init__(**options)
