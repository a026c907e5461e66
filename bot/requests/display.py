"""How money and time read to people, the same in Slack, on GitHub and on the dashboard."""

from __future__ import annotations


def number(value: object) -> float | None:
    """A number from a column or from agent-written metadata (which may hold anything)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None


def money(cents: object) -> str:
    """Cents as dollars: $1,234.56, or a dash."""
    value = number(cents)
    return "—" if value is None else f"${value / 100:,.2f}"


def duration(milliseconds: object) -> str:
    """Human duration: 850ms, 42s, 4m 12s, 1h 3m (a dash when unknown)."""
    ms = number(milliseconds)
    if ms is None or ms < 0:
        return "—"
    if ms < 1000:
        return f"{int(ms)}ms"
    seconds = int(ms // 1000)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes}m"
