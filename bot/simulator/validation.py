"""Block Kit checks, as Slack makes them before it accepts blocks or a view.

Slack answers a bad payload with `invalid_blocks` (messages) or `invalid_arguments` (views)
and one line per problem: `[ERROR] <what> [json-pointer:<where>]`. This module checks the
block and element types Clarity uses (header, section, context, actions, divider, input,
image; buttons, plain-text inputs, images, text objects) with Slack's documented limits; any
other type is refused, so a new kind of block shows up here before it reaches a real Slack.
"""

from __future__ import annotations

from typing import Any

MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
BLOCK_TYPES = frozenset({"header", "section", "context", "actions", "divider", "input", "image"})
BUTTON_STYLES = frozenset({"primary", "danger"})


class Problems:
    """Collects problems with their JSON pointers."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, what: str) -> None:
        self.items.append(f"[ERROR] {what} [json-pointer:{where}]")

    def __bool__(self) -> bool:
        return bool(self.items)


def _string(p: Problems, where: str, value: Any, *, limit: int, required: bool = True) -> None:
    if value is None:
        if required:
            p.add(where, "missing required field")
        return
    if not isinstance(value, str):
        p.add(where, "must provide a string")
    elif required and not value:
        p.add(where, "must be more than 0 characters")
    elif len(value) > limit:
        p.add(where, f"must be less than {limit + 1} characters")


def text_object(
    p: Problems, where: str, value: Any, *, limit: int, plain_only: bool = False
) -> None:
    """A `plain_text` or `mrkdwn` text object."""
    if not isinstance(value, dict):
        p.add(where, "must provide an object")
        return
    kind = value.get("type")
    allowed = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
    if kind not in allowed:
        p.add(f"{where}/type", f"must be one of: {', '.join(allowed)}")
    _string(p, f"{where}/text", value.get("text"), limit=limit)
    if kind == "mrkdwn" and "emoji" in value:
        p.add(f"{where}/emoji", "emoji is only allowed on plain_text")
    if kind == "plain_text" and "verbatim" in value:
        p.add(f"{where}/verbatim", "verbatim is only allowed on mrkdwn")


def _action_id(p: Problems, where: str, element: dict[str, Any], seen: set[str] | None) -> None:
    action_id = element.get("action_id")
    if action_id is None:
        return
    _string(p, f"{where}/action_id", action_id, limit=255)
    if seen is not None and isinstance(action_id, str):
        if action_id in seen:
            p.add(f"{where}/action_id", f"duplicate action_id: {action_id}")
        seen.add(action_id)


def confirm_object(p: Problems, where: str, value: Any) -> None:
    if not isinstance(value, dict):
        p.add(where, "must provide an object")
        return
    text_object(p, f"{where}/title", value.get("title"), limit=100, plain_only=True)
    text_object(p, f"{where}/text", value.get("text"), limit=300)
    text_object(p, f"{where}/confirm", value.get("confirm"), limit=30, plain_only=True)
    text_object(p, f"{where}/deny", value.get("deny"), limit=30, plain_only=True)
    if "style" in value and value["style"] not in BUTTON_STYLES:
        p.add(f"{where}/style", "must be one of: primary, danger")


def button(p: Problems, where: str, element: dict[str, Any], seen: set[str] | None) -> None:
    text_object(p, f"{where}/text", element.get("text"), limit=75, plain_only=True)
    _action_id(p, where, element, seen)
    _string(p, f"{where}/value", element.get("value"), limit=2000, required=False)
    _string(p, f"{where}/url", element.get("url"), limit=3000, required=False)
    if "style" in element and element["style"] not in BUTTON_STYLES:
        p.add(f"{where}/style", "must be one of: primary, danger")
    if "confirm" in element:
        confirm_object(p, f"{where}/confirm", element["confirm"])


def image_element(p: Problems, where: str, element: dict[str, Any]) -> None:
    if "slack_file" not in element:
        _string(p, f"{where}/image_url", element.get("image_url"), limit=3000)
    _string(p, f"{where}/alt_text", element.get("alt_text"), limit=2000)


def plain_text_input(p: Problems, where: str, element: dict[str, Any]) -> None:
    _action_id(p, where, element, None)
    if "placeholder" in element:
        text_object(p, f"{where}/placeholder", element["placeholder"], limit=150, plain_only=True)
    _string(p, f"{where}/initial_value", element.get("initial_value"), limit=3000, required=False)
    for key, low, high in (("min_length", 0, 3000), ("max_length", 1, 3000)):
        if key in element:
            value = element[key]
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                p.add(f"{where}/{key}", f"must be an integer from {low} to {high}")


def element(
    p: Problems, where: str, value: Any, *, allowed: tuple[str, ...], seen: set[str] | None = None
) -> None:
    """An interactive or image element of one of the `allowed` types."""
    if not isinstance(value, dict):
        p.add(where, "must provide an object")
        return
    kind = value.get("type")
    if kind not in allowed:
        p.add(f"{where}/type", f"must be one of: {', '.join(allowed)}")
        return
    if kind == "button":
        button(p, where, value, seen)
    elif kind == "image":
        image_element(p, where, value)
    elif kind == "plain_text_input":
        plain_text_input(p, where, value)


def block(p: Problems, where: str, value: Any, block_ids: set[str]) -> None:
    """One block."""
    if not isinstance(value, dict):
        p.add(where, "must provide an object")
        return
    kind = value.get("type")
    if kind not in BLOCK_TYPES:
        p.add(f"{where}/type", f"unsupported type: {kind}")
        return
    block_id = value.get("block_id")
    if block_id is not None:
        _string(p, f"{where}/block_id", block_id, limit=255)
        if isinstance(block_id, str):
            if block_id in block_ids:
                p.add(f"{where}/block_id", f"duplicate block_id: {block_id}")
            block_ids.add(block_id)
    if kind == "header":
        text_object(p, f"{where}/text", value.get("text"), limit=150, plain_only=True)
    elif kind == "section":
        _section(p, where, value)
    elif kind == "context":
        elements = value.get("elements")
        if not isinstance(elements, list) or not elements:
            p.add(f"{where}/elements", "must provide a non-empty array")
            return
        if len(elements) > 10:
            p.add(f"{where}/elements", "must provide no more than 10 items")
        for i, item in enumerate(elements):
            at = f"{where}/elements/{i}"
            if isinstance(item, dict) and item.get("type") == "image":
                image_element(p, at, item)
            else:
                text_object(p, at, item, limit=3000)
    elif kind == "actions":
        elements = value.get("elements")
        if not isinstance(elements, list) or not elements:
            p.add(f"{where}/elements", "must provide a non-empty array")
            return
        if len(elements) > 25:
            p.add(f"{where}/elements", "must provide no more than 25 items")
        seen: set[str] = set()
        for i, item in enumerate(elements):
            element(p, f"{where}/elements/{i}", item, allowed=("button",), seen=seen)
    elif kind == "input":
        text_object(p, f"{where}/label", value.get("label"), limit=2000, plain_only=True)
        if "hint" in value:
            text_object(p, f"{where}/hint", value["hint"], limit=2000, plain_only=True)
        if "element" not in value:
            p.add(f"{where}/element", "missing required field")
        else:
            element(p, f"{where}/element", value["element"], allowed=("plain_text_input",))
    elif kind == "image":
        image_element(p, where, value)
        if "title" in value:
            text_object(p, f"{where}/title", value["title"], limit=2000, plain_only=True)


def _section(p: Problems, where: str, value: dict[str, Any]) -> None:
    text = value.get("text")
    fields = value.get("fields")
    if text is None and fields is None:
        p.add(where, "must provide either text or fields")
    if text is not None:
        text_object(p, f"{where}/text", text, limit=3000)
    if fields is not None:
        if not isinstance(fields, list) or not fields:
            p.add(f"{where}/fields", "must provide a non-empty array")
        else:
            if len(fields) > 10:
                p.add(f"{where}/fields", "must provide no more than 10 items")
            for i, item in enumerate(fields):
                text_object(p, f"{where}/fields/{i}", item, limit=2000)
    if "accessory" in value:
        element(p, f"{where}/accessory", value["accessory"], allowed=("button", "image"))


def check_blocks(blocks: Any, *, limit: int = MAX_MESSAGE_BLOCKS, at: str = "") -> list[str]:
    """Problems with a `blocks` array ([] when Slack would take it)."""
    p = Problems()
    if not isinstance(blocks, list):
        p.add(f"{at}/blocks", "must provide an array")
        return p.items
    if len(blocks) > limit:
        p.add(f"{at}/blocks", f"must provide no more than {limit} items")
    block_ids: set[str] = set()
    for i, value in enumerate(blocks):
        block(p, f"{at}/blocks/{i}", value, block_ids)
    return p.items


def check_view(view: Any) -> list[str]:
    """Problems with a modal or Home tab view."""
    p = Problems()
    if not isinstance(view, dict):
        p.add("/view", "must provide an object")
        return p.items
    kind = view.get("type")
    if kind not in ("modal", "home"):
        p.add("/view/type", "must be one of: modal, home")
        return p.items
    if kind == "modal":
        text_object(p, "/view/title", view.get("title"), limit=24, plain_only=True)
        for key in ("submit", "close"):
            if key in view and view[key] is not None:
                text_object(p, f"/view/{key}", view[key], limit=24, plain_only=True)
        has_input = any(
            isinstance(b, dict) and b.get("type") == "input" for b in view.get("blocks") or []
        )
        if has_input and not view.get("submit"):
            p.add("/view/submit", "submit is required when a view has input blocks")
    _string(p, "/view/callback_id", view.get("callback_id"), limit=255, required=False)
    _string(p, "/view/private_metadata", view.get("private_metadata"), limit=3000, required=False)
    _string(p, "/view/external_id", view.get("external_id"), limit=255, required=False)
    p.items += check_blocks(view.get("blocks"), limit=MAX_VIEW_BLOCKS, at="/view")
    return p.items
