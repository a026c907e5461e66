"""One typed settings object, loaded once from the environment (and `.env`)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting Clarity reads; names are the environment variables in DESIGN.md."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    database_url: SecretStr | None = None
    master_database_url: SecretStr | None = None
    encryption_key: SecretStr | None = None

    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"

    github_app_id: str | None = None
    github_private_key: SecretStr | None = None
    github_installation_id: str | None = None
    github_webhook_secret: SecretStr | None = None
    github_api_url: str = "https://api.github.com"
    github_trigger_label: str = "clarity"
    # Base of git remotes: a repository is `<it><owner>/<repo>.git`; file:// serves local ones.
    github_git_url: str = "https://github.com/"

    clarity_api_token: SecretStr | None = None
    # Handed to agents by GET /api/config/claude; `clarity config set claude` stores one instead.
    anthropic_api_key: SecretStr | None = None
    # Handed to the sandbox as is: a company's gateway or proxy in front of the Anthropic API.
    anthropic_base_url: str | None = None
    runner_url: str | None = None
    # Where runs happen: local | docker | kubernetes | http (unset: http when RUNNER_URL is
    # set, else local). See `runner_backend()`.
    clarity_runner: Literal["local", "docker", "kubernetes", "http"] | None = None
    # The Claude Code executable the agent program runs (a command line, split like a shell).
    clarity_agent_cli: str = "claude"
    # The agent's container image (docker, kubernetes).
    clarity_agent_image: str | None = None
    # The docker backend: the engine, the agents' network and one container's limits.
    docker_host: str | None = None
    clarity_docker_network: str = "bridge"
    clarity_docker_cpus: float = Field(default=1.0, gt=0)
    clarity_docker_memory: str = "2g"
    clarity_docker_pids: int = Field(default=512, ge=16)
    # The kubernetes backend: where Jobs go, how to reach the API from outside a cluster,
    # an agent pod's resources, and its time limits.
    clarity_k8s_namespace: str | None = None
    clarity_k8s_api_url: str | None = None
    clarity_k8s_token: SecretStr | None = None
    clarity_k8s_ca_cert: str | None = None
    clarity_k8s_cpu_request: str = "250m"
    clarity_k8s_cpu_limit: str = "1"
    clarity_k8s_memory: str = "2Gi"
    clarity_k8s_pending_timeout_s: int = Field(default=300, ge=10)
    clarity_k8s_job_ttl_s: int = Field(default=3600, ge=0)
    clarity_k8s_service_account: str | None = None
    # A request's spending limit unless the person asks for another, and the most they may.
    clarity_budget_usd: float = Field(default=10.0, gt=0)
    clarity_max_budget_usd: float = Field(default=50.0, gt=0)
    # Wall-clock limit of one run (the agent stops itself a little before).
    clarity_run_timeout_s: int = Field(default=3600, gt=0)
    host: str = "0.0.0.0"  # noqa: S104 - a server is meant to listen on all interfaces
    port: int = 3000

    # Beyond the DESIGN.md contract: operational knobs, all optional.
    clarity_data_dir: Path | None = None
    clarity_public_url: str | None = Field(
        default=None,
        description="The server's public base URL: agents get <it>/api, Slack links "
        "<it>/requests/<id>",
    )
    clarity_admin_user_ids: str = ""
    clarity_allowed_slack_users: str = ""
    clarity_allowed_slack_channels: str = ""
    clarity_allowed_repos: str = ""
    clarity_allowed_author_associations: str = "OWNER,MEMBER,COLLABORATOR"
    clarity_runner_timeout_s: int = 1800
    clarity_job_max_attempts: int = 6
    clarity_job_token_ttl_s: int = 6 * 3600
    clarity_workers: int = 2
    clarity_run_workers: bool = True
    # `1`: serve the Slack simulator at /_sim/ (never on by default; `clarity demo` turns it on).
    clarity_simulator: bool = False
    # Runs in sandboxes at once, across every replica (the rest wait, in order).
    clarity_max_concurrent_runs: int = Field(default=4, ge=1)
    # Upload limits of the side-API: a run's git bundle, and a saved Claude session.
    clarity_bundle_limit_bytes: int = Field(default=50 * 1024 * 1024, ge=1)
    clarity_session_limit_bytes: int = Field(default=20 * 1024 * 1024, ge=1)
    # How long a dashboard session lasts after sign-in (default 7 days).
    clarity_web_session_ttl_s: int = 7 * 86400
    # How long finished jobs and remembered inbound delivery ids are kept (default 7 days).
    clarity_job_retention_s: int = 7 * 86400
    clarity_delivery_retention_s: int = 7 * 86400

    @field_validator("slack_api_url", "github_git_url")
    @classmethod
    def _trailing_slash(cls, v: str) -> str:
        return v if v.endswith("/") else v + "/"

    @field_validator("clarity_public_url")
    @classmethod
    def _public_base(cls, v: str | None) -> str | None:
        # The README once said "the side-API's URL", so `…/api` is accepted and means the base.
        if not v:
            return None
        base = v.rstrip("/")
        return base[: -len("/api")] if base.endswith("/api") else base

    @field_validator("github_api_url")
    @classmethod
    def _no_trailing_slash(cls, v: str) -> str:
        return v.rstrip("/")

    def public_base(self) -> str:
        """CLARITY_PUBLIC_URL, else this server's own address (for links and agents)."""
        if self.clarity_public_url:
            return self.clarity_public_url
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host  # noqa: S104
        return f"http://{host}:{self.port}"

    def runner_backend(self) -> str:
        """CLARITY_RUNNER, else `http` when RUNNER_URL is set, else `local`."""
        if self.clarity_runner:
            return self.clarity_runner
        return "http" if self.runner_url else "local"

    @staticmethod
    def split(raw: str) -> frozenset[str]:
        """A comma-separated setting as a set (empty entries dropped)."""
        return frozenset(p.strip() for p in raw.split(",") if p.strip())

    def secret(self, name: str) -> str | None:
        """The plaintext of a SecretStr setting, or None."""
        value = getattr(self, name)
        return value.get_secret_value() if isinstance(value, SecretStr) else value

    def known_secrets(self) -> list[str]:
        """Every secret value configured, for scrubbing agent text before it leaves."""
        names = [
            "database_url",
            "master_database_url",
            "encryption_key",
            "slack_bot_token",
            "slack_signing_secret",
            "slack_app_token",
            "github_private_key",
            "github_webhook_secret",
            "clarity_api_token",
            "anthropic_api_key",
            "clarity_k8s_token",
        ]
        values = [self.secret(n) for n in names]
        return [v for v in values if v and len(v) >= 8]


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment and `.env`; keyword overrides win (tests)."""
    return Settings(**overrides)  # type: ignore[arg-type]


def with_simulator(settings: Settings) -> Settings:
    """Settings for a server that serves the Slack simulator (CLARITY_SIMULATOR=1, the demo).

    Slack's Web API is the simulator's own, on this server, and the Slack credentials are
    the simulator's: made up here unless given (they secure nothing but the simulation).
    """
    base = settings.public_base()
    updates: dict[str, object] = {
        "slack_api_url": f"{base}/_sim/api/",
        "slack_app_token": None,
    }
    if not settings.secret("slack_bot_token"):
        updates["slack_bot_token"] = "xoxb-sim-" + secrets.token_hex(12)
    if not settings.secret("slack_signing_secret"):
        updates["slack_signing_secret"] = secrets.token_hex(16)
    return settings.model_copy(update=updates)
