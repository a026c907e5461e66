"""SQLAlchemy models: the ADR's Drizzle schema, column for column, plus Clarity's own tables.

The ADR tables keep drizzle-kit's names (tables, columns, enum types, constraints) so a
database created by the TypeScript worker can be adopted as it is. Everything that differs
from the ADR is listed in DESIGN.md ("Data") and named in the migration that adds it.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Annotated, Any, cast

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ENUM, JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Postgres's own default names, which are also what drizzle-kit leaves in place for
# primary keys; unique and foreign-key names below are spelled out as drizzle-kit spells them.
NAMING_CONVENTION = {
    "ix": "%(table_name)s_%(column_0_N_name)s_idx",
    "uq": "%(table_name)s_%(column_0_N_name)s_key",
    "fk": "%(table_name)s_%(column_0_N_name)s_fkey",
    "pk": "%(table_name)s_pkey",
    "ck": "%(table_name)s_%(constraint_name)s_check",
}


class UTCDateTime(TypeDecorator[dt.datetime]):
    """`timestamp` without time zone that holds UTC; Python sees aware UTC datetimes."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC)


def utcnow() -> dt.datetime:
    """The current time, aware, in UTC."""
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        dt.datetime: UTCDateTime(),
        str: Text(),
        int: Integer(),
        dict[str, Any]: JSONB(),
    }


# --- enum types (values in the ADR's order; `cancelled` is Clarity's addition) ---------


class RequestStatus(enum.StrEnum):
    PENDING = "pending"
    ISSUE_CREATED = "issue_created"
    PROCESSING = "processing"
    AWAITING_CLARIFICATION = "awaiting_clarification"
    PR_CREATED = "pr_created"
    COMPLETED = "completed"
    ERROR = "error"
    CANCELLED = "cancelled"


class TaskStatus(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    ERROR = "error"


class ConfigType(enum.StrEnum):
    GITHUB = "github"
    CLAUDE = "claude"
    SLACK = "slack"


class RequestOrigin(enum.StrEnum):
    SLACK = "slack"
    GITHUB_ISSUE = "github_issue"
    WEB = "web"


class MessageType(enum.StrEnum):
    INITIAL_REQUEST = "initial_request"
    CLARIFICATION_ASK = "clarification_ask"
    CLARIFICATION_ANSWER = "clarification_answer"
    FOLLOW_UP_REQUEST = "follow_up_request"
    PROCESSING_STARTED = "processing_started"
    PROCESSING_UPDATE = "processing_update"
    PR_CREATED = "pr_created"
    PR_UPDATED = "pr_updated"
    ERROR = "error"
    RETRY = "retry"
    CANCELLED = "cancelled"
    AGENT_THINKING = "agent_thinking"
    AGENT_TOOL_CALL = "agent_tool_call"
    AGENT_TOOL_RESULT = "agent_tool_result"
    AGENT_FILE_CHANGE = "agent_file_change"
    AGENT_TERMINAL = "agent_terminal"
    AGENT_SUMMARY = "agent_summary"


AGENT_MESSAGE_TYPES = frozenset(t for t in MessageType if t.value.startswith("agent_"))


class MessageSource(enum.StrEnum):
    SLACK = "slack"
    GITHUB = "github"
    WEB = "web"
    SYSTEM = "system"


def _pg_enum(cls: type[enum.StrEnum], name: str) -> ENUM:
    return ENUM(
        cls,
        name=name,
        values_callable=lambda e: [m.value for m in e],
        create_type=True,
        validate_strings=True,
    )


request_status_enum = _pg_enum(RequestStatus, "request_status")
task_status_enum = _pg_enum(TaskStatus, "task_status")
config_type_enum = _pg_enum(ConfigType, "config_type")
request_origin_enum = _pg_enum(RequestOrigin, "request_origin")
message_type_enum = _pg_enum(MessageType, "message_type")
message_source_enum = _pg_enum(MessageSource, "message_source")

IdentityPk = Annotated[int, mapped_column(Integer, Identity(always=True), primary_key=True)]
CreatedAt = Annotated[dt.datetime, mapped_column(server_default=text("now()"))]


# --- the ADR's tables ------------------------------------------------------------------


class AppConfig(Base):
    __tablename__ = "app_config"
    __table_args__ = (UniqueConstraint("type", name="app_config_type_unique"),)

    id: Mapped[IdentityPk]
    type: Mapped[ConfigType] = mapped_column(config_type_enum)
    config: Mapped[dict[str, Any]]
    created_at: Mapped[CreatedAt]
    updated_at: Mapped[CreatedAt]


class FeatureRequest(Base):
    __tablename__ = "feature_requests"
    __table_args__ = (
        UniqueConstraint("request_id", name="feature_requests_request_id_unique"),
        UniqueConstraint("issue_id", name="feature_requests_issue_id_unique"),
        Index("feature_requests_slack_thread_idx", "slack_channel_id", "slack_thread_ts"),
        Index("feature_requests_issue_repo_idx", "issue_number", "repository_name"),
        Index("feature_requests_status_idx", "status"),
        Index("feature_requests_created_at_idx", "created_at"),
    )

    id: Mapped[IdentityPk]
    request_id: Mapped[str]
    origin: Mapped[RequestOrigin] = mapped_column(request_origin_enum)

    repo: Mapped[str]
    title: Mapped[str | None]
    description: Mapped[str]
    request_type: Mapped[str | None]
    status: Mapped[RequestStatus] = mapped_column(
        request_status_enum, server_default=text("'pending'")
    )

    slack_user_id: Mapped[str | None]
    slack_user_name: Mapped[str | None]
    slack_channel_id: Mapped[str | None]
    slack_channel_name: Mapped[str | None]
    slack_thread_ts: Mapped[str | None]
    response_url: Mapped[str | None]

    issue_id: Mapped[int | None]
    issue_number: Mapped[int | None]
    issue_title: Mapped[str | None]
    issue_body: Mapped[str | None]
    issue_labels: Mapped[list[str] | None] = mapped_column(JSONB)
    issue_author: Mapped[str | None]
    issue_url: Mapped[str | None]

    web_user_id: Mapped[str | None]
    web_user_email: Mapped[str | None]

    repository_url: Mapped[str | None]
    repository_name: Mapped[str | None]
    repository_id: Mapped[int | None]
    repository_owner: Mapped[str | None]
    repository_name_only: Mapped[str | None]

    app_id: Mapped[str | None]
    task_status: Mapped[TaskStatus | None] = mapped_column(
        task_status_enum, server_default=text("'pending'")
    )

    pr_url: Mapped[str | None]
    pr_number: Mapped[int | None]
    pr_branch_name: Mapped[str | None]

    retry_count: Mapped[int | None] = mapped_column(server_default=text("0"))
    last_retry_at: Mapped[dt.datetime | None]

    cost_usd: Mapped[int | None]  # cents, as the ADR stores it
    duration_ms: Mapped[int | None]

    created_at: Mapped[CreatedAt]
    updated_at: Mapped[CreatedAt]
    processed_at: Mapped[dt.datetime | None]


class RequestMessage(Base):
    __tablename__ = "request_messages"
    __table_args__ = (Index("request_messages_request_created_idx", "request_id", "created_at"),)

    id: Mapped[IdentityPk]
    request_id: Mapped[str] = mapped_column(
        ForeignKey(
            "feature_requests.request_id",
            name="request_messages_request_id_feature_requests_request_id_fk",
        )
    )
    type: Mapped[MessageType] = mapped_column(message_type_enum)
    source: Mapped[MessageSource] = mapped_column(message_source_enum)
    content: Mapped[str]
    actor_id: Mapped[str | None]
    actor_name: Mapped[str | None]
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONB)
    created_at: Mapped[CreatedAt]


# --- Clarity's own tables --------------------------------------------------------------


# clarity_jobs.max_attempts's default (storage.jobs.enqueue_many spells it out).
JOB_MAX_ATTEMPTS = 8


class Job(Base):
    """A durable unit of work (dispatch, notification, slow webhook work)."""

    __tablename__ = "clarity_jobs"
    __table_args__ = (
        # Workers poll the queued jobs that are due.
        Index("clarity_jobs_due_idx", "run_at", postgresql_where=text("status = 'queued'")),
        # At most one queued job per key: coalescing (progress updates) and idempotent enqueues.
        Index(
            "clarity_jobs_queued_key_idx",
            "dedupe_key",
            unique=True,
            postgresql_where=text("status = 'queued'"),
        ),
        Index("clarity_jobs_request_idx", "request_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    kind: Mapped[str]
    payload: Mapped[dict[str, Any]]
    request_id: Mapped[str | None]
    dedupe_key: Mapped[str | None]
    # queued → running → done | failed; a running job whose lease ran out is queued again.
    status: Mapped[str] = mapped_column(server_default=text("'queued'"))
    attempts: Mapped[int] = mapped_column(server_default=text("0"))
    max_attempts: Mapped[int] = mapped_column(server_default=text(str(JOB_MAX_ATTEMPTS)))
    run_at: Mapped[CreatedAt]
    locked_by: Mapped[str | None]
    locked_until: Mapped[dt.datetime | None]
    last_error: Mapped[str | None]
    created_at: Mapped[CreatedAt]
    updated_at: Mapped[CreatedAt]
    finished_at: Mapped[dt.datetime | None]


class InboundDelivery(Base):
    """Inbound deliveries already acted on (Slack event ids, GitHub delivery ids, clicks)."""

    __tablename__ = "clarity_inbound_deliveries"
    __table_args__ = (
        PrimaryKeyConstraint("source", "delivery_id", name="clarity_inbound_deliveries_pkey"),
        Index("clarity_inbound_deliveries_received_idx", "received_at"),
    )

    source: Mapped[str]
    delivery_id: Mapped[str]
    received_at: Mapped[CreatedAt]


class ChannelSetting(Base):
    """Per-channel defaults (`/clarity repo owner/repo`)."""

    __tablename__ = "clarity_channel_settings"

    channel_id: Mapped[str] = mapped_column(primary_key=True)
    default_repo: Mapped[str | None]
    updated_by: Mapped[str | None]
    updated_at: Mapped[CreatedAt]


class SlackPost(Base):
    """Slack messages Clarity keeps editing: a request's root message, progress, questions."""

    __tablename__ = "clarity_slack_posts"
    __table_args__ = (
        UniqueConstraint("request_id", "purpose", "ref", name="clarity_slack_posts_ref_key"),
    )

    id: Mapped[IdentityPk]
    request_id: Mapped[str] = mapped_column(
        ForeignKey("feature_requests.request_id", name="clarity_slack_posts_request_id_fkey")
    )
    purpose: Mapped[str]  # root | progress | question
    ref: Mapped[str] = mapped_column(server_default=text("''"))
    channel_id: Mapped[str]
    ts: Mapped[str]
    created_at: Mapped[CreatedAt]
    updated_at: Mapped[CreatedAt]


class Run(Base):
    """One dispatch of a request to the runner: its attempt number, sandbox and outcome."""

    __tablename__ = "clarity_runs"
    __table_args__ = (
        UniqueConstraint("request_id", "attempt", name="clarity_runs_request_attempt_key"),
        # The run watchers read the live runs; the set is small however long the history.
        Index(
            "clarity_runs_live_idx",
            "state",
            postgresql_where=text("state IN ('queued', 'starting', 'running')"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    request_id: Mapped[str] = mapped_column(
        ForeignKey("feature_requests.request_id", name="clarity_runs_request_id_fkey")
    )
    attempt: Mapped[int]
    # initial | clarification_answer | follow_up | retry | cancel
    kind: Mapped[str]
    # queued → starting → running → succeeded | failed | cancelled | lost
    state: Mapped[str] = mapped_column(server_default=text("'queued'"))
    backend: Mapped[str | None]
    sandbox_id: Mapped[str | None]
    claude_session_id: Mapped[str | None]
    heartbeat_at: Mapped[dt.datetime | None]
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    cost_cents: Mapped[int | None]
    duration_ms: Mapped[int | None]
    turns: Mapped[int | None]
    error: Mapped[str | None]
    created_at: Mapped[CreatedAt]
    updated_at: Mapped[CreatedAt]


# --- the web dashboard (migration 0003) -------------------------------------------------


class WebSession(Base):
    """A dashboard session; the cookie holds the token, the table only its SHA-256."""

    __tablename__ = "clarity_web_sessions"
    __table_args__ = (Index("clarity_web_sessions_expires_idx", "expires_at"),)

    token_hash: Mapped[str] = mapped_column(primary_key=True)
    slack_user_id: Mapped[str]
    user_name: Mapped[str]
    team_id: Mapped[str | None]
    created_at: Mapped[CreatedAt]
    expires_at: Mapped[dt.datetime]


class LoginToken(Base):
    """A single-use sign-in link sent privately in Slack; only its SHA-256 is kept."""

    __tablename__ = "clarity_login_tokens"
    __table_args__ = (Index("clarity_login_tokens_expires_idx", "expires_at"),)

    token_hash: Mapped[str] = mapped_column(primary_key=True)
    slack_user_id: Mapped[str]
    user_name: Mapped[str]
    team_id: Mapped[str | None]
    created_at: Mapped[CreatedAt]
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]


# The dashboard's list: newest first (keyset on created_at, id), per filter, and full-text
# search. The document expression is spelled exactly like storage.dashboard's search, so
# the planner uses the GIN index.
SEARCH_CONFIG = "english"
_feature_requests = cast(Table, FeatureRequest.__table__)
_requests = _feature_requests.c
Index("feature_requests_created_id_idx", _requests.created_at, _requests.id)
Index("feature_requests_status_created_idx", _requests.status, _requests.created_at, _requests.id)
Index("feature_requests_repo_created_idx", _requests.repo, _requests.created_at, _requests.id)
Index("feature_requests_origin_created_idx", _requests.origin, _requests.created_at, _requests.id)
Index(
    "feature_requests_requester_created_idx",
    text("COALESCE(slack_user_id, issue_author)"),
    _requests.created_at,
    _requests.id,
    _table=_feature_requests,
)
Index(
    "feature_requests_search_idx",
    # As PostgreSQL prints it back, so the drift check (Alembic) compares it equal.
    text(
        f"to_tsvector('{SEARCH_CONFIG}'::regconfig,"
        " (COALESCE(title, ''::text) || ' '::text) || description)"
    ),
    postgresql_using="gin",
    _table=_feature_requests,
)


class Artifact(Base):
    """A file an agent run handed back: its session transcript or its git bundle.

    Stored in PostgreSQL, in chunks (clarity_artifact_chunks), so that any replica can
    read what any other took in, and an upload is never held whole in memory.
    """

    __tablename__ = "clarity_artifacts"
    __table_args__ = (
        # One session per request (the latest), one bundle per run.
        UniqueConstraint("request_id", "kind", "attempt", name="clarity_artifacts_key"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    request_id: Mapped[str] = mapped_column(
        ForeignKey("feature_requests.request_id", name="clarity_artifacts_request_id_fkey")
    )
    # session | bundle
    kind: Mapped[str]
    # The run's attempt for a bundle; 0 for the request's session.
    attempt: Mapped[int]
    # Clarity-Session-Id of a session; Clarity-Run-Outcome of a bundle.
    label: Mapped[str | None]
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str]
    created_at: Mapped[CreatedAt]


class ArtifactChunk(Base):
    """One piece of an artifact, in order."""

    __tablename__ = "clarity_artifact_chunks"
    __table_args__ = (
        PrimaryKeyConstraint("artifact_id", "seq", name="clarity_artifact_chunks_pkey"),
    )

    artifact_id: Mapped[int] = mapped_column(
        BigInteger,
        ForeignKey(
            "clarity_artifacts.id",
            name="clarity_artifact_chunks_artifact_id_fkey",
            ondelete="CASCADE",
        ),
    )
    seq: Mapped[int]
    data: Mapped[bytes] = mapped_column(LargeBinary)
