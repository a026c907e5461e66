"""Credentials handed to agents: a live GitHub installation token and the Anthropic key."""

from __future__ import annotations

import aiohttp
from github import GithubException

from bot.api.http import ApiError
from bot.github.auth import GitHubApp, InstallationToken
from bot.services import NotConfiguredError, Services
from storage.repositories import AppConfigRepository
from storage.schemas import ClaudeConfig


class Credentials:
    """The secrets the side-API may hand to an agent."""

    def __init__(self, services: Services, github: GitHubApp) -> None:
        self.services = services
        self.github = github

    async def github_token(self) -> InstallationToken:
        """A GitHub installation token valid for at least five more minutes."""
        try:
            return await self.github.token()
        except GithubException as exc:
            raise ApiError(
                503, "unavailable", f"GitHub did not issue a token ({exc.status})"
            ) from exc

    async def repository_read_token(self, repo: str) -> InstallationToken:
        """An installation token that can only read one repository (`owner/name`)."""
        name = repo.partition("/")[2] or repo
        try:
            return await self.github.scoped_token([name], {"contents": "read"})
        except GithubException as exc:
            raise ApiError(
                503, "unavailable", f"GitHub did not issue a token ({exc.status})"
            ) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiError(503, "unavailable", "GitHub could not be reached") from exc

    async def claude_api_key(self) -> str:
        """ANTHROPIC_API_KEY, else the key stored with `clarity config set claude`."""
        from_env = self.services.settings.secret("anthropic_api_key")
        if from_env:
            return from_env
        if self.services.cipher is not None:
            async with self.services.session_factory() as session:
                stored = await AppConfigRepository(session, self.services.cipher).get(ClaudeConfig)
            if stored is not None:
                return stored.api_key
        raise NotConfiguredError(
            "Claude is not configured: set ANTHROPIC_API_KEY or `clarity config set claude`"
        )
