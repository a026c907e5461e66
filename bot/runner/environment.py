"""The sandbox's environment: built from named values, never a copy of Clarity's own.

DESIGN.md "Rules every backend keeps": the agent gets HOME, PATH, the locale, a git identity,
where to work, its budget and time limit, the Anthropic key (and ANTHROPIC_BASE_URL when
set), the git remote base, the Claude Code executable, and Claude Code's own non-secret
switches present in Clarity's environment — nothing else. Clarity's environment holds
DATABASE_URL, ENCRYPTION_KEY, the Slack and GitHub secrets and CLARITY_API_TOKEN; none of
them can reach a sandbox, because nothing here copies a variable it does not name (the
CLAUDE_CODE_* switches are the one family taken by prefix, and secret-looking names in it
are left out).

The paths (HOME, CLARITY_WORK_DIR, CLAUDE_CONFIG_DIR) are the backend's: a container has
its own (`/work`…), the local backend a folder per request (`with_paths`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LOCALE = "C.UTF-8"
GIT_NAME = "Clarity Agent"
GIT_EMAIL = "agent@clarity.invalid"

# Claude Code's documented switches outside its CLAUDE_CODE_ prefix, passed when set.
CLAUDE_SWITCHES = frozenset(
    {
        "DISABLE_AUTOUPDATER",
        "DISABLE_TELEMETRY",
        "DISABLE_ERROR_REPORTING",
        "DISABLE_NON_ESSENTIAL_MODEL_CALLS",
        "DISABLE_COST_WARNINGS",
        "DISABLE_BUG_COMMAND",
    }
)
# Network plumbing an operator may need the agent to use (when set): proxies and CAs.
NETWORK = frozenset(
    {
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "NODE_EXTRA_CA_CERTS",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    }
)
CLAUDE_PREFIX = "CLAUDE_CODE_"
# A CLAUDE_CODE_* name that looks like a credential is not a switch (CLAUDE_CODE_OAUTH_TOKEN).
_SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)
# Never in a sandbox, whatever the caller passes (the test of this module checks each).
FORBIDDEN = frozenset(
    {
        "DATABASE_URL",
        "MASTER_DATABASE_URL",
        "ENCRYPTION_KEY",
        "CLARITY_API_TOKEN",
        "GITHUB_PRIVATE_KEY",
        "GITHUB_WEBHOOK_SECRET",
        "GITHUB_APP_ID",
        "GITHUB_INSTALLATION_ID",
    }
)
FORBIDDEN_PREFIXES = ("SLACK_",)

# The paths a backend sets for its own sandbox.
PATH_VARIABLES = ("HOME", "CLARITY_WORK_DIR", "CLAUDE_CONFIG_DIR")


def money(usd: float) -> str:
    """Dollars as the agent reads them: `3`, `2.5`, `0.01`."""
    text = f"{max(usd, 0.01):.2f}".rstrip("0").rstrip(".")
    return text or "0.01"


def claude_switches(host_env: Mapping[str, str]) -> dict[str, str]:
    """Claude Code's non-secret switches present in `host_env`."""
    out: dict[str, str] = {}
    for name, value in host_env.items():
        if name in CLAUDE_SWITCHES or (
            name.startswith(CLAUDE_PREFIX) and not _SECRET_NAME.search(name[len(CLAUDE_PREFIX) :])
        ):
            out[name] = value
    return out


@dataclass(frozen=True)
class SandboxEnvironment:
    """What every run's environment is made of, fixed at wiring (bot.app)."""

    git_url: str = "https://github.com/"
    agent_cli: str = "claude"
    timeout_s: int = 3600
    anthropic_api_key: str | None = None
    anthropic_base_url: str | None = None
    path: str = DEFAULT_PATH
    git_name: str = GIT_NAME
    git_email: str = GIT_EMAIL
    # Clarity's own environment, read only for the names above: Claude Code's switches and
    # the network plumbing. Nothing else of it is looked at.
    host_env: Mapping[str, str] | None = None

    @classmethod
    def from_host(cls, **values: object) -> SandboxEnvironment:
        """With Clarity's PATH and switches from this process's environment."""
        env = dict(os.environ)
        values.setdefault("path", env.get("PATH") or DEFAULT_PATH)
        values.setdefault("host_env", env)
        return cls(**values)  # type: ignore[arg-type]

    def build(self, *, budget_usd: float, anthropic_api_key: str | None = None) -> dict[str, str]:
        """A run's environment, without the backend's paths (`with_paths` adds them)."""
        host = self.host_env or {}
        env: dict[str, str] = {
            "PATH": self.path or DEFAULT_PATH,
            "LANG": LOCALE,
            "LC_ALL": LOCALE,
            "GIT_AUTHOR_NAME": self.git_name,
            "GIT_AUTHOR_EMAIL": self.git_email,
            "GIT_COMMITTER_NAME": self.git_name,
            "GIT_COMMITTER_EMAIL": self.git_email,
            "GITHUB_GIT_URL": self.git_url,
            "CLARITY_AGENT_CLI": self.agent_cli,
            "CLARITY_BUDGET_USD": money(budget_usd),
            "CLARITY_RUN_TIMEOUT_S": str(self.timeout_s),
        }
        key = anthropic_api_key or self.anthropic_api_key
        if key:
            env["ANTHROPIC_API_KEY"] = key
        if self.anthropic_base_url:
            env["ANTHROPIC_BASE_URL"] = self.anthropic_base_url
        env.update(claude_switches(host))
        env.update({k: v for k, v in host.items() if k in NETWORK and v})
        env.setdefault("DISABLE_AUTOUPDATER", "1")
        return {k: v for k, v in env.items() if allowed(k)}


def with_paths(
    env: Mapping[str, str], *, home: str, work_dir: str, config_dir: str | None = None
) -> dict[str, str]:
    """`env` with a backend's paths: HOME, CLARITY_WORK_DIR, CLAUDE_CONFIG_DIR."""
    return {
        **env,
        "HOME": home,
        "CLARITY_WORK_DIR": work_dir,
        "CLAUDE_CONFIG_DIR": config_dir or os.path.join(home, ".claude"),
    }


def allowed(name: str) -> bool:
    """Whether a variable may ever be in a sandbox's environment."""
    return name not in FORBIDDEN and not name.startswith(FORBIDDEN_PREFIXES)
