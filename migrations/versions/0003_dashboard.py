"""Web dashboard: sign-in links, sessions, and the indexes its request list needs.

clarity_login_tokens holds the single-use sign-in links sent privately in Slack (valid 10
minutes) and clarity_web_sessions the sessions they start; both keep only the SHA-256 of
the token, so a copy of the database signs nobody in.

The feature_requests indexes keep the dashboard's list (newest first, 100 a page, keyset
on created_at and id) fast with 100,000 requests: one per filter it offers (status,
repository, requester, origin), each ending in (created_at, id) so a filtered page is an
index range read, and a GIN index over the full-text document of title and description.
They are built without CONCURRENTLY because Alembic runs every migration in one
transaction; a requests table builds them in seconds even at a million rows.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEARCH_DOCUMENT = (
    "to_tsvector('english'::regconfig, (COALESCE(title, ''::text) || ' '::text) || description)"
)


def upgrade() -> None:
    op.create_table(
        "clarity_login_tokens",
        sa.Column("token_hash", sa.Text(), nullable=False),
        sa.Column("slack_user_id", sa.Text(), nullable=False),
        sa.Column("user_name", sa.Text(), nullable=False),
        sa.Column("team_id", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("used_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("clarity_login_tokens_pkey")),
    )
    op.create_index(
        "clarity_login_tokens_expires_idx", "clarity_login_tokens", ["expires_at"], unique=False
    )
    op.create_table(
        "clarity_web_sessions",
        sa.Column("token_hash", sa.Text(), nullable=False),
        sa.Column("slack_user_id", sa.Text(), nullable=False),
        sa.Column("user_name", sa.Text(), nullable=False),
        sa.Column("team_id", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("clarity_web_sessions_pkey")),
    )
    op.create_index(
        "clarity_web_sessions_expires_idx", "clarity_web_sessions", ["expires_at"], unique=False
    )
    op.create_index(
        "feature_requests_created_id_idx", "feature_requests", ["created_at", "id"], unique=False
    )
    for name, column in (
        ("feature_requests_status_created_idx", "status"),
        ("feature_requests_repo_created_idx", "repo"),
        ("feature_requests_origin_created_idx", "origin"),
    ):
        op.create_index(name, "feature_requests", [column, "created_at", "id"], unique=False)
    op.create_index(
        "feature_requests_requester_created_idx",
        "feature_requests",
        [sa.text("COALESCE(slack_user_id, issue_author)"), "created_at", "id"],
        unique=False,
    )
    op.create_index(
        "feature_requests_search_idx",
        "feature_requests",
        [sa.text(SEARCH_DOCUMENT)],
        unique=False,
        postgresql_using="gin",
    )


def downgrade() -> None:
    for name in (
        "feature_requests_search_idx",
        "feature_requests_requester_created_idx",
        "feature_requests_origin_created_idx",
        "feature_requests_repo_created_idx",
        "feature_requests_status_created_idx",
        "feature_requests_created_id_idx",
    ):
        op.drop_index(name, table_name="feature_requests")
    op.drop_index("clarity_web_sessions_expires_idx", table_name="clarity_web_sessions")
    op.drop_table("clarity_web_sessions")
    op.drop_index("clarity_login_tokens_expires_idx", table_name="clarity_login_tokens")
    op.drop_table("clarity_login_tokens")
