"""Charts for /stats as inline SVG, drawn on the server: no chart library, no script.

Colours come from CSS classes (the stylesheet has light and dark palettes); every bar
has a <title> tooltip and each chart a text alternative.
"""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup, escape

from bot.requests.display import money
from storage.dashboard import OUTCOMES, Ranked, Stats

OUTCOME_LABELS = {
    "pr": "Pull request",
    "failed": "Failed",
    "cancelled": "Cancelled",
    "open": "In progress",
}
WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 10, 28


@dataclass(frozen=True)
class Charts:
    per_day: Markup
    cost_per_day: Markup
    success: Markup
    top_repos: Markup
    top_requesters: Markup


def _nice_max(value: float) -> float:
    """A round axis maximum at or above value (1, 2 or 5 times a power of ten)."""
    if value <= 0:
        return 1
    step = 1.0
    while step * 10 <= value:
        step *= 10
    for m in (1, 2, 5, 10):
        if m * step >= value:
            return m * step
    return 10 * step


def _svg(label: str, body: list[str], width: int = WIDTH, height: int = HEIGHT) -> Markup:
    # Every value below is escaped here or by the chart that made `body`, or a number.
    return Markup(  # noqa: S704
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img"'
        f' aria-label="{escape(label)}" preserveAspectRatio="xMidYMid meet">'
        f"<title>{escape(label)}</title>{''.join(body)}</svg>"
    )


def _axes(top: float, *, money_axis: bool = False) -> list[str]:
    out: list[str] = []
    plot_h = HEIGHT - TOP - BOTTOM
    for i in range(3):
        value = top * i / 2
        y = TOP + plot_h - plot_h * i / 2
        label = money(value) if money_axis else f"{value:g}"
        out.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(label)}</text>"
        )
    return out


def _day_labels(stats: Stats, slot: float) -> list[str]:
    n = len(stats.per_day)
    every = 1 if n <= 10 else (5 if n <= 31 else 15)
    out = []
    for i, day in enumerate(stats.per_day):
        if i % every == 0 or i == n - 1:
            x = LEFT + slot * (i + 0.5)
            out.append(
                f'<text class="axis" x="{x:.1f}" y="{HEIGHT - 8}" text-anchor="middle">'
                f"{day.day:%b %d}</text>"
            )
    return out


def per_day_chart(stats: Stats) -> Markup:
    """Requests filed per day, stacked by how they ended."""
    top = _nice_max(max((d.total for d in stats.per_day), default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(1, len(stats.per_day))
    bar = max(2.0, slot * 0.7)
    body = _axes(top)
    for i, day in enumerate(stats.per_day):
        x = LEFT + slot * i + (slot - bar) / 2
        y: float = TOP + plot_h
        tip = f"{day.day:%Y-%m-%d}: {day.total} requests — " + ", ".join(
            f"{day.outcomes[o]} {OUTCOME_LABELS[o].lower()}" for o in OUTCOMES if day.outcomes[o]
        )
        parts = []
        for outcome in OUTCOMES:
            h = plot_h * day.outcomes[outcome] / top
            if h <= 0:
                continue
            y -= h
            parts.append(
                f'<rect class="o-{outcome}" x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}"'
                f' height="{h:.1f}"/>'
            )
        body.append(f"<g><title>{escape(tip.rstrip(' —'))}</title>{''.join(parts)}</g>")
    body += _day_labels(stats, slot)
    return _svg(f"Requests per day, last {stats.days} days, by outcome", body)


def cost_chart(stats: Stats) -> Markup:
    """Cost per day (cents summed over the requests filed that day)."""
    top = _nice_max(max((d.cost_cents for d in stats.per_day), default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(1, len(stats.per_day))
    bar = max(2.0, slot * 0.7)
    body = _axes(top, money_axis=True)
    for i, day in enumerate(stats.per_day):
        h = plot_h * day.cost_cents / top
        x = LEFT + slot * i + (slot - bar) / 2
        body.append(
            f'<rect class="c-cost" x="{x:.1f}" y="{TOP + plot_h - h:.1f}" width="{bar:.1f}"'
            f' height="{h:.1f}"><title>{day.day:%Y-%m-%d}: {money(day.cost_cents)}</title></rect>'
        )
    body += _day_labels(stats, slot)
    return _svg(f"Cost per day, last {stats.days} days", body)


def success_chart(stats: Stats) -> Markup:
    """The success rate as a ring."""
    rate = stats.success_rate
    r, c = 52, 2 * 3.14159265 * 52
    filled = 0 if rate is None else c * rate
    text = "—" if rate is None else f"{rate:.0%}"
    body = [
        f'<circle class="ring-bg" cx="70" cy="70" r="{r}"/>',
        f'<circle class="ring" cx="70" cy="70" r="{r}" stroke-dasharray="{filled:.1f} {c:.1f}"'
        ' transform="rotate(-90 70 70)"/>',
        f'<text class="ring-text" x="70" y="78" text-anchor="middle">{text}</text>',
    ]
    return _svg(f"Success rate {text}", body, width=140, height=140)


def ranking_chart(rows: list[Ranked], label: str) -> Markup:
    """Horizontal bars: count per repository or person."""
    if not rows:
        return Markup('<p class="empty">Nothing yet.</p>')
    row_h, width, name_w = 30, 480, 170
    top = max(r.count for r in rows)
    body = []
    for i, row in enumerate(rows):
        y = i * row_h
        w = (width - name_w - 90) * row.count / top
        name = row.label if len(row.label) <= 22 else row.label[:21] + "…"
        body.append(
            f"<g><title>{escape(row.label)}: {row.count} requests, {money(row.cost_cents)}"
            f"</title>"
            f'<text class="label" x="0" y="{y + 19}">{escape(name)}</text>'
            f'<rect class="c-rank" x="{name_w}" y="{y + 6}" width="{max(w, 2):.1f}"'
            f' height="{row_h - 12}" rx="3"/>'
            f'<text class="value" x="{name_w + max(w, 2) + 6:.1f}" y="{y + 19}">'
            f"{row.count}</text></g>"
        )
    return _svg(label, body, width=width, height=row_h * len(rows))


def build(stats: Stats) -> Charts:
    """Every chart of the stats page."""
    return Charts(
        per_day=per_day_chart(stats),
        cost_per_day=cost_chart(stats),
        success=success_chart(stats),
        top_repos=ranking_chart(stats.top_repos, "Top repositories by requests"),
        top_requesters=ranking_chart(stats.top_requesters, "Top requesters by requests"),
    )
