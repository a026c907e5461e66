"""Block Kit rendering and checks, against payloads written after Slack's own examples."""

from __future__ import annotations

import html as html_lib
import json

import pytest

from bot.simulator.blockkit import Renderer
from bot.simulator.validation import check_blocks, check_view
from bot.slack import blocks as clarity_blocks

NAMES = {"U0ALICE": "alice", "C0GENERAL": "general"}
render = Renderer(user_name=NAMES.get, channel_name=NAMES.get)

# After the examples on Slack's Block Kit reference pages (section, header, context,
# actions, divider, image, input, confirmation dialog).
SECTION_WITH_FIELDS = {
    "type": "section",
    "text": {
        "type": "mrkdwn",
        "text": "A message *with some bold text* and _some italicized text_.",
    },
    "fields": [
        {"type": "mrkdwn", "text": "*Priority*"},
        {"type": "mrkdwn", "text": "*Type*"},
        {"type": "plain_text", "text": "High"},
        {"type": "plain_text", "text": "String"},
    ],
}
SECTION_WITH_BUTTON = {
    "type": "section",
    "text": {"type": "mrkdwn", "text": "This is a section block with a button."},
    "accessory": {
        "type": "button",
        "text": {"type": "plain_text", "text": "Click Me", "emoji": True},
        "value": "click_me_123",
        "action_id": "button-action",
    },
}
HEADER = {"type": "header", "text": {"type": "plain_text", "text": "Budget Performance"}}
CONTEXT = {
    "type": "context",
    "elements": [
        {
            "type": "image",
            "image_url": "https://image.example.com/red-drawing-pin.jpg",
            "alt_text": "images",
        },
        {"type": "mrkdwn", "text": "Location: *Dogpatch*"},
    ],
}
ACTIONS = {
    "type": "actions",
    "block_id": "actionblock789",
    "elements": [
        {
            "type": "button",
            "text": {"type": "plain_text", "text": "Primary Button"},
            "style": "primary",
            "value": "click_me_456",
            "action_id": "primary",
        },
        {
            "type": "button",
            "text": {"type": "plain_text", "text": "Danger"},
            "style": "danger",
            "value": "stop",
            "action_id": "danger",
            "confirm": {
                "title": {"type": "plain_text", "text": "Are you sure?"},
                "text": {"type": "mrkdwn", "text": "Wouldn't you prefer a good game of _chess_?"},
                "confirm": {"type": "plain_text", "text": "Do it"},
                "deny": {"type": "plain_text", "text": "Stop, I've changed my mind!"},
            },
        },
        {
            "type": "button",
            "text": {"type": "plain_text", "text": "Link Button"},
            "url": "https://api.slack.com/block-kit",
            "action_id": "link",
        },
    ],
}
DIVIDER = {"type": "divider"}
IMAGE = {
    "type": "image",
    "title": {"type": "plain_text", "text": "Please enjoy this photo of a kitten"},
    "block_id": "image4",
    "image_url": "https://placekitten.example.com/500/500",
    "alt_text": "An incredibly cute kitten.",
}
INPUT = {
    "type": "input",
    "block_id": "notes",
    "element": {"type": "plain_text_input", "action_id": "text", "multiline": True},
    "label": {"type": "plain_text", "text": "Label", "emoji": True},
    "hint": {"type": "plain_text", "text": "Say what you need"},
}
EXAMPLES = [SECTION_WITH_FIELDS, SECTION_WITH_BUTTON, HEADER, CONTEXT, ACTIONS, DIVIDER, IMAGE]


def test_slack_examples_pass_the_checks() -> None:
    assert check_blocks([*EXAMPLES, INPUT]) == []


def test_slack_examples_render() -> None:
    html = render.blocks(EXAMPLES)
    assert '<div class="bk-header">Budget Performance</div>' in html
    assert "A message <b>with some bold text</b> and <i>some italicized text</i>." in html
    assert html.count('<div class="bk-field">') == 4 and "<b>Priority</b>" in html
    assert 'data-action-id="button-action"' in html and ">Click Me</button>" in html
    assert 'class="bk-img-small" src="https://image.example.com/red-drawing-pin.jpg"' in html
    assert "Location: <b>Dogpatch</b>" in html
    assert 'class="bk-button bk-primary" data-block-id="actionblock789"' in html
    assert 'class="bk-button bk-danger"' in html
    assert 'data-url="https://api.slack.com/block-kit"' in html
    assert '<hr class="bk-divider">' in html
    assert "<figcaption>Please enjoy this photo of a kitten</figcaption>" in html
    # The confirmation dialog travels as escaped JSON holding escaped HTML.
    start = html.index('data-confirm="') + len('data-confirm="')
    attribute = html[start : html.index('"', start)]
    dialog = json.loads(html_lib.unescape(attribute))
    assert dialog["text"] == "Wouldn&#x27;t you prefer a good game of <i>chess</i>?"
    assert dialog["deny"] == "Stop, I&#x27;ve changed my mind!"


def test_inputs_show_typed_values_and_errors() -> None:
    html = render.blocks(
        [INPUT],
        values={"notes": {"text": {"type": "plain_text_input", "value": "</textarea><b>x"}}},
        errors={"notes": "Too <short>"},
    )
    assert '<textarea id="in-notes-text"' in html
    assert "&lt;/textarea&gt;&lt;b&gt;x</textarea>" in html
    assert '<div class="bk-error" role="alert">Too &lt;short&gt;</div>' in html
    assert '<div class="bk-hint">Say what you need</div>' in html


@pytest.mark.parametrize(
    ("mrkdwn", "html"),
    [
        ("*bold* _it_ ~gone~", "<b>bold</b> <i>it</i> <s>gone</s>"),
        ("snake_case_name stays", "snake_case_name stays"),
        ("a*b*c", "a*b*c"),
        ("`x < y`", '<code class="bk-code">x &lt; y</code>'),
        ("`*not bold*`", '<code class="bk-code">*not bold*</code>'),
        (
            "```line 1\n<b>&amp;</b>```",
            '<pre class="bk-pre">line 1\n&lt;b&gt;&amp;&lt;/b&gt;</pre>',
        ),
        (
            "<https://example.com/a?b=1&amp;c=2|the *docs*>",
            '<a class="bk-link" href="https://example.com/a?b=1&amp;c=2" target="_blank" '
            'rel="noopener noreferrer">the *docs*</a>',
        ),
        (
            "<@U0ALICE> in <#C0GENERAL>",
            '<span class="bk-mention">@alice</span> in <span class="bk-mention">#general</span>',
        ),
        ("<#C0OTHER|other>", '<span class="bk-mention">#other</span>'),
        ("<!here> look", '<span class="bk-mention">@here</span> look'),
        ("1 &lt; 2 &amp;&amp; 3 &gt; 2", "1 &lt; 2 &amp;&amp; 3 &gt; 2"),
        (":white_check_mark: done :unknown_one:", "✅ done :unknown_one:"),
        ("line one\nline two", "line one<br>line two"),
        ("&gt; quoted\nplain", '<blockquote class="bk-quote">quoted</blockquote>plain'),
    ],
)
def test_mrkdwn(mrkdwn: str, html: str) -> None:
    assert render.mrkdwn(mrkdwn) == html


@pytest.mark.parametrize(
    "hostile",
    [
        "<script>alert(1)</script>",
        "&lt;script&gt;alert(1)&lt;/script&gt;",
        "<javascript:alert(1)|click me>",
        '<https://x.example/"onmouseover="alert(1)|x>',
        "*<img src=x onerror=alert(1)>*",
        "`<script>`",
        "```<script>```",
        "<@U1|<script>>",
    ],
)
def test_text_can_never_become_markup(hostile: str) -> None:
    html = render.mrkdwn(hostile)
    assert (
        "<script" not in html and "<img" not in html and "javascript:" not in html.split("&lt;")[0]
    )
    assert 'href="javascript' not in html and '"onmouseover' not in html
    block_html = render.blocks(
        [
            {"type": "section", "text": {"type": "plain_text", "text": hostile}},
            {"type": "header", "text": {"type": "plain_text", "text": hostile}},
        ]
    )
    assert "<script" not in block_html and "<img" not in block_html


def test_script_in_a_message_is_text() -> None:
    assert render.mrkdwn("<script>alert(1)</script>") == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert render.plain("<script>") == "&lt;script&gt;"
    image = render.blocks([{"type": "image", "image_url": "javascript:alert(1)", "alt_text": "a"}])
    assert "<img" not in image and "[a]" in image


@pytest.mark.parametrize(
    ("blocks", "pointer", "problem"),
    [
        (
            [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}],
            "/blocks/0/text/text",
            "less than 151",
        ),
        (
            [{"type": "section", "text": {"type": "mrkdwn", "text": ""}}],
            "/blocks/0/text/text",
            "more than 0",
        ),
        ([{"type": "section"}], "/blocks/0", "either text or fields"),
        ([DIVIDER] * 51, "/blocks", "no more than 50"),
        (
            [
                {
                    "type": "actions",
                    "elements": [
                        {
                            "type": "button",
                            "text": {"type": "plain_text", "text": str(i)},
                            "action_id": f"a{i}",
                        }
                        for i in range(26)
                    ],
                }
            ],
            "/blocks/0/elements",
            "no more than 25",
        ),
        (
            [
                {
                    "type": "actions",
                    "elements": [
                        {"type": "button", "text": {"type": "plain_text", "text": "b" * 76}}
                    ],
                }
            ],
            "/blocks/0/elements/0/text/text",
            "less than 76",
        ),
        (
            [
                {
                    "type": "actions",
                    "elements": [
                        {
                            "type": "button",
                            "text": {"type": "plain_text", "text": "b"},
                            "value": "v" * 2001,
                        }
                    ],
                }
            ],
            "/blocks/0/elements/0/value",
            "less than 2001",
        ),
        (
            [DIVIDER | {"block_id": "x"}, HEADER | {"block_id": "x"}],
            "/blocks/1/block_id",
            "duplicate",
        ),
        (
            [{"type": "image", "image_url": "https://x.example/a.png"}],
            "/blocks/0/alt_text",
            "missing",
        ),
        (
            [{"type": "input", "label": {"type": "plain_text", "text": "l"}}],
            "/blocks/0/element",
            "missing",
        ),
    ],
)
def test_checks_name_the_problem(
    blocks: list[dict[str, object]], pointer: str, problem: str
) -> None:
    problems = check_blocks(blocks)
    assert any(f"[json-pointer:{pointer}]" in p and problem in p for p in problems), problems


def test_clarity_views_pass_the_checks() -> None:
    stats = clarity_blocks.Stats(days=7, counts={}, total_cost_cents=0, median_duration_ms=None)
    assert check_view(clarity_blocks.file_modal({"channelId": "C1"}, "acme/web")) == []
    assert check_view(clarity_blocks.home_view([], stats)) == []
    assert check_view(clarity_blocks.error_home_view("ref", "broken")) == []
    modal_without_submit = clarity_blocks.file_modal({}, None)
    del modal_without_submit["submit"]
    assert any("/view/submit" in p for p in check_view(modal_without_submit))
