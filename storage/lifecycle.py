"""The request lifecycle (DESIGN.md): which status may follow which."""

from __future__ import annotations

from storage.models import RequestStatus as S

FINAL = frozenset({S.COMPLETED, S.CANCELLED})

# Self-transitions of non-final states are allowed: an agent may report `processing`
# again with new fields, and a follow-up PR update keeps `pr_created`.
_ALLOWED: dict[S, frozenset[S]] = {
    S.PENDING: frozenset({S.ISSUE_CREATED, S.PROCESSING}),
    S.ISSUE_CREATED: frozenset({S.PROCESSING}),
    S.PROCESSING: frozenset({S.AWAITING_CLARIFICATION, S.PR_CREATED}),
    S.AWAITING_CLARIFICATION: frozenset({S.PROCESSING}),
    S.PR_CREATED: frozenset({S.COMPLETED, S.PROCESSING}),
    S.ERROR: frozenset({S.PROCESSING}),
    S.COMPLETED: frozenset(),
    S.CANCELLED: frozenset(),
}


def can_transition(current: S, new: S) -> bool:
    """Whether the lifecycle allows `current` → `new`."""
    if current in FINAL:
        return False
    if new == current or new in (S.ERROR, S.CANCELLED):
        return True
    return new in _ALLOWED[current]


def legal_transitions() -> list[tuple[S, S]]:
    """Every allowed (from, to) pair, for tests and documentation."""
    return [(a, b) for a in S for b in S if can_transition(a, b)]
