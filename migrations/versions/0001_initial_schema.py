"""Initial schema: the ADR's three tables and six enum types, plus Clarity's own tables.

The ADR part is identical to what drizzle-kit generated for the TypeScript worker (names of
tables, columns, enum types and values, constraints; `timestamp` without time zone; integer
identity keys), so `clarity db adopt` can take over that database. Additions, as DESIGN.md
lists them: `cancelled` in request_status, the ADR's "Indexes" list, and the clarity_* tables
(job queue, inbound-delivery dedupe, channel defaults, Slack messages we keep editing).

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "app_config",
        sa.Column("id", sa.Integer(), sa.Identity(always=True), nullable=False),
        sa.Column(
            "type", postgresql.ENUM("github", "claude", "slack", name="config_type"), nullable=False
        ),
        sa.Column("config", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("app_config_pkey")),
        sa.UniqueConstraint("type", name="app_config_type_unique"),
    )
    op.create_table(
        "clarity_channel_settings",
        sa.Column("channel_id", sa.Text(), nullable=False),
        sa.Column("default_repo", sa.Text(), nullable=True),
        sa.Column("updated_by", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("channel_id", name=op.f("clarity_channel_settings_pkey")),
    )
    op.create_table(
        "clarity_inbound_deliveries",
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("delivery_id", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("source", "delivery_id", name="clarity_inbound_deliveries_pkey"),
    )
    op.create_index(
        "clarity_inbound_deliveries_received_idx",
        "clarity_inbound_deliveries",
        ["received_at"],
        unique=False,
    )
    op.create_table(
        "clarity_jobs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=True),
        sa.Column("dedupe_key", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), server_default=sa.text("'queued'"), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("max_attempts", sa.Integer(), server_default=sa.text("8"), nullable=False),
        sa.Column("run_at", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.Column("locked_by", sa.Text(), nullable=True),
        sa.Column("locked_until", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("clarity_jobs_pkey")),
    )
    op.create_index(
        "clarity_jobs_due_idx",
        "clarity_jobs",
        ["run_at"],
        unique=False,
        postgresql_where=sa.text("status = 'queued'"),
    )
    op.create_index(
        "clarity_jobs_queued_key_idx",
        "clarity_jobs",
        ["dedupe_key"],
        unique=True,
        postgresql_where=sa.text("status = 'queued'"),
    )
    op.create_index("clarity_jobs_request_idx", "clarity_jobs", ["request_id"], unique=False)
    op.create_table(
        "feature_requests",
        sa.Column("id", sa.Integer(), sa.Identity(always=True), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column(
            "origin",
            postgresql.ENUM("slack", "github_issue", "web", name="request_origin"),
            nullable=False,
        ),
        sa.Column("repo", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("request_type", sa.Text(), nullable=True),
        sa.Column(
            "status",
            postgresql.ENUM(
                "pending",
                "issue_created",
                "processing",
                "awaiting_clarification",
                "pr_created",
                "completed",
                "error",
                "cancelled",
                name="request_status",
            ),
            server_default=sa.text("'pending'"),
            nullable=False,
        ),
        sa.Column("slack_user_id", sa.Text(), nullable=True),
        sa.Column("slack_user_name", sa.Text(), nullable=True),
        sa.Column("slack_channel_id", sa.Text(), nullable=True),
        sa.Column("slack_channel_name", sa.Text(), nullable=True),
        sa.Column("slack_thread_ts", sa.Text(), nullable=True),
        sa.Column("response_url", sa.Text(), nullable=True),
        sa.Column("issue_id", sa.Integer(), nullable=True),
        sa.Column("issue_number", sa.Integer(), nullable=True),
        sa.Column("issue_title", sa.Text(), nullable=True),
        sa.Column("issue_body", sa.Text(), nullable=True),
        sa.Column("issue_labels", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("issue_author", sa.Text(), nullable=True),
        sa.Column("issue_url", sa.Text(), nullable=True),
        sa.Column("web_user_id", sa.Text(), nullable=True),
        sa.Column("web_user_email", sa.Text(), nullable=True),
        sa.Column("repository_url", sa.Text(), nullable=True),
        sa.Column("repository_name", sa.Text(), nullable=True),
        sa.Column("repository_id", sa.Integer(), nullable=True),
        sa.Column("repository_owner", sa.Text(), nullable=True),
        sa.Column("repository_name_only", sa.Text(), nullable=True),
        sa.Column("app_id", sa.Text(), nullable=True),
        sa.Column(
            "task_status",
            postgresql.ENUM("pending", "processing", "completed", "error", name="task_status"),
            server_default=sa.text("'pending'"),
            nullable=True,
        ),
        sa.Column("pr_url", sa.Text(), nullable=True),
        sa.Column("pr_number", sa.Integer(), nullable=True),
        sa.Column("pr_branch_name", sa.Text(), nullable=True),
        sa.Column("retry_count", sa.Integer(), server_default=sa.text("0"), nullable=True),
        sa.Column("last_retry_at", sa.DateTime(), nullable=True),
        sa.Column("cost_usd", sa.Integer(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.Column("processed_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("feature_requests_pkey")),
        sa.UniqueConstraint("issue_id", name="feature_requests_issue_id_unique"),
        sa.UniqueConstraint("request_id", name="feature_requests_request_id_unique"),
    )
    op.create_index(
        "feature_requests_created_at_idx", "feature_requests", ["created_at"], unique=False
    )
    op.create_index(
        "feature_requests_issue_repo_idx",
        "feature_requests",
        ["issue_number", "repository_name"],
        unique=False,
    )
    op.create_index(
        "feature_requests_slack_thread_idx",
        "feature_requests",
        ["slack_channel_id", "slack_thread_ts"],
        unique=False,
    )
    op.create_index("feature_requests_status_idx", "feature_requests", ["status"], unique=False)
    op.create_table(
        "clarity_slack_posts",
        sa.Column("id", sa.Integer(), sa.Identity(always=True), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("ref", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("channel_id", sa.Text(), nullable=False),
        sa.Column("ts", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["feature_requests.request_id"],
            name="clarity_slack_posts_request_id_fkey",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("clarity_slack_posts_pkey")),
        sa.UniqueConstraint("request_id", "purpose", "ref", name="clarity_slack_posts_ref_key"),
    )
    op.create_table(
        "request_messages",
        sa.Column("id", sa.Integer(), sa.Identity(always=True), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column(
            "type",
            postgresql.ENUM(
                "initial_request",
                "clarification_ask",
                "clarification_answer",
                "follow_up_request",
                "processing_started",
                "processing_update",
                "pr_created",
                "pr_updated",
                "error",
                "retry",
                "cancelled",
                "agent_thinking",
                "agent_tool_call",
                "agent_tool_result",
                "agent_file_change",
                "agent_terminal",
                "agent_summary",
                name="message_type",
            ),
            nullable=False,
        ),
        sa.Column(
            "source",
            postgresql.ENUM("slack", "github", "web", "system", name="message_source"),
            nullable=False,
        ),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("actor_id", sa.Text(), nullable=True),
        sa.Column("actor_name", sa.Text(), nullable=True),
        sa.Column("metadata", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["feature_requests.request_id"],
            name="request_messages_request_id_feature_requests_request_id_fk",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("request_messages_pkey")),
    )
    op.create_index(
        "request_messages_request_created_idx",
        "request_messages",
        ["request_id", "created_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("request_messages_request_created_idx", table_name="request_messages")
    op.drop_table("request_messages")
    op.drop_table("clarity_slack_posts")
    op.drop_index("feature_requests_status_idx", table_name="feature_requests")
    op.drop_index("feature_requests_slack_thread_idx", table_name="feature_requests")
    op.drop_index("feature_requests_issue_repo_idx", table_name="feature_requests")
    op.drop_index("feature_requests_created_at_idx", table_name="feature_requests")
    op.drop_table("feature_requests")
    op.drop_index("clarity_jobs_request_idx", table_name="clarity_jobs")
    op.drop_index(
        "clarity_jobs_queued_key_idx",
        table_name="clarity_jobs",
        postgresql_where=sa.text("status = 'queued'"),
    )
    op.drop_index(
        "clarity_jobs_due_idx",
        table_name="clarity_jobs",
        postgresql_where=sa.text("status = 'queued'"),
    )
    op.drop_table("clarity_jobs")
    op.drop_index(
        "clarity_inbound_deliveries_received_idx", table_name="clarity_inbound_deliveries"
    )
    op.drop_table("clarity_inbound_deliveries")
    op.drop_table("clarity_channel_settings")
    op.drop_table("app_config")
    for enum_type in (
        "message_source",
        "message_type",
        "task_status",
        "request_origin",
        "config_type",
        "request_status",
    ):
        op.execute(f"DROP TYPE IF EXISTS {enum_type}")
