"""manifest.yml names exactly the commands, events and scopes the Slack code uses.

"What the code uses" is read from bot/slack's source: listener registrations
(`.command(...)`, `.event("...")`, `.action(...)`, `.view(...)`) and Web API method names
(every string literal such as "chat.postMessage"). Each method and event maps to the scopes
Slack requires; one missing from the tables fails the test, so the tables grow with the code.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SLACK_SOURCE = ROOT / "bot" / "slack"
EVENTS_PATH = "/slack/events"

# Bot scopes each Web API method needs (https://api.slack.com/methods).
METHOD_SCOPES: dict[str, set[str]] = {
    "chat.postMessage": {"chat:write"},
    "chat.update": {"chat:write"},
    "chat.postEphemeral": {"chat:write"},
    "reactions.add": {"reactions:write"},
    "views.open": set(),
    "views.publish": set(),
    "views.update": set(),
    "users.info": {"users:read"},
    "conversations.info": {"channels:read", "groups:read"},
    "conversations.history": {"channels:history", "groups:history"},
    "conversations.replies": {"channels:history", "groups:history"},
    "auth.test": set(),
}
# Web API method families: any string literal "family.method" in bot/slack is a call.
API_FAMILIES = (
    "admin",
    "api",
    "apps",
    "auth",
    "bookmarks",
    "bots",
    "calls",
    "chat",
    "conversations",
    "dialog",
    "dnd",
    "emoji",
    "files",
    "pins",
    "reactions",
    "reminders",
    "search",
    "stars",
    "team",
    "usergroups",
    "users",
    "views",
    "workflows",
)
# Listener event → (manifest bot events, scopes). Thread replies come from public and
# private channels the bot is in.
EVENT_SUBSCRIPTIONS: dict[str, tuple[set[str], set[str]]] = {
    "message": ({"message.channels", "message.groups"}, {"channels:history", "groups:history"}),
    "app_home_opened": ({"app_home_opened"}, set()),
}


def _source() -> str:
    return "\n".join(p.read_text() for p in sorted(SLACK_SOURCE.glob("*.py")))


def _constant(source: str, name: str) -> str:
    match = re.search(rf'^{name}\s*=\s*"([^"]+)"', source, re.M)
    assert match, f"constant {name} not found in bot/slack"
    return match.group(1)


def used_by_code() -> dict[str, Any]:
    """Commands, events, Web API methods and interactivity, as the source registers them."""
    source = _source()
    commands = set()
    for raw in re.findall(r"\.command\(\s*([A-Z_]+|\"[^\"]+\")", source):
        commands.add(raw.strip('"') if raw.startswith('"') else _constant(source, raw))
    return {
        "commands": commands,
        "events": set(re.findall(r'\.event\(\s*"([a-z_.]+)"', source)),
        "methods": set(re.findall(rf'"((?:{"|".join(API_FAMILIES)})\.[a-z][A-Za-z.]+)"', source)),
        "interactive": bool(re.search(r"\.(action|view)\(", source)),
    }


def _manifest() -> dict[str, Any]:
    with (ROOT / "manifest.yml").open() as fh:
        loaded = yaml.safe_load(fh)
    assert isinstance(loaded, dict)
    return loaded


def test_code_scan_finds_the_listeners() -> None:
    used = used_by_code()
    assert used["commands"] == {"/clarity"}
    assert used["events"] == {"message", "app_home_opened"}
    assert {"chat.postMessage", "chat.update", "reactions.add", "views.open"} <= used["methods"]
    assert used["interactive"]


def test_manifest_names_exactly_the_commands_events_and_scopes_used() -> None:
    used = used_by_code()
    manifest = _manifest()

    unknown = used["methods"] - METHOD_SCOPES.keys()
    assert not unknown, f"add the scopes of {sorted(unknown)} to METHOD_SCOPES"
    unmapped = used["events"] - EVENT_SUBSCRIPTIONS.keys()
    assert not unmapped, f"add {sorted(unmapped)} to EVENT_SUBSCRIPTIONS"

    scopes = set().union(*(METHOD_SCOPES[m] for m in used["methods"]))
    scopes |= set().union(*(EVENT_SUBSCRIPTIONS[e][1] for e in used["events"]))
    if used["commands"]:
        scopes.add("commands")
    bot_events = set().union(*(EVENT_SUBSCRIPTIONS[e][0] for e in used["events"]))

    assert set(manifest["oauth_config"]["scopes"]["bot"]) == scopes
    assert set(manifest["settings"]["event_subscriptions"]["bot_events"]) == bot_events
    commands = manifest["features"]["slash_commands"]
    assert {c["command"] for c in commands} == used["commands"]
    assert manifest["settings"]["interactivity"]["is_enabled"] is used["interactive"]
    if "app_home_opened" in used["events"]:
        assert manifest["features"]["app_home"]["home_tab_enabled"] is True


def test_manifest_is_a_complete_app_description() -> None:
    manifest = _manifest()
    assert manifest["display_information"]["name"] == "Clarity"
    assert 0 < len(manifest["display_information"]["description"]) <= 139
    assert manifest["features"]["bot_user"]["display_name"]
    [command] = manifest["features"]["slash_commands"]
    assert command["usage_hint"] and command["description"]
    urls = [
        command["url"],
        manifest["settings"]["event_subscriptions"]["request_url"],
        manifest["settings"]["interactivity"]["request_url"],
    ]
    assert all(u.startswith("https://") and u.endswith(EVENTS_PATH) for u in urls)
    assert manifest["settings"]["socket_mode_enabled"] is False


def test_events_path_matches_the_server_route() -> None:
    from bot.slack.app import EVENTS_PATH as served

    assert served == EVENTS_PATH
