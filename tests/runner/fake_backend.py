"""A runner backend for tests of the control plane: sandboxes that exist until told to end.

It implements bot.runner.base.RunnerBackend the way a real one behaves (a second start of
an attempt returns the first sandbox; cancel ends a running sandbox; reap forgets it), and
records every call. The real backends have their own tests (test_local_backend.py, the
docker and kubernetes suites).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.runner.base import RunSpec, SandboxState, SandboxStatus


@dataclass
class FakeBackend:
    name: str = "fake"
    starts: list[RunSpec] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    reaped: list[str] = field(default_factory=list)
    status: dict[str, SandboxStatus] = field(default_factory=dict)

    async def start(self, spec: RunSpec) -> str:
        sandbox = f"fake:{spec.request_id}:{spec.attempt}"
        if sandbox not in self.status:
            self.starts.append(spec)
            self.status[sandbox] = SandboxStatus(SandboxState.RUNNING)
        return sandbox

    async def cancel(self, sandbox_id: str, *, grace_s: float = 10.0) -> None:
        self.cancelled.append(sandbox_id)
        if sandbox_id in self.status and not self.status[sandbox_id].finished:
            self.status[sandbox_id] = SandboxStatus(SandboxState.EXITED, exit_code=0)

    async def observe(self, sandbox_id: str) -> SandboxStatus:
        return self.status.get(sandbox_id, SandboxStatus(SandboxState.GONE, reason="no such"))

    async def reap(self, sandbox_id: str) -> None:
        self.reaped.append(sandbox_id)
        self.status.pop(sandbox_id, None)

    async def sandboxes(self) -> list[str]:
        return list(self.status)

    async def close(self) -> None:
        pass

    # -- what a test makes happen ----------------------------------------------------------

    def exit(self, sandbox_id: str, code: int) -> None:
        self.status[sandbox_id] = SandboxStatus(SandboxState.EXITED, exit_code=code)

    def lose(self, sandbox_id: str) -> None:
        self.status.pop(sandbox_id, None)

    @property
    def running(self) -> list[str]:
        return [s for s, st in self.status.items() if st.state == SandboxState.RUNNING]
