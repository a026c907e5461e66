"""The sandbox's environment holds what the agent needs and nothing of Clarity's secrets."""

from __future__ import annotations

from bot.runner.environment import SandboxEnvironment, allowed, money, with_paths

# Clarity's own environment at its most crowded: every secret it may hold, and the switches.
HOST = {
    "DATABASE_URL": "postgresql://clarity:secret@db/clarity",
    "MASTER_DATABASE_URL": "postgresql://admin:secret@db/postgres",
    "ENCRYPTION_KEY": "00" * 32,
    "SLACK_BOT_TOKEN": "xoxb-1-2-secret",
    "SLACK_SIGNING_SECRET": "signing-secret",
    "SLACK_APP_TOKEN": "xapp-1-secret",
    "GITHUB_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----",
    "GITHUB_WEBHOOK_SECRET": "webhook-secret",
    "GITHUB_TOKEN": "ghp_personal",
    "CLARITY_API_TOKEN": "api-token",
    "AWS_SECRET_ACCESS_KEY": "aws",
    "PYTHONPATH": "/opt/clarity",
    "HOME": "/root",
    "USER": "root",
    "CLAUDE_CODE_USE_BEDROCK": "0",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat-secret",
    "CLAUDE_CODE_API_KEY_HELPER_TTL_MS": "1000",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_SOMETHING_ELSE": "1",
    "HTTPS_PROXY": "http://proxy.internal:3128",
}


def test_only_named_values_reach_the_sandbox() -> None:
    environment = SandboxEnvironment(
        git_url="file:///srv/git/",
        agent_cli="claude --model opus",
        timeout_s=1800,
        anthropic_base_url="https://gateway.internal/anthropic",
        path="/usr/local/bin:/usr/bin:/bin",
        host_env=HOST,
    )
    env = environment.build(budget_usd=2.5, anthropic_api_key="sk-ant-api-key")
    assert env == {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "GIT_AUTHOR_NAME": "Clarity Agent",
        "GIT_AUTHOR_EMAIL": "agent@clarity.invalid",
        "GIT_COMMITTER_NAME": "Clarity Agent",
        "GIT_COMMITTER_EMAIL": "agent@clarity.invalid",
        "GITHUB_GIT_URL": "file:///srv/git/",
        "CLARITY_AGENT_CLI": "claude --model opus",
        "CLARITY_BUDGET_USD": "2.5",
        "CLARITY_RUN_TIMEOUT_S": "1800",
        "ANTHROPIC_API_KEY": "sk-ant-api-key",
        "ANTHROPIC_BASE_URL": "https://gateway.internal/anthropic",
        "CLAUDE_CODE_USE_BEDROCK": "0",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "HTTPS_PROXY": "http://proxy.internal:3128",
    }
    for secret in ("secret", "xoxb", "xapp", "ghp_", "api-token", "PRIVATE KEY", "00" * 32):
        assert secret not in repr(env)
    paths = with_paths(env, home="/runs/r/attempt-1", work_dir="/runs/r/work")
    assert paths["CLAUDE_CONFIG_DIR"] == "/runs/r/attempt-1/.claude"
    assert (paths["HOME"], paths["CLARITY_WORK_DIR"]) == ("/runs/r/attempt-1", "/runs/r/work")


def test_no_key_no_gateway_and_the_forbidden_names() -> None:
    env = SandboxEnvironment(host_env={}).build(budget_usd=10)
    assert "ANTHROPIC_API_KEY" not in env and "ANTHROPIC_BASE_URL" not in env
    assert env["CLARITY_BUDGET_USD"] == "10"
    for name in ("DATABASE_URL", "ENCRYPTION_KEY", "SLACK_ANYTHING", "CLARITY_API_TOKEN"):
        assert not allowed(name)
    assert allowed("GITHUB_GIT_URL") and allowed("CLARITY_BUDGET_USD")
    assert [money(v) for v in (10, 2.5, 0.004, 3.0, 12.345)] == ["10", "2.5", "0.01", "3", "12.35"]
