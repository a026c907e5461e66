"""Typed JSON columns: the shapes the TypeScript worker stored, validated on write and read.

Keys are camelCase in the database, as the worker wrote them. Keys we don't model are
kept (``extra="allow"``) and written back unchanged, so nothing the worker stored is lost.
Secret fields hold plaintext in these models; the repository encrypts them on the way in
and decrypts them on the way out, under the ADR's ``…Encrypted`` key names.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class CamelModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="allow",
        validate_assignment=True,
    )

    def to_json_dict(self) -> dict[str, Any]:
        """The camelCase dict stored in jsonb (unset optional keys left out)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class SecretFieldsModel(CamelModel):
    """A config whose listed fields are stored encrypted."""

    # python field name -> stored key
    SECRET_FIELDS: ClassVar[dict[str, str]] = {}


class GitHubRepositoryRef(CamelModel):
    id: int
    name: str
    full_name: str


class GitHubConfig(SecretFieldsModel):
    SECRET_FIELDS: ClassVar[dict[str, str]] = {
        "private_key": "privateKeyEncrypted",
        "webhook_secret": "webhookSecretEncrypted",
        "installation_token": "installationToken",
    }

    app_id: str
    private_key: str = Field(alias="privateKeyEncrypted", repr=False)
    webhook_secret: str = Field(alias="webhookSecretEncrypted", repr=False)
    installation_id: str
    owner_login: str = ""
    owner_type: str = ""
    owner_id: int = 0
    permissions: dict[str, str] = Field(default_factory=dict)
    events: list[str] = Field(default_factory=list)
    repositories: list[GitHubRepositoryRef] = Field(default_factory=list)
    webhook_count: int = 0
    last_webhook_at: str | None = None
    setup_at: str | None = None
    installation_token: str | None = Field(default=None, repr=False)
    token_expires_at: str | None = None


class ClaudeConfig(SecretFieldsModel):
    SECRET_FIELDS: ClassVar[dict[str, str]] = {"api_key": "apiKeyEncrypted"}

    api_key: str = Field(alias="apiKeyEncrypted", repr=False)
    setup_at: str | None = None


class SlackConfig(SecretFieldsModel):
    SECRET_FIELDS: ClassVar[dict[str, str]] = {
        "signing_secret": "signingSecretEncrypted",
        "bot_token": "botTokenEncrypted",
    }

    signing_secret: str = Field(alias="signingSecretEncrypted", repr=False)
    bot_token: str = Field(alias="botTokenEncrypted", repr=False)
    setup_at: str | None = None


class MessageMetadata(CamelModel):
    """`request_messages.metadata`, every key the ADR names; other keys are kept."""

    slack_ts: str | None = None
    slack_thread_ts: str | None = None
    slack_channel_id: str | None = None
    issue_comment_id: int | None = None
    pr_comment_id: int | None = None
    commit_sha: str | None = None
    duration_ms: int | None = None
    cost_cents: int | None = None
    from_status: str | None = None
    to_status: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    error_stack: str | None = None
    retry_count: int | None = None
    tool_name: str | None = None
    tool_input: dict[str, Any] | None = None
    tool_output: str | None = None
    tool_duration_ms: int | None = None
    file_path: str | None = None
    file_action: Literal["created", "modified", "deleted"] | None = None
    diff_preview: str | None = None
    command: str | None = None
    exit_code: int | None = None
    stdout: str | None = None
    stderr: str | None = None
    turn_number: int | None = None
    turn_id: str | None = None
    # Clarity: the choices offered with a clarification_ask, one button each in Slack.
    options: list[str] | None = None
