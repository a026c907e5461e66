"""Request ids, repository names and titles: the same rules for every front door."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

# GitHub's rules: owner 1-39 of [A-Za-z0-9-] not starting with '-'; name 1-100 of [A-Za-z0-9._-].
_REPO = re.compile(r"^([A-Za-z0-9][A-Za-z0-9-]{0,38})/([A-Za-z0-9._-]{1,100})$")
_GITHUB_URL = re.compile(
    r"^<?https?://github\.com/([^/\s|>]+/[^/\s|>]+?)(?:\.git)?/?(?:\|[^>]*)?>?$"
)
TITLE_LIMIT = 80
ID_PREFIX = "req_"


def new_request_id() -> str:
    """A fresh public request id, the same shape whatever the origin (`req_` + 16 hex)."""
    # Older ids (uuid4 from the side-API and GitHub, `req_` + 12 hex) are still accepted:
    # every lookup treats an id as an opaque string.
    return f"{ID_PREFIX}{secrets.token_hex(8)}"


def short_id(request_id: str) -> str:
    """The id as branch names show it: 8 characters, without the prefix."""
    bare = request_id.removeprefix(ID_PREFIX).replace("-", "")
    return bare[:8]


@dataclass(frozen=True)
class Repo:
    """A GitHub repository, owner/name."""

    owner: str
    name: str

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def url(self) -> str:
        return f"https://github.com/{self.full_name}"


def parse_repo(text: str) -> Repo | None:
    """`owner/repo` (or a github.com URL, as Slack may wrap it) → Repo; None if not one."""
    candidate = text.strip()
    url = _GITHUB_URL.match(candidate)
    if url:
        candidate = url.group(1)
    match = _REPO.match(candidate)
    if match is None or match.group(2) in (".", ".."):
        return None
    return Repo(owner=match.group(1), name=match.group(2))


def derive_title(description: str) -> str:
    """The description's first line, cut at a word boundary."""
    first = description.strip().splitlines()[0].strip() if description.strip() else ""
    if len(first) <= TITLE_LIMIT:
        return first
    cut = first[: TITLE_LIMIT - 1].rsplit(" ", 1)[0]
    return cut.rstrip(" ,.;:") + "…"
