"""What a runner backend raises when it cannot do what was asked."""

from __future__ import annotations


class SandboxStartError(RuntimeError):
    """The sandbox could not be started (no such image, a quota, the engine said no).

    Its message is meant for a person: it names what failed and, where known, why. The control
    plane records the run as failed with it; a start that raised may be tried again later.
    """
