"""The runner backend interface: start, cancel, observe and reap one sandbox per run.

Every backend delivers the same job document (DESIGN.md "Dispatch to the runner") to the
agent program `clarity-agent`, started in a fresh sandbox: a work folder (`local`), a
container (`docker`) or a Job (`kubernetes`). The control plane (bot.dispatch) never cares
which: it records each run in `clarity_runs`, asks the backend to start it, and watches it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


class SandboxState(enum.StrEnum):
    """What a backend can tell about one sandbox."""

    # Accepted, not yet running (image pull, scheduling, process spawn).
    PENDING = "pending"
    RUNNING = "running"
    # The agent program ended; `exit_code` says how.
    EXITED = "exited"
    # The sandbox failed in a way the agent could not report (OOMKilled, ImagePullBackOff,
    # deadline exceeded, Pending too long); `reason` says which, for a person to read.
    FAILED = "failed"
    # No such sandbox: never started, already reaped, or lost with its machine.
    GONE = "gone"


@dataclass(frozen=True)
class SandboxStatus:
    """A backend's answer to `observe`."""

    state: SandboxState
    exit_code: int | None = None
    reason: str | None = None

    @property
    def finished(self) -> bool:
        """The sandbox will not do anything more."""
        return self.state in (SandboxState.EXITED, SandboxState.FAILED, SandboxState.GONE)


@dataclass(frozen=True)
class RunSpec:
    """Everything a backend needs to start one run of a request."""

    request_id: str
    attempt: int
    kind: str
    # The job document, exactly the body RUNNER_URL receives (requestId, attempt, kind, repo,
    # title, description, branch, prNumber, issueNumber, conversation, apiUrl, apiToken).
    job: Mapping[str, Any]
    # The sandbox's whole environment, already reduced to what the agent may see
    # (bot.runner.environment): never a database URL, the encryption key, a Slack or GitHub
    # secret or CLARITY_API_TOKEN.
    env: Mapping[str, str] = field(default_factory=dict)
    # Wall-clock limit of the run (CLARITY_RUN_TIMEOUT_S).
    timeout_s: int = 3600

    @property
    def name(self) -> str:
        """A name unique to (request, attempt), valid as a container or Kubernetes name."""
        slug = "".join(c if c.isalnum() else "-" for c in self.request_id.lower()).strip("-")
        return f"clarity-{slug[:40]}-{self.attempt}"

    @property
    def labels(self) -> dict[str, str]:
        """Labels every backend puts on what it creates, to find it again."""
        return {
            "clarity.run": "1",
            "clarity.request": self.request_id,
            "clarity.attempt": str(self.attempt),
        }


class RunnerBackend(Protocol):
    """Where runs happen. Every method is safe to call twice and from any replica."""

    name: str

    async def start(self, spec: RunSpec) -> str:
        """Start the run's sandbox and return its id; a second start of the same (request,
        attempt) finds the first sandbox and returns its id without starting another."""
        ...

    async def cancel(self, sandbox_id: str, *, grace_s: float = 10.0) -> None:
        """Stop the sandbox: interrupt, `grace_s` for the agent to write its result, kill,
        then remove. Unknown ids are ignored."""
        ...

    async def observe(self, sandbox_id: str) -> SandboxStatus:
        """The sandbox's state now (GONE when it does not exist)."""
        ...

    async def reap(self, sandbox_id: str) -> None:
        """Remove what is left of a finished sandbox (files, container, Job)."""
        ...

    async def sandboxes(self) -> list[str]:
        """Ids of every sandbox this backend created that still exists (found by label), so
        that runs left by a worker that died are followed or reaped."""
        ...

    async def close(self) -> None:
        """Release clients and connections."""
        ...
