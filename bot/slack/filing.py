"""Filing a request from Slack: one transaction records it, its first message and its jobs."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.dispatch import DispatchKind, enqueue_dispatch
from bot.events import request_changed
from bot.services import Services
from bot.settings import Settings
from bot.slack import intake
from bot.slack.feature import feature
from storage.deliveries import claim_delivery
from storage.errors import InsertError, QueryError, translate
from storage.jobs import ClaimedJob, NewJob
from storage.models import (
    ChannelSetting,
    FeatureRequest,
    MessageSource,
    MessageType,
    RequestOrigin,
    utcnow,
)
from storage.repositories import FeatureRequestRepository, RequestMessagesRepository

# GitHub's rules: owner 1-39 of [A-Za-z0-9-] not starting with '-'; name 1-100 of [A-Za-z0-9._-].
_REPO = re.compile(r"^([A-Za-z0-9][A-Za-z0-9-]{0,38})/([A-Za-z0-9._-]{1,100})$")
_GITHUB_URL = re.compile(
    r"^<?https?://github\.com/([^/\s|>]+/[^/\s|>]+?)(?:\.git)?/?(?:\|[^>]*)?>?$"
)
TITLE_LIMIT = 80
FILE_JOB = "slack.file"


@dataclass(frozen=True)
class Repo:
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


def new_request_id() -> str:
    return f"req_{secrets.token_hex(6)}"


def may_file(settings: Settings, user_id: str, channel_id: str) -> bool:
    """Allowed unless an allowlist is set that names neither this user nor this channel."""
    users = settings.split(settings.clarity_allowed_slack_users)
    channels = settings.split(settings.clarity_allowed_slack_channels)
    if not users and not channels:
        return True
    return user_id in users or channel_id in channels


@dataclass(frozen=True)
class NewRequest:
    """Everything Slack told us about a request being filed (repo None: the channel's default)."""

    repo: Repo | None
    description: str
    user_id: str
    user_name: str
    channel_id: str
    channel_name: str
    response_url: str | None
    delivery_source: str
    delivery_id: str

    def to_payload(self) -> dict[str, Any]:
        # Not dataclasses.asdict: its deep copy is a measurable share of the ack path.
        payload = {f.name: getattr(self, f.name) for f in fields(self)}
        payload["repo"] = self.repo.full_name if self.repo else None
        return payload

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> NewRequest:
        values = dict(payload)
        values["repo"] = parse_repo(values["repo"]) if values.get("repo") else None
        return cls(**values)


async def accept_filing(services: Services, new: NewRequest) -> None:
    """Make the filing durable before Slack gets its ack: a `slack.file` job row."""
    # The job then records the request, its first message, its dispatch and its root post in
    # one transaction (`file_request`). A redelivery of the same command finds a queued twin,
    # or the claimed delivery id when the job runs, and has no second effect.
    key = f"{new.delivery_source}:{new.delivery_id}"
    await intake.accept(
        services,
        NewJob(
            FILE_JOB,
            new.to_payload(),
            dedupe_key=key,
            max_attempts=services.settings.clarity_job_max_attempts,
        ),
    )


async def file_request(services: Services, new: NewRequest) -> FeatureRequest | None:
    """Record the request, its initial message, its dispatch and its root post; None if seen."""
    repo = new.repo
    async with services.session_factory.begin() as session:
        if repo is None:
            repo = await default_repo(session, new.channel_id)
            if repo is None:
                raise NoRepositoryError(new.channel_id)
        if not await claim_delivery(session, new.delivery_source, new.delivery_id):
            return None
        request = await FeatureRequestRepository(session).create(
            request_id=new_request_id(),
            origin=RequestOrigin.SLACK,
            repo=repo.full_name,
            title=derive_title(new.description),
            description=new.description,
            slack_user_id=new.user_id,
            slack_user_name=new.user_name,
            slack_channel_id=new.channel_id,
            slack_channel_name=new.channel_name,
            response_url=new.response_url,
            repository_url=repo.url,
            repository_name=repo.full_name,
            repository_owner=repo.owner,
            repository_name_only=repo.name,
        )
        message = await RequestMessagesRepository(session).add_message(
            request.request_id,
            MessageType.INITIAL_REQUEST,
            MessageSource.SLACK,
            new.description,
            actor_id=new.user_id,
            actor_name=new.user_name,
            metadata={"slackChannelId": new.channel_id},
        )
        await enqueue_dispatch(
            session,
            request.request_id,
            DispatchKind.INITIAL,
            max_attempts=services.settings.clarity_job_max_attempts,
        )
        # The root post is one of the notifications: enqueued here, posted by a job.
        await request_changed(services, session, request, message=message)
    services.metrics.requests_created.labels(RequestOrigin.SLACK.value).inc()
    return request


class NoRepositoryError(Exception):
    """A filing without a repository in a channel that has no default."""

    def __init__(self, channel_id: str) -> None:
        super().__init__(f"channel {channel_id} has no default repository")
        self.channel_id = channel_id


async def default_repo(session: AsyncSession, channel_id: str) -> Repo | None:
    """The channel's default repository (`/clarity repo owner/repo`), if any."""
    try:
        raw = await session.scalar(
            select(ChannelSetting.default_repo).where(ChannelSetting.channel_id == channel_id)
        )
    except SQLAlchemyError as exc:
        raise translate(exc, QueryError, "reading channel settings") from exc
    return parse_repo(raw) if raw else None


async def set_default_repo(
    session: AsyncSession, channel_id: str, repo: Repo, user_id: str
) -> None:
    """Make `repo` the channel's default repository."""
    stmt = insert(ChannelSetting).values(
        channel_id=channel_id, default_repo=repo.full_name, updated_by=user_id
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[ChannelSetting.channel_id],
        set_={"default_repo": repo.full_name, "updated_by": user_id, "updated_at": utcnow()},
    )
    try:
        await session.execute(stmt)
    except SQLAlchemyError as exc:
        raise translate(exc, InsertError, "saving channel settings") from exc


NO_DEFAULT_REPO = (
    "This channel has no default repository, so say which one: "
    "`/clarity owner/repo what to build` (or set one with `/clarity repo owner/repo`)."
)


async def _tell(services: Services, new: NewRequest, text: str) -> None:
    api = await feature(services).api()
    if new.response_url:
        await api.respond(new.response_url, text)
    elif new.channel_id:
        await api.ephemeral(new.channel_id, new.user_id, text)


async def run_file_job(services: Services, job: ClaimedJob) -> None:
    """The `slack.file` job: record an accepted filing."""
    new = NewRequest.from_payload(job.payload)
    try:
        await file_request(services, new)
    except NoRepositoryError:
        await _tell(services, new, NO_DEFAULT_REPO)


async def file_job_exhausted(services: Services, job: ClaimedJob) -> None:
    """After the last try: tell the person their request could not be recorded."""
    new = NewRequest.from_payload(job.payload)
    await _tell(
        services,
        new,
        "Sorry, Clarity could not record your request after several tries. "
        f"Please file it again; if it keeps failing, report job `{job.id}` to your Clarity admin.",
    )
