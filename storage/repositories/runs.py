"""RunsRepository: one row per dispatch attempt of a request (clarity_runs)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.errors import DB_ERRORS, InsertError, QueryError, UpdateError, translate
from storage.models import Run, utcnow

# A run in one of these states may still do something.
LIVE_STATES = ("queued", "starting", "running")
# A run in one of these holds a sandbox (or is getting one): what the concurrency cap counts.
ACTIVE_STATES = ("starting", "running")
CANCEL_KIND = "cancel"


class RunsRepository:
    """Create runs with the next attempt number, follow their state, count them."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, request_id: str, kind: str) -> Run:
        """A new run with the request's next attempt number.

        The caller holds the request's row lock (it just changed the request), which makes
        the numbering race-free.
        """
        try:
            last = await self.session.scalar(
                select(func.max(Run.attempt)).where(Run.request_id == request_id)
            )
            run = Run(request_id=request_id, attempt=int(last or 0) + 1, kind=kind)
            self.session.add(run)
            await self.session.flush()
        except DB_ERRORS as exc:
            raise translate(exc, InsertError, "recording a run") from exc
        return run

    async def get(self, request_id: str, attempt: int, *, lock: bool = False) -> Run | None:
        """One run of a request."""
        stmt = select(Run).where(Run.request_id == request_id, Run.attempt == attempt)
        if lock:
            stmt = stmt.with_for_update()
        try:
            return (await self.session.scalars(stmt)).first()
        except DB_ERRORS as exc:
            raise translate(exc, QueryError, "reading a run") from exc

    async def latest(self, request_id: str, *, include_cancel: bool = False) -> Run | None:
        """The request's newest run (cancel dispatches left out unless asked for)."""
        stmt = select(Run).where(Run.request_id == request_id)
        if not include_cancel:
            stmt = stmt.where(Run.kind != CANCEL_KIND)
        try:
            return (await self.session.scalars(stmt.order_by(Run.attempt.desc()).limit(1))).first()
        except DB_ERRORS as exc:
            raise translate(exc, QueryError, "reading the latest run") from exc

    async def number_of(self, run: Run) -> int:
        """The run's number as people see it: its place among the request's agent runs."""
        try:
            count = await self.session.scalar(
                select(func.count()).where(
                    Run.request_id == run.request_id,
                    Run.kind != CANCEL_KIND,
                    Run.attempt <= run.attempt,
                )
            )
        except DB_ERRORS as exc:
            raise translate(exc, QueryError, "counting runs") from exc
        return max(int(count or 0), 1)

    async def newer_than(self, request_id: str, attempt: int) -> bool:
        """Whether the request has a run after `attempt` (a Retry or an answer carried on)."""
        try:
            found = await self.session.scalar(
                select(Run.id).where(Run.request_id == request_id, Run.attempt > attempt).limit(1)
            )
        except DB_ERRORS as exc:
            raise translate(exc, QueryError, "reading runs") from exc
        return found is not None

    async def for_request(self, request_id: str) -> list[Run]:
        """Every run of a request, oldest first."""
        try:
            rows = await self.session.scalars(
                select(Run).where(Run.request_id == request_id).order_by(Run.attempt)
            )
        except DB_ERRORS as exc:
            raise translate(exc, QueryError, "listing runs") from exc
        return list(rows.all())

    async def live(self, *, backend: str | None = None) -> list[Run]:
        """Runs that may still be doing something, oldest first."""
        stmt = select(Run).where(Run.state.in_(LIVE_STATES))
        if backend is not None:
            stmt = stmt.where(Run.backend == backend)
        try:
            return list((await self.session.scalars(stmt.order_by(Run.id))).all())
        except DB_ERRORS as exc:
            raise translate(exc, QueryError, "listing live runs") from exc

    async def update(self, run_id: int, **fields: Any) -> None:
        """Change a run's fields (state, sandbox, heartbeat, cost…)."""
        fields.setdefault("updated_at", utcnow())
        try:
            await self.session.execute(update(Run).where(Run.id == run_id).values(**fields))
        except DB_ERRORS as exc:
            raise translate(exc, UpdateError, "updating a run") from exc

    async def finish(
        self, run_id: int, state: str, *, error: str | None = None, **fields: Any
    ) -> bool:
        """End a live run in `state`; False when it had ended already (first report wins)."""
        now = utcnow()
        values: dict[str, Any] = {"state": state, "finished_at": now, "updated_at": now, **fields}
        if error is not None:
            values["error"] = error[:4000]
        try:
            result = await self.session.execute(
                update(Run).where(Run.id == run_id, Run.state.in_(LIVE_STATES)).values(**values)
            )
        except DB_ERRORS as exc:
            raise translate(exc, UpdateError, "finishing a run") from exc
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def started_since(self, request_id: str) -> dt.datetime | None:
        """When the request's current agent run was created (its activity starts there)."""
        run = await self.latest(request_id)
        return None if run is None else run.created_at

    # --- running runs (bot.dispatch, bot.runner.watch) ----------------------------------------

    async def active_count(self) -> int:
        """Agent runs holding a sandbox now (starting or running), every replica's."""
        try:
            count = await self.session.scalar(
                select(func.count()).where(Run.state.in_(ACTIVE_STATES), Run.kind != CANCEL_KIND)
            )
        except DB_ERRORS as exc:
            raise translate(exc, QueryError, "counting active runs") from exc
        return int(count or 0)

    async def waiting_before(self, run: Run) -> int:
        """Agent runs queued before `run` that still wait to start (their dispatch job is
        pending and their request is not final): they go first."""
        try:
            count = await self.session.scalar(
                text(
                    """
                    SELECT count(*) FROM clarity_runs r
                    JOIN feature_requests f ON f.request_id = r.request_id
                    WHERE r.state = 'queued' AND r.kind <> 'cancel' AND r.id < :id
                      AND f.status NOT IN ('completed', 'cancelled')
                      AND EXISTS (
                        SELECT 1 FROM clarity_jobs j
                        WHERE j.kind = 'dispatch' AND j.request_id = r.request_id
                          AND j.status IN ('queued', 'running')
                          AND j.payload->>'attempt' = r.attempt::text)
                    """
                ),
                {"id": run.id},
            )
        except DB_ERRORS as exc:
            raise translate(exc, QueryError, "counting waiting runs") from exc
        return int(count or 0)

    async def live_of(self, request_id: str) -> list[Run]:
        """The request's agent runs that may still be doing something."""
        try:
            rows = await self.session.scalars(
                select(Run)
                .where(
                    Run.request_id == request_id,
                    Run.state.in_(LIVE_STATES),
                    Run.kind != CANCEL_KIND,
                )
                .order_by(Run.attempt)
            )
        except DB_ERRORS as exc:
            raise translate(exc, QueryError, "listing a request's live runs") from exc
        return list(rows.all())

    async def watched(self, backend: str, *, limit: int = 200) -> list[Run]:
        """Live agent runs of `backend` that have a sandbox, oldest first, each locked for
        this watcher (rows another watcher holds are skipped)."""
        try:
            rows = await self.session.scalars(
                select(Run)
                .where(
                    Run.state.in_(ACTIVE_STATES),
                    Run.backend == backend,
                    Run.sandbox_id.is_not(None),
                    Run.kind != CANCEL_KIND,
                )
                .order_by(Run.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        except DB_ERRORS as exc:
            raise translate(exc, QueryError, "listing watched runs") from exc
        return list(rows.all())

    async def silent(self, before: dt.datetime, *, limit: int = 200) -> list[Run]:
        """Active runs with a sandbox whose watcher has not been by since `before` (locked,
        skipping rows another watcher holds)."""
        try:
            rows = await self.session.scalars(
                select(Run)
                .where(
                    Run.state.in_(ACTIVE_STATES),
                    Run.sandbox_id.is_not(None),
                    Run.kind != CANCEL_KIND,
                    func.coalesce(Run.heartbeat_at, Run.started_at, Run.created_at) < before,
                )
                .order_by(Run.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        except DB_ERRORS as exc:
            raise translate(exc, QueryError, "listing silent runs") from exc
        return list(rows.all())

    async def any_active(self) -> bool:
        """Whether any agent run holds a sandbox now."""
        return await self.active_count() > 0

    async def heartbeat(self, run_ids: list[int]) -> None:
        """The watcher saw these runs' sandboxes alive just now."""
        if not run_ids:
            return
        now = utcnow()
        try:
            await self.session.execute(
                update(Run).where(Run.id.in_(run_ids)).values(heartbeat_at=now, updated_at=now)
            )
        except DB_ERRORS as exc:
            raise translate(exc, UpdateError, "recording heartbeats") from exc

    async def workers_alive_on(self, host: str) -> bool:
        """Whether a job worker on `host` holds a job with a live lease (so the machine is
        up, only busy): worker ids start with the host name (bot.workers)."""
        try:
            found = await self.session.scalar(
                text(
                    """
                    SELECT 1 FROM clarity_jobs
                    WHERE status = 'running' AND locked_by LIKE :prefix
                      AND locked_until > timezone('UTC', now())
                    LIMIT 1
                    """
                ),
                {
                    "prefix": host.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                    + ":%"
                },
            )
        except DB_ERRORS as exc:
            raise translate(exc, QueryError, "looking for a host's workers") from exc
        return found is not None
