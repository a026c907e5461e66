"""Wiring: `build_app(settings)` makes the whole object graph once, by construction.

Every part gets what it needs as constructor arguments: the engine and session factory,
the lifecycle and its subscribers (Slack, GitHub), the dispatcher, the side-API's context,
and one registry of every job kind. Nothing is looked up or built lazily at run time.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.api.activity import ActivityWriter
from bot.api.context import ApiContext
from bot.api.credentials import Credentials
from bot.dispatch import Dispatcher
from bot.github.auth import GitHubApp
from bot.github.client import GitHubPulls, GitHubRest
from bot.github.notify import GitHubNotifier
from bot.maintenance import Maintenance
from bot.metrics import Metrics
from bot.publish import Publisher
from bot.requests.actions import RequestLifecycle
from bot.requests.events import RequestEvents
from bot.runner.base import RunnerBackend
from bot.runner.environment import SandboxEnvironment
from bot.runner.factory import make_backend
from bot.runner.watch import RunWatcher
from bot.services import Services, build_cipher
from bot.settings import Settings
from bot.slack import job_handlers as slack_job_handlers
from bot.slack.feature import SlackFeature
from bot.slack.notify import SlackNotifier
from bot.workers import JobHandler
from storage.embedded import default_data_dir
from storage.engine import create_engine, create_session_factory


@dataclass
class Clarity:
    """Everything one process runs, made once at start-up."""

    services: Services
    events: RequestEvents
    lifecycle: RequestLifecycle
    github_app: GitHubApp
    github: GitHubRest
    github_notifier: GitHubNotifier
    slack: SlackFeature
    slack_notifier: SlackNotifier
    dispatcher: Dispatcher
    # Where runs happen (CLARITY_RUNNER), and what follows them once started.
    backend: RunnerBackend
    watcher: RunWatcher
    activity: ActivityWriter
    api: ApiContext
    maintenance: Maintenance
    publisher: Publisher
    # Every job kind this process can run, gathered here and nowhere else.
    jobs: dict[str, JobHandler]

    async def close(self) -> None:
        """Finish pending writes and release connections."""
        await self.activity.close()
        await self.backend.close()
        await self.services.close()


def build_services(
    settings: Settings, database_url: str, *, pool_size: int = 10, max_overflow: int = 10
) -> Services:
    """Engine, sessions, cipher and metrics for one process."""
    engine = create_engine(database_url, pool_size=pool_size, max_overflow=max_overflow)
    return Services(
        settings=settings,
        engine=engine,
        session_factory=create_session_factory(engine),
        metrics=Metrics(),
        cipher=build_cipher(settings),
    )


def build_app(
    settings: Settings,
    database_url: str | None = None,
    *,
    services: Services | None = None,
    progress_interval_s: float = 1.0,
    backend: RunnerBackend | None = None,
) -> Clarity:
    """The typed object graph of one process."""
    if services is None:
        url = database_url or settings.secret("database_url")
        if not url:
            raise ValueError("build_app needs a database URL")
        services = build_services(settings, url)
    events = RequestEvents()
    lifecycle = RequestLifecycle(
        events=events,
        metrics=services.metrics,
        admins=settings.split(settings.clarity_admin_user_ids),
        dispatch_max_attempts=settings.clarity_job_max_attempts,
        budget_usd=settings.clarity_budget_usd,
        max_budget_usd=settings.clarity_max_budget_usd,
    )
    github_app = GitHubApp(services)
    github = GitHubRest(services, github_app)
    github_notifier = GitHubNotifier(services, github_app, github, lifecycle)
    slack = SlackFeature(services, lifecycle, progress_interval_s=progress_interval_s)
    slack_notifier = SlackNotifier(slack)
    # Subscribers, in the order they are told of a change.
    events.subscribe(slack_notifier.on_change)
    events.subscribe(github_notifier.on_change)
    events.activity_job = slack_notifier.activity_job
    credentials = Credentials(services, github_app)
    if backend is None:
        backend = make_backend(
            settings,
            http_session=services.http_session,
            runs_dir=(settings.clarity_data_dir or default_data_dir()) / "runs",
        )
    watcher = RunWatcher(services, lifecycle, backend)
    dispatcher = Dispatcher(
        services,
        lifecycle,
        backend=backend,
        watcher=watcher,
        environment=SandboxEnvironment.from_host(
            git_url=settings.github_git_url,
            agent_cli=settings.clarity_agent_cli,
            timeout_s=settings.clarity_run_timeout_s,
            anthropic_base_url=settings.anthropic_base_url,
        ),
        credentials=credentials,
        tracking_issue_first=github_notifier.open_tracking_issue,
        max_concurrent_runs=settings.clarity_max_concurrent_runs,
    )
    activity = ActivityWriter(services, job=events.activity_job)
    api = ApiContext(services, lifecycle, activity, credentials)
    maintenance = Maintenance(services)
    publisher = Publisher(
        services, lifecycle, github_app, GitHubPulls(github), github_notifier.scrubber
    )
    jobs: dict[str, JobHandler] = {
        **publisher.job_handlers(),
        **slack_job_handlers(slack, slack_notifier),
        **github_notifier.job_handlers(),
        **dispatcher.job_handlers(),
        **maintenance.job_handlers(),
    }
    return Clarity(
        services=services,
        events=events,
        lifecycle=lifecycle,
        github_app=github_app,
        github=github,
        github_notifier=github_notifier,
        slack=slack,
        slack_notifier=slack_notifier,
        dispatcher=dispatcher,
        backend=backend,
        watcher=watcher,
        activity=activity,
        api=api,
        maintenance=maintenance,
        publisher=publisher,
        jobs=jobs,
    )
