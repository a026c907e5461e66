"""clarity_artifacts: what agent runs hand back (session transcripts, git bundles), in chunks.

The agent saves its Claude session after each run and uploads its work as a git bundle;
any replica may take the upload and any other may publish it, so they live in the
database. Chunks keep uploads streamed: never one value as large as the file.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "clarity_artifacts",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("label", sa.Text(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["feature_requests.request_id"],
            name="clarity_artifacts_request_id_fkey",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("clarity_artifacts_pkey")),
        sa.UniqueConstraint("request_id", "kind", "attempt", name="clarity_artifacts_key"),
    )
    op.create_table(
        "clarity_artifact_chunks",
        sa.Column("artifact_id", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["artifact_id"],
            ["clarity_artifacts.id"],
            name="clarity_artifact_chunks_artifact_id_fkey",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("artifact_id", "seq", name="clarity_artifact_chunks_pkey"),
    )


def downgrade() -> None:
    op.drop_table("clarity_artifact_chunks")
    op.drop_table("clarity_artifacts")
