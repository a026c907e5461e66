"""The side-API's wire shapes: request bodies and answers, camelCase, as DESIGN.md lists them.

These models are the contract: handlers validate with them, answers are dumped from them, and
/api/openapi.json is generated from their JSON schemas.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    HttpUrl,
    TypeAdapter,
)
from pydantic.alias_generators import to_camel

from storage.models import (
    FeatureRequest,
    MessageSource,
    MessageType,
    RequestMessage,
    RequestOrigin,
    RequestStatus,
    TaskStatus,
)
from storage.repositories.feature_requests import CURSOR_PATTERN
from storage.schemas import MessageMetadata

Choice = Annotated[str, Field(min_length=1, max_length=200, pattern=r"\S")]


def _json_integer(value: Any) -> Any:
    # JSON Schema's "integer" is any number with no fraction (3 and 3.0), and nothing else:
    # not true, not "3".
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be an integer")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError("must be an integer")
    return int(value)


WireInt = Annotated[int, Field(strict=False), BeforeValidator(_json_integer)]
PositiveInt32 = Annotated[
    int, Field(strict=False, ge=1, le=2**31 - 1), BeforeValidator(_json_integer)
]
Millis = Annotated[int, Field(strict=False, ge=0, le=2**31 - 1), BeforeValidator(_json_integer)]


class MessageMetadataIn(MessageMetadata):
    """Message metadata as the side-API takes it: `options` are the answers offered."""

    issue_comment_id: WireInt | None = None
    pr_comment_id: WireInt | None = None
    duration_ms: WireInt | None = None
    cost_cents: WireInt | None = None
    retry_count: WireInt | None = None
    tool_duration_ms: WireInt | None = None
    exit_code: WireInt | None = None
    turn_number: WireInt | None = None

    options: list[Choice] | None = Field(
        default=None, max_length=10, description="Answers offered as buttons (clarification_ask)"
    )


INT32_MAX = 2**31 - 1
# Cents are stored in an integer column, so the largest cost is INT32_MAX cents.
MAX_COST_USD = INT32_MAX / 100


class WireModel(BaseModel):
    """camelCase on the wire; unknown keys in a body are an error, not silently dropped."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=False,
        serialize_by_alias=True,
        extra="forbid",
    )


class AnswerModel(WireModel):
    """An answer: built in code by field name, sent camelCase."""

    model_config = ConfigDict(validate_by_name=True)


RepoName = Annotated[
    str,
    Field(
        # GitHub's rules, as bot.requests.ids.parse_repo applies them.
        # (any name but "." and "..", spelled without look-ahead for every regex engine)
        pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/(?:[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}"
        r"|\.[A-Za-z0-9_-][A-Za-z0-9._-]{0,98}|\.\.[A-Za-z0-9._-]{1,98})$",
        description="GitHub repository as owner/name",
        examples=["octo-org/widgets"],
    ),
]


# --- bodies ---------------------------------------------------------------------------


class CreateRequestBody(WireModel):
    """POST /api/requests."""

    repo: RepoName
    description: str = Field(
        min_length=1, max_length=60_000, pattern=r"\S", description="Not blank"
    )
    title: str | None = Field(default=None, min_length=1, max_length=300)
    origin: RequestOrigin = Field(
        default=RequestOrigin.WEB, description="Where the request came from (default web)"
    )


_URL = TypeAdapter(HttpUrl)
_PCHAR = r"(?:[A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PORT = r"(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_PR_URL_PATTERN = (
    rf"^https?://{_LABEL}(?:\.{_LABEL})*(?::{_PORT})?"
    rf"(?:/(?:{_PCHAR}|/)*)?(?:\?(?:{_PCHAR}|[/?])*)?(?:#(?:{_PCHAR}|[/?])*)?$"
)


def _http_url(value: str) -> str:
    # Checked as a URL, kept as sent: the limit applies to what the agent sent, not to a
    # normalised form that may be longer.
    _URL.validate_python(value)
    return value


PrUrl = Annotated[
    str,
    Field(
        max_length=2000,
        # An http(s) URI as RFC 3986 spells it (other characters must be percent-encoded).
        pattern=_PR_URL_PATTERN,
        json_schema_extra={"format": "uri"},
        description="The pull request's web address (http or https)",
    ),
    AfterValidator(_http_url),
]


class StatusUpdateBody(WireModel):
    """PATCH /api/requests/{requestId}/status."""

    status: RequestStatus
    pr_url: PrUrl | None = None
    pr_number: PositiveInt32 | None = None
    pr_branch_name: str | None = Field(default=None, min_length=1, max_length=255)
    cost_usd: float | None = Field(
        default=None,
        ge=0,
        le=MAX_COST_USD,
        allow_inf_nan=False,
        description=(
            "Cost of the run being reported, in US dollars (e.g. 0.42). Stored in cents: "
            "the run's message gets costCents, the request's total cost adds it up."
        ),
    )
    duration_ms: Millis | None = Field(
        default=None,
        description="Duration of the run being reported; the request's total adds it up",
    )
    error_code: str | None = Field(
        default=None, min_length=1, max_length=100, examples=["CLAUDE_RATE_LIMIT"]
    )
    error_message: str | None = Field(default=None, min_length=1, max_length=10_000)


# The agent reports these; the ones people produce (initial_request, clarification_answer,
# follow_up_request, retry, cancelled) are written by Slack and GitHub handlers only.
AgentMessageType = Literal[
    "clarification_ask",
    "processing_started",
    "processing_update",
    "pr_created",
    "pr_updated",
    "error",
    "agent_thinking",
    "agent_tool_call",
    "agent_tool_result",
    "agent_file_change",
    "agent_terminal",
    "agent_summary",
]


class MessageBody(WireModel):
    """POST /api/requests/{requestId}/messages."""

    type: AgentMessageType
    content: str = Field(min_length=1, max_length=100_000)
    metadata: MessageMetadataIn | None = Field(
        default=None,
        description=(
            "The ADR's message metadata (camelCase). For clarification_ask, `options` "
            "lists the answers offered as buttons."
        ),
    )


class GitCredentialsBody(WireModel):
    """POST /api/requests/{requestId}/git-credentials: nothing to say (an empty object)."""


class ListQuery(WireModel):
    """GET /api/requests query parameters."""

    status: RequestStatus | None = None
    repo: RepoName | None = None
    origin: RequestOrigin | None = None
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(
        default=None, pattern=CURSOR_PATTERN, description="`nextCursor` of the previous page"
    )


# --- answers --------------------------------------------------------------------------


class RequestOut(AnswerModel):
    """A feature request, every column of the ADR's feature_requests (camelCase)."""

    id: int
    request_id: str
    origin: RequestOrigin
    repo: str
    title: str | None
    description: str
    request_type: str | None
    status: RequestStatus
    slack_user_id: str | None
    slack_user_name: str | None
    slack_channel_id: str | None
    slack_channel_name: str | None
    slack_thread_ts: str | None
    response_url: str | None
    issue_id: int | None
    issue_number: int | None
    issue_title: str | None
    issue_body: str | None
    issue_labels: list[str] | None
    issue_author: str | None
    issue_url: str | None
    web_user_id: str | None
    web_user_email: str | None
    repository_url: str | None
    repository_name: str | None
    repository_id: int | None
    repository_owner: str | None
    repository_name_only: str | None
    app_id: str | None
    task_status: TaskStatus | None
    pr_url: str | None
    pr_number: int | None
    pr_branch_name: str | None
    retry_count: int | None
    last_retry_at: dt.datetime | None
    cost_usd: float | None = Field(description="Total cost in US dollars (costCents / 100)")
    cost_cents: int | None = Field(description="Total cost in cents, as stored")
    duration_ms: int | None
    created_at: dt.datetime
    updated_at: dt.datetime
    processed_at: dt.datetime | None

    @classmethod
    def of(cls, row: FeatureRequest) -> RequestOut:
        """The wire form of a row."""
        fields: dict[str, Any] = {
            key: getattr(row, key) for key in cls.model_fields if key not in ("cost_cents",)
        }
        fields["cost_cents"] = row.cost_usd
        fields["cost_usd"] = None if row.cost_usd is None else row.cost_usd / 100
        return cls.model_construct(**fields)


class MessageOut(AnswerModel):
    """One step of a request's conversation."""

    id: int
    request_id: str
    type: MessageType
    source: MessageSource
    content: str
    actor_id: str | None
    actor_name: str | None
    metadata: dict[str, Any] | None
    created_at: dt.datetime

    @classmethod
    def of(cls, row: RequestMessage) -> MessageOut:
        """The wire form of a row."""
        return cls.model_construct(
            id=row.id,
            request_id=row.request_id,
            type=row.type,
            source=row.source,
            content=row.content,
            actor_id=row.actor_id,
            actor_name=row.actor_name,
            metadata=row.metadata_,
            created_at=row.created_at,
        )


class RequestDetail(AnswerModel):
    """GET /api/requests/{requestId}."""

    request: RequestOut
    messages: list[MessageOut]


class RequestList(AnswerModel):
    """GET /api/requests: a page of requests, newest first."""

    requests: list[RequestOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page")


class GitHubTokenOut(AnswerModel):
    """A live GitHub App installation token."""

    token: str
    expires_at: dt.datetime


class BundleOut(AnswerModel):
    """A run's bundle, stored: Clarity publishes it."""

    attempt: int
    outcome: Literal["completed", "asked", "cancelled", "budget"]
    size: int = Field(description="Bytes stored")
    sha256: str = Field(description="SHA-256 of the bundle, hex")


class ClaudeKeyOut(AnswerModel):
    """The Anthropic API key the agent uses."""

    api_key: str


class ErrorDetail(AnswerModel):
    """What is wrong with one field."""

    field: str
    message: str


class ErrorInfo(AnswerModel):
    """The error itself: a machine code and a message for people."""

    code: Literal[
        "bad_request",
        "unauthorized",
        "not_found",
        "conflict",
        "payload_too_large",
        "validation_error",
        "not_configured",
        "unavailable",
        "internal_error",
    ]
    message: str
    details: list[ErrorDetail] | None = None


class ErrorOut(AnswerModel):
    """Every error answer: {"error": {"code", "message"}} (+ field details on 422)."""

    error: ErrorInfo
