"""What every command shares: the one-line error, and settings read without a traceback."""

from __future__ import annotations

from pydantic import ValidationError

from bot.settings import Settings, load_settings


class CliError(Exception):
    """A failure the user should see as one line, with a non-zero exit."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def settings_or_fail(**overrides: object) -> Settings:
    """The settings; a bad value is one line naming the setting (no pydantic traceback)."""
    try:
        return load_settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "settings"
        raise CliError(f"invalid setting {where.upper()}: {first.get('msg')}") from None
