"""Webhook payloads shaped like GitHub's (trimmed recordings: the fields GitHub always sends)."""

from __future__ import annotations

from typing import Any

REPO = "octo-org/widgets"


def repository(full_name: str = REPO) -> dict[str, Any]:
    owner, name = full_name.split("/")
    return {
        "id": 1296269,
        "node_id": "MDEwOlJlcG9zaXRvcnkxMjk2MjY5",
        "name": name,
        "full_name": full_name,
        "private": False,
        "owner": {"login": owner, "id": 1, "type": "Organization"},
        "html_url": f"https://github.com/{full_name}",
        "default_branch": "main",
    }


def user(login: str, kind: str = "User") -> dict[str, Any]:
    return {"login": login, "id": abs(hash(login)) % 100_000, "type": kind, "site_admin": False}


def issue(
    number: int = 12,
    *,
    issue_id: int = 5550012,
    title: str = "Add a dark mode toggle",
    body: str | None = "The settings page needs a dark mode switch.",
    author: str = "octocat",
    association: str = "MEMBER",
    labels: tuple[str, ...] = ("clarity",),
    full_name: str = REPO,
) -> dict[str, Any]:
    return {
        "id": issue_id,
        "node_id": "I_kwDOA",
        "number": number,
        "title": title,
        "body": body,
        "state": "open",
        "html_url": f"https://github.com/{full_name}/issues/{number}",
        "url": f"https://api.github.com/repos/{full_name}/issues/{number}",
        "user": user(author),
        "labels": [{"id": i, "name": n, "color": "ededed"} for i, n in enumerate(labels)],
        "author_association": association,
        "comments": 0,
    }


def labeled(label: str = "clarity", **issue_fields: Any) -> dict[str, Any]:
    """issues.labeled."""
    the_issue = issue(**issue_fields)
    return {
        "action": "labeled",
        "issue": the_issue,
        "label": {"id": 99, "name": label, "color": "ededed"},
        "repository": repository(issue_fields.get("full_name", REPO)),
        "sender": user("maintainer"),
    }


def comment_created(
    body: str,
    *,
    author: str = "octocat",
    kind: str = "User",
    association: str = "MEMBER",
    **issue_fields: Any,
) -> dict[str, Any]:
    """issue_comment.created."""
    return {
        "action": "created",
        "issue": issue(**issue_fields),
        "comment": {
            "id": 777001,
            "body": body,
            "html_url": "https://github.com/octo-org/widgets/issues/12#issuecomment-777001",
            "user": user(author, kind),
            "author_association": association,
        },
        "repository": repository(),
        "sender": user(author, kind),
    }


def pr_closed(number: int, *, merged: bool, full_name: str = REPO) -> dict[str, Any]:
    """pull_request.closed."""
    return {
        "action": "closed",
        "number": number,
        "pull_request": {
            "id": 88000 + number,
            "number": number,
            "state": "closed",
            "html_url": f"https://github.com/{full_name}/pull/{number}",
            "merged": merged,
            "merged_by": user("maintainer") if merged else None,
            "head": {"ref": "clarity/dark-mode"},
            "base": {"ref": "main"},
        },
        "repository": repository(full_name),
        "sender": user("maintainer"),
    }


def ping() -> dict[str, Any]:
    return {"zen": "Keep it logically awesome.", "hook_id": 1, "hook": {"type": "App"}}
