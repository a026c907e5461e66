"""clarity_runs: one row per dispatch attempt of a request.

Attempt numbers (the runner's Idempotency-Key) and the Slack progress message's run number
used to be counted from clarity_jobs rows, which kept that table from ever being pruned.
Each run now has its own row: request, attempt, kind, state, the backend's sandbox id, the
agent's Claude session id, heartbeat, cost, duration and turns.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "clarity_runs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), server_default=sa.text("'queued'"), nullable=False),
        sa.Column("backend", sa.Text(), nullable=True),
        sa.Column("sandbox_id", sa.Text(), nullable=True),
        sa.Column("claude_session_id", sa.Text(), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("cost_cents", sa.Integer(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("turns", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"], ["feature_requests.request_id"], name="clarity_runs_request_id_fkey"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("clarity_runs_pkey")),
        sa.UniqueConstraint("request_id", "attempt", name="clarity_runs_request_attempt_key"),
    )
    op.create_index(
        "clarity_runs_live_idx",
        "clarity_runs",
        ["state"],
        unique=False,
        postgresql_where=sa.text("state IN ('queued', 'starting', 'running')"),
    )
    # Existing requests keep counting where their dispatch jobs left off.
    op.execute(
        """
        INSERT INTO clarity_runs (request_id, attempt, kind, state, created_at, updated_at)
        SELECT j.request_id, (j.payload->>'attempt')::int, j.payload->>'kind',
               CASE WHEN j.status IN ('queued', 'running') THEN 'queued' ELSE 'succeeded' END,
               j.created_at, j.updated_at
        FROM clarity_jobs j
        JOIN feature_requests r ON r.request_id = j.request_id
        WHERE j.kind = 'dispatch' AND j.payload ? 'attempt'
        ON CONFLICT ON CONSTRAINT clarity_runs_request_attempt_key DO NOTHING
        """
    )


def downgrade() -> None:
    op.drop_index(
        "clarity_runs_live_idx",
        table_name="clarity_runs",
        postgresql_where=sa.text("state IN ('queued', 'starting', 'running')"),
    )
    op.drop_table("clarity_runs")
