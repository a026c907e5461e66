"""Filing a request from Slack: accepted as a job before the ack, recorded by the job."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from bot.requests.actions import Actor, Filing, SlackPlace
from bot.requests.ids import Repo, parse_repo
from bot.settings import Settings
from bot.slack.feature import SlackFeature
from storage.deliveries import claim_delivery
from storage.jobs import ClaimedJob, NewJob
from storage.models import FeatureRequest, MessageSource, RequestOrigin
from storage.repositories.channels import ChannelSettingsRepository

FILE_JOB = "slack.file"

__all__ = ["FILE_JOB", "NewRequest", "Repo", "parse_repo"]


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
    # `--budget N` or the form's field: the request's spending limit in US dollars.
    budget_usd: float | None = None

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


async def accept_filing(slack: SlackFeature, new: NewRequest) -> None:
    """Make the filing durable before Slack gets its ack: a `slack.file` job row."""
    # The job then records the request, its first message, its dispatch and its root post in
    # one transaction (the lifecycle's `file`). A redelivery of the same command finds a
    # queued twin, or the claimed delivery id when the job runs, and has no second effect.
    key = f"{new.delivery_source}:{new.delivery_id}"
    await slack.intake.accept(
        NewJob(
            FILE_JOB,
            new.to_payload(),
            dedupe_key=key,
            max_attempts=slack.services.settings.clarity_job_max_attempts,
        )
    )


class NoRepositoryError(Exception):
    """A filing without a repository in a channel that has no default."""

    def __init__(self, channel_id: str) -> None:
        super().__init__(f"channel {channel_id} has no default repository")
        self.channel_id = channel_id


async def file_request(slack: SlackFeature, new: NewRequest) -> FeatureRequest | None:
    """Record the request through the lifecycle; None if this delivery was seen before."""
    async with slack.services.session_factory.begin() as session:
        repo = new.repo
        if repo is None:
            raw = await ChannelSettingsRepository(session).default_repo(new.channel_id)
            repo = parse_repo(raw) if raw else None
            if repo is None:
                raise NoRepositoryError(new.channel_id)
        if not await claim_delivery(session, new.delivery_source, new.delivery_id):
            return None
        filing = Filing(
            origin=RequestOrigin.SLACK,
            repo=repo,
            description=new.description,
            metadata={"slackChannelId": new.channel_id, "budgetUsd": new.budget_usd},
            slack=SlackPlace(
                user_id=new.user_id,
                user_name=new.user_name,
                channel_id=new.channel_id,
                channel_name=new.channel_name,
                response_url=new.response_url,
            ),
        )
        actor = Actor(new.user_id, new.user_name, MessageSource.SLACK)
        return await slack.lifecycle.file(session, filing, actor)


NO_DEFAULT_REPO = (
    "This channel has no default repository, so say which one: "
    "`/clarity owner/repo what to build` (or set one with `/clarity repo owner/repo`)."
)


async def _tell(slack: SlackFeature, new: NewRequest, text: str) -> None:
    api = await slack.api()
    if new.response_url:
        await api.respond(new.response_url, text)
    elif new.channel_id:
        await api.ephemeral(new.channel_id, new.user_id, text)


async def run_file_job(slack: SlackFeature, job: ClaimedJob) -> None:
    """The `slack.file` job: record an accepted filing."""
    new = NewRequest.from_payload(job.payload)
    try:
        await file_request(slack, new)
    except NoRepositoryError:
        await _tell(slack, new, NO_DEFAULT_REPO)


async def file_job_exhausted(slack: SlackFeature, job: ClaimedJob) -> None:
    """After the last try: tell the person their request could not be recorded."""
    new = NewRequest.from_payload(job.payload)
    await _tell(
        slack,
        new,
        "Sorry, Clarity could not record your request after several tries. "
        f"Please file it again; if it keeps failing, report job `{job.id}` to your Clarity admin.",
    )
