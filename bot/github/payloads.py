"""Narrow models of the webhook payloads Clarity acts on: only the fields it uses."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Narrow(BaseModel):
    """Everything GitHub sends that is not modelled here is ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class Action(Narrow):
    """The first look at a delivery: which action of the event it is."""

    action: str | None = None


class User(Narrow):
    """A GitHub account (person or bot)."""

    login: str
    id: int
    type: str = "User"

    @property
    def is_bot(self) -> bool:
        """Apps and bots, which never answer on a person's behalf."""
        return self.type == "Bot" or self.login.endswith("[bot]")


class Label(Narrow):
    """An issue label."""

    name: str


class Owner(Narrow):
    """A repository's owner."""

    login: str


class Repository(Narrow):
    """The repository an event is about."""

    id: int
    name: str
    full_name: str
    html_url: str
    owner: Owner


class Issue(Narrow):
    """An issue (or the issue side of a pull request)."""

    id: int
    number: int
    title: str
    body: str | None = None
    html_url: str
    user: User
    labels: list[Label] = []
    author_association: str = "NONE"


class Comment(Narrow):
    """An issue comment."""

    id: int
    body: str
    html_url: str
    user: User
    author_association: str = "NONE"


class PullRequest(Narrow):
    """A pull request, as `pull_request` events carry it."""

    number: int
    html_url: str
    merged: bool = False
    merged_by: User | None = None


class IssuesEvent(Narrow):
    """`issues` (we act on action `labeled`)."""

    action: str
    issue: Issue
    label: Label | None = None
    repository: Repository
    sender: User


class IssueCommentEvent(Narrow):
    """`issue_comment` (we act on action `created`)."""

    action: str
    issue: Issue
    comment: Comment
    repository: Repository
    sender: User


class PullRequestEvent(Narrow):
    """`pull_request` (we act on action `closed`)."""

    action: str
    pull_request: PullRequest
    repository: Repository
    sender: User
