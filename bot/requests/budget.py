"""A request's spending limit: what it is, what is left of it, and how far a raise goes.

A request may spend its budget (`budgetUsd` recorded with it, else CLARITY_BUDGET_USD) over
all its runs; each run is given what is left. A run stopped by the budget offers to
continue with more: as much again as the budget was, up to CLARITY_MAX_BUDGET_USD.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from storage.budgets import latest_budget

# Less than a cent left is nothing left.
MINIMUM_USD = 0.01


async def request_budget(session: AsyncSession, request_id: str, default_usd: float) -> float:
    """The request's budget in US dollars: the latest it recorded, else the default."""
    recorded = await latest_budget(session, request_id)
    return recorded if recorded is not None and recorded > 0 else default_usd


def remaining(budget_usd: float, spent_cents: int | None) -> float:
    """What a new run may spend: the budget less what the request's runs spent."""
    return max(budget_usd - (spent_cents or 0) / 100, MINIMUM_USD)


def raise_step(budget_usd: float, max_usd: float) -> float | None:
    """How much "Continue with $X more" adds: the budget again, up to the cap (None: at it)."""
    step = round(min(budget_usd, max_usd - budget_usd), 2)
    return step if step >= MINIMUM_USD else None


def usd(amount: float) -> str:
    """Dollars for a person: `$3`, `$2.50`."""
    return f"${amount:,.0f}" if float(amount).is_integer() else f"${amount:,.2f}"
