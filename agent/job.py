"""The job document a run is started with (DESIGN.md "Dispatch to the runner")."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any

KINDS = frozenset({"initial", "clarification_answer", "follow_up", "retry", "cancel"})
JOB_ENV = "CLARITY_JOB"
_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


class JobError(ValueError):
    """The job document is missing or not what DESIGN.md describes."""


@dataclass(frozen=True)
class Entry:
    """One user-visible step of the request's conversation."""

    type: str
    content: str
    source: str = ""
    actor_name: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: Any) -> Entry:
        """An entry of the job's `conversation` list."""
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            raise JobError("each conversation entry needs a `type`")
        metadata = data.get("metadata")
        actor = data.get("actorName") or data.get("actorId")
        return cls(
            type=data["type"],
            content=str(data.get("content") or ""),
            source=str(data.get("source") or ""),
            actor_name=str(actor) if actor else None,
            metadata=metadata if isinstance(metadata, dict) else {},
        )


@dataclass(frozen=True)
class Job:
    """What one run is asked to do, and how to report back."""

    request_id: str
    attempt: int
    kind: str
    repo: str
    title: str
    description: str
    api_url: str
    api_token: str
    branch: str | None = None
    pr_number: int | None = None
    issue_number: int | None = None
    conversation: tuple[Entry, ...] = ()

    @classmethod
    def parse(cls, data: Any) -> Job:
        """Check and read the job document's fields (camelCase JSON)."""
        if not isinstance(data, dict):
            raise JobError("the job document must be a JSON object")

        def text(key: str, *, required: bool = True) -> str:
            value = data.get(key)
            if value is None and not required:
                return ""
            if not isinstance(value, str) or (required and not value.strip()):
                raise JobError(f"`{key}` must be a non-empty string")
            return value

        def number(key: str) -> int | None:
            value = data.get(key)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int):
                raise JobError(f"`{key}` must be an integer")
            return value

        attempt = number("attempt")
        if attempt is None or attempt < 0:
            raise JobError("`attempt` must be a non-negative integer")
        kind = text("kind")
        if kind not in KINDS:
            raise JobError(f"`kind` must be one of {', '.join(sorted(KINDS))}")
        repo = text("repo")
        if not _REPO.match(repo) or ".." in repo:
            raise JobError("`repo` must be owner/name")
        api_url = text("apiUrl")
        if not api_url.startswith(("http://", "https://")):
            raise JobError("`apiUrl` must be an http(s) URL")
        conversation = data.get("conversation") or []
        if not isinstance(conversation, list):
            raise JobError("`conversation` must be a list")
        branch = data.get("branch")
        if branch is not None and (not isinstance(branch, str) or not branch.strip()):
            raise JobError("`branch` must be a branch name or null")
        return cls(
            request_id=text("requestId"),
            attempt=attempt,
            kind=kind,
            repo=repo,
            title=text("title", required=False),
            description=text("description", required=False),
            api_url=api_url.rstrip("/"),
            api_token=text("apiToken"),
            branch=branch,
            pr_number=number("prNumber"),
            issue_number=number("issueNumber"),
            conversation=tuple(Entry.parse(e) for e in conversation),
        )


def load(path: str | None, env: Mapping[str, str], stdin: IO[str] = sys.stdin) -> Job:
    """The job from `--job PATH`, else the CLARITY_JOB variable, else standard input."""
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                raw = f.read()
        except OSError as exc:
            raise JobError(f"cannot read the job file {path}: {exc.strerror}") from exc
    elif env.get(JOB_ENV):
        raw = env[JOB_ENV]
    else:
        raw = stdin.read()
    if not raw.strip():
        raise JobError("no job document: pass --job PATH, set CLARITY_JOB, or pipe it in")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise JobError(f"the job document is not JSON: {exc}") from exc
    return Job.parse(data)
