"""Block Kit and mrkdwn to HTML, on the server, with every piece of text escaped.

Slack text arrives with `&`, `<` and `>` escaped as `&amp;`, `&lt;`, `&gt;`; a raw `<…>`
is a link or a mention. Everything else is text: it is HTML-escaped before any formatting is
applied, so `<script>` in a message shows as the characters `<script>`.

Buttons and inputs carry `data-block-id` / `data-action-id`; the page's script turns a click
or a submission into the interaction Slack would send (see `interactions.py`).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

Names = Callable[[str], str | None]

EMOJI: dict[str, str] = {
    "+1": "👍",
    "-1": "👎",
    "arrow_forward": "▶️",
    "checkered_flag": "🏁",
    "computer": "💻",
    "eyes": "👀",
    "gear": "⚙️",
    "heart": "❤️",
    "hourglass_flowing_sand": "⏳",
    "information_source": "\u2139\ufe0f",
    "leftwards_arrow_with_hook": "↩️",
    "memo": "📝",
    "no_entry_sign": "🚫",
    "pencil2": "✏️",
    "question": "❓",
    "repeat": "🔁",
    "rocket": "🚀",
    "smile": "😄",
    "speech_balloon": "💬",
    "tada": "🎉",
    "thought_balloon": "💭",
    "thumbsup": "👍",
    "twisted_rightwards_arrows": "🔀",
    "warning": "⚠️",
    "wave": "👋",
    "white_check_mark": "✅",
    "white_square": "⬜",
    "wrench": "🔧",
    "x": "❌",
}

_CODE_BLOCK = re.compile(r"```\n?(.+?)```", re.S)
_CODE = re.compile(r"`([^`\n]+)`")
_ANGLE = re.compile(r"<([^<>\n]+)>")
_EMOJI = re.compile(r":([a-z0-9_+\-]+):")
_STASHED = re.compile(r"\x00(\d+)\x00")
_SAFE_URL = re.compile(r"^(https?://|mailto:)", re.I)
_SAFE_IMAGE = re.compile(r"^(https?://|data:image/(png|gif|jpeg|webp);)", re.I)


def _marker(char: str) -> re.Pattern[str]:
    c = re.escape(char)
    # Slack's rule: the markers sit at word edges and hug the text they format.
    return re.compile(rf"(?<![\w{c}]){c}(?=\S)([^{c}\n]*?\S|\S){c}(?![\w{c}])")


_BOLD, _ITALIC, _STRIKE = _marker("*"), _marker("_"), _marker("~")


def unslack(text: str) -> str:
    """Slack's three escapes back to characters."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def esc(text: str) -> str:
    """HTML-escape text for an element's content or an attribute."""
    return html.escape(text, quote=True)


def emoji(text_html: str) -> str:
    """`:shortcode:` to its character, for the few shortcodes we know."""
    return _EMOJI.sub(lambda m: EMOJI.get(m.group(1), m.group(0)), text_html)


class Renderer:
    """Renders mrkdwn, text objects, blocks and views; names resolve mentions."""

    def __init__(self, user_name: Names | None = None, channel_name: Names | None = None) -> None:
        self.user_name: Names = user_name or (lambda _id: None)
        self.channel_name: Names = channel_name or (lambda _id: None)

    # --- text ------------------------------------------------------------------------------

    def mrkdwn(self, text: str) -> str:
        """Slack mrkdwn as HTML."""
        stash: list[str] = []

        def keep(fragment: str) -> str:
            stash.append(fragment)
            return f"\x00{len(stash) - 1}\x00"

        text = text.replace("\x00", "")
        text = _CODE_BLOCK.sub(
            lambda m: keep(f'<pre class="bk-pre">{esc(unslack(m.group(1)))}</pre>'), text
        )
        text = _CODE.sub(
            lambda m: keep(f'<code class="bk-code">{esc(unslack(m.group(1)))}</code>'), text
        )
        text = _ANGLE.sub(lambda m: keep(self._angle(m.group(1))), text)
        out = esc(unslack(text))
        out = _BOLD.sub(r"<b>\1</b>", out)
        out = _ITALIC.sub(r"<i>\1</i>", out)
        out = _STRIKE.sub(r"<s>\1</s>", out)
        out = emoji(out)
        out = _quotes(out)
        while _STASHED.search(out):
            out = _STASHED.sub(lambda m: stash[int(m.group(1))], out)
        return out

    def _angle(self, inner: str) -> str:
        """`<…>`: a mention, a special mention, a link — or, failing those, text."""
        target, _, label = inner.partition("|")
        if target.startswith("@"):
            name = label or self.user_name(target[1:]) or target[1:]
            return f'<span class="bk-mention">@{esc(unslack(name))}</span>'
        if target.startswith("#"):
            name = label or self.channel_name(target[1:]) or target[1:]
            return f'<span class="bk-mention">#{esc(unslack(name))}</span>'
        if target.startswith("!"):
            word = target[1:].split("^", 1)[0]
            if word in ("here", "channel", "everyone"):
                return f'<span class="bk-mention">@{esc(word)}</span>'
            return f'<span class="bk-mention">{esc(unslack(label or word))}</span>'
        url = unslack(target)
        if _SAFE_URL.match(url):
            shown = esc(unslack(label)) if label else esc(url)
            return (
                f'<a class="bk-link" href="{esc(url)}" target="_blank" '
                f'rel="noopener noreferrer">{emoji(shown)}</a>'
            )
        return esc(f"<{unslack(inner)}>")

    def plain(self, text: str, *, with_emoji: bool = True) -> str:
        """plain_text: escaped, emoji shortcodes shown, line breaks kept."""
        out = esc(text)
        if with_emoji:
            out = emoji(out)
        return out.replace("\n", "<br>")

    def text(self, obj: Any) -> str:
        """A text object (plain_text or mrkdwn)."""
        if not isinstance(obj, Mapping):
            return ""
        value = str(obj.get("text", ""))
        if obj.get("type") == "mrkdwn":
            return self.mrkdwn(value)
        return self.plain(value, with_emoji=obj.get("emoji", True) is not False)

    # --- blocks ----------------------------------------------------------------------------

    def blocks(
        self,
        blocks: Any,
        *,
        values: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
        errors: Mapping[str, str] | None = None,
    ) -> str:
        """A list of blocks; `values` and `errors` fill a view's inputs."""
        if not isinstance(blocks, list):
            return ""
        parts = [self.block(b, values=values or {}, errors=errors or {}) for b in blocks]
        return "".join(parts)

    def block(
        self,
        block: Any,
        *,
        values: Mapping[str, Mapping[str, Mapping[str, Any]]],
        errors: Mapping[str, str],
    ) -> str:
        if not isinstance(block, Mapping):
            return ""
        kind = block.get("type")
        block_id = str(block.get("block_id", ""))
        if kind == "header":
            return f'<div class="bk-header">{self.text(block.get("text"))}</div>'
        if kind == "divider":
            return '<hr class="bk-divider">'
        if kind == "section":
            body = ""
            if block.get("text"):
                body += f'<div class="bk-text">{self.text(block["text"])}</div>'
            if block.get("fields"):
                cells = "".join(
                    f'<div class="bk-field">{self.text(f)}</div>' for f in block["fields"]
                )
                body += f'<div class="bk-fields">{cells}</div>'
            accessory = ""
            if isinstance(block.get("accessory"), Mapping):
                accessory = (
                    f'<div class="bk-accessory">{self.element(block["accessory"], block_id)}</div>'
                )
            return f'<div class="bk-section"><div class="bk-body">{body}</div>{accessory}</div>'
        if kind == "context":
            items = "".join(
                self.element(e, block_id)
                if isinstance(e, Mapping) and e.get("type") == "image"
                else f'<span class="bk-context-text">{self.text(e)}</span>'
                for e in block.get("elements") or []
            )
            return f'<div class="bk-context">{items}</div>'
        if kind == "actions":
            items = "".join(self.element(e, block_id) for e in block.get("elements") or [])
            return f'<div class="bk-actions" data-block-id="{esc(block_id)}">{items}</div>'
        if kind == "input":
            return self._input(block, block_id, values, errors)
        if kind == "image":
            title = ""
            if block.get("title"):
                title = f"<figcaption>{self.text(block['title'])}</figcaption>"
            return f'<figure class="bk-image">{self._img(block)}{title}</figure>'
        if kind == "rich_text":
            return ""  # a person's own message: the page shows its `text` instead
        return f'<div class="bk-unknown">[{esc(str(kind))} block]</div>'

    def element(self, element: Any, block_id: str) -> str:
        """An element inside a block: a button or an image."""
        if not isinstance(element, Mapping):
            return ""
        kind = element.get("type")
        if kind == "image":
            return self._img(element, small=True)
        if kind == "button":
            return self._button(element, block_id)
        return f'<span class="bk-unknown">[{esc(str(kind))}]</span>'

    def _img(self, element: Mapping[str, Any], *, small: bool = False) -> str:
        url = str(element.get("image_url", ""))
        alt = esc(str(element.get("alt_text", "")))
        if not _SAFE_IMAGE.match(url):
            return f'<span class="bk-image-missing">[{alt or "image"}]</span>'
        cls = "bk-img-small" if small else "bk-img"
        return f'<img class="{cls}" src="{esc(url)}" alt="{alt}" loading="lazy">'

    def _button(self, element: Mapping[str, Any], block_id: str) -> str:
        style = element.get("style")
        cls = "bk-button" + (f" bk-{style}" if style in ("primary", "danger") else "")
        attrs = (
            f'type="button" class="{cls}" data-block-id="{esc(block_id)}" '
            f'data-action-id="{esc(str(element.get("action_id", "")))}"'
        )
        url = str(element.get("url", ""))
        if url and _SAFE_URL.match(url):
            attrs += f' data-url="{esc(url)}"'
        confirm = element.get("confirm")
        if isinstance(confirm, Mapping):
            dialog = {
                "title": self.text(confirm.get("title")),
                "text": self.text(confirm.get("text")),
                "confirm": self.text(confirm.get("confirm")) or "Yes",
                "deny": self.text(confirm.get("deny")) or "Cancel",
                "style": confirm.get("style") if confirm.get("style") == "danger" else "primary",
            }
            attrs += f' data-confirm="{esc(json.dumps(dialog))}"'
        return f"<button {attrs}>{self.text(element.get('text'))}</button>"

    def _input(
        self,
        block: Mapping[str, Any],
        block_id: str,
        values: Mapping[str, Mapping[str, Mapping[str, Any]]],
        errors: Mapping[str, str],
    ) -> str:
        element = block.get("element") if isinstance(block.get("element"), Mapping) else {}
        assert isinstance(element, Mapping)
        action_id = str(element.get("action_id", ""))
        typed = values.get(block_id, {}).get(action_id, {}).get("value")
        value = typed if isinstance(typed, str) else str(element.get("initial_value", ""))
        placeholder = element.get("placeholder")
        ph = esc(str(placeholder.get("text", ""))) if isinstance(placeholder, Mapping) else ""
        field_id = esc(f"in-{block_id}-{action_id}")
        common = (
            f'id="{field_id}" class="bk-field-input" data-block-id="{esc(block_id)}" '
            f'data-action-id="{esc(action_id)}" placeholder="{ph}"'
        )
        if isinstance(element.get("max_length"), int):
            common += f' maxlength="{int(element["max_length"])}"'
        if element.get("type") != "plain_text_input":
            control = f'<span class="bk-unknown">[{esc(str(element.get("type")))}]</span>'
        elif element.get("multiline"):
            control = f'<textarea {common} rows="4">{esc(value)}</textarea>'
        else:
            control = f'<input type="text" {common} value="{esc(value)}">'
        optional = ' <span class="bk-optional">(optional)</span>' if block.get("optional") else ""
        label = self.text(block.get("label"))
        out = f'<label class="bk-label" for="{field_id}">{label}{optional}</label>{control}'
        if block.get("hint"):
            out += f'<div class="bk-hint">{self.text(block["hint"])}</div>'
        if block_id in errors:
            out += f'<div class="bk-error" role="alert">{self.plain(errors[block_id])}</div>'
        return f'<div class="bk-input" data-block-id="{esc(block_id)}">{out}</div>'


def _quotes(text_html: str) -> str:
    """Lines starting with `>` (escaped by now) become one quote; newlines become <br>."""
    lines = text_html.split("\n")
    out: list[str] = []
    quote: list[str] = []
    for line in lines:
        if line.startswith("&gt;"):
            quote.append(line[4:].lstrip(" "))
            continue
        if quote:
            out.append(f'<blockquote class="bk-quote">{"<br>".join(quote)}</blockquote>')
            quote = []
        out.append(line)
    if quote:
        out.append(f'<blockquote class="bk-quote">{"<br>".join(quote)}</blockquote>')
    joined: list[str] = []
    for i, part in enumerate(out):
        joined.append(part)
        if i < len(out) - 1 and not part.startswith("<blockquote"):
            nxt = out[i + 1]
            if not nxt.startswith("<blockquote"):
                joined.append("<br>")
    return "".join(joined)
