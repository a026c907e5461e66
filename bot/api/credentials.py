"""Credentials handed to agents: a live GitHub installation token and the Anthropic key."""

from __future__ import annotations

from github import GithubException

from bot.api.http import ApiError
from bot.github.auth import InstallationToken, github_app
from bot.services import NotConfiguredError, Services
from storage.repositories import AppConfigRepository
from storage.schemas import ClaudeConfig


async def github_token(services: Services) -> InstallationToken:
    """A GitHub installation token valid for at least five more minutes."""
    try:
        return await github_app(services).token()
    except GithubException as exc:
        raise ApiError(503, "unavailable", f"GitHub did not issue a token ({exc.status})") from exc


async def claude_api_key(services: Services) -> str:
    """ANTHROPIC_API_KEY, else the key stored with `clarity config set claude`."""
    from_env = services.settings.secret("anthropic_api_key")
    if from_env:
        return from_env
    if services.cipher is not None:
        async with services.session_factory() as session:
            stored = await AppConfigRepository(session, services.cipher).get(ClaudeConfig)
        if stored is not None:
            return stored.api_key
    raise NotConfiguredError(
        "Claude is not configured: set ANTHROPIC_API_KEY or `clarity config set claude`"
    )
