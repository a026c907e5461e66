"""`clarity config set|show|reencrypt`: credentials stored encrypted in app_config."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bot.cli.database import opened
from bot.cli.errors import CliError, settings_or_fail
from bot.settings import Settings
from storage.crypto import Cipher, DecryptionError, InvalidKeyError
from storage.engine import create_engine, create_session_factory
from storage.errors import StorageError
from storage.models import ConfigType
from storage.repositories import AppConfigRepository
from storage.repositories.app_config import CONFIG_MODELS
from storage.schemas import ClaudeConfig, GitHubConfig, SecretFieldsModel, SlackConfig

# flag → (env fallback, model field)
_FIELDS: dict[ConfigType, list[tuple[str, str, str]]] = {
    ConfigType.SLACK: [
        ("bot-token", "SLACK_BOT_TOKEN", "bot_token"),
        ("signing-secret", "SLACK_SIGNING_SECRET", "signing_secret"),
    ],
    ConfigType.CLAUDE: [("api-key", "ANTHROPIC_API_KEY", "api_key")],
    ConfigType.GITHUB: [
        ("app-id", "GITHUB_APP_ID", "app_id"),
        ("private-key", "GITHUB_PRIVATE_KEY", "private_key"),
        ("webhook-secret", "GITHUB_WEBHOOK_SECRET", "webhook_secret"),
        ("installation-id", "GITHUB_INSTALLATION_ID", "installation_id"),
    ],
}


_DESCRIPTIONS = {
    ConfigType.SLACK: "store the Slack app's bot token and signing secret",
    ConfigType.CLAUDE: "store the Anthropic API key the agents use",
    ConfigType.GITHUB: "store the GitHub App: id, private key, webhook secret, installation id",
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`clarity config …`."""
    parser = sub.add_parser(
        "config",
        help="store, show or re-encrypt credentials kept in the database",
        description="Credentials in app_config are encrypted with ENCRYPTION_KEY; "
        "environment variables win over stored values.",
    )
    config_sub = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)

    set_parser = config_sub.add_parser(
        "set",
        help="store credentials of one kind (github, claude, slack)",
        description="Each value comes from its flag, '-' for standard input, or else the "
        "environment variable named in its help.",
    )
    set_sub = set_parser.add_subparsers(dest="config_type", metavar="TYPE", required=True)
    for config_type, fields in _FIELDS.items():
        p = set_sub.add_parser(
            config_type.value,
            help=_DESCRIPTIONS[config_type],
            description=_DESCRIPTIONS[config_type]
            + ". Secrets are stored encrypted with ENCRYPTION_KEY; environment variables "
            "still win over what is stored.",
        )
        for flag, env, _ in fields:
            p.add_argument(
                f"--{flag}",
                default=None,
                metavar="VALUE",
                help=f"the {flag.replace('-', ' ')}; '-' reads it from stdin (default: ${env})",
            )
        p.set_defaults(handler=_cli_set, config_kind=config_type)

    show = config_sub.add_parser("show", help="show stored configs with secrets masked")
    show.add_argument("type", nargs="?", choices=[t.value for t in ConfigType])
    show.set_defaults(handler=_cli_show)

    reencrypt = config_sub.add_parser(
        "reencrypt",
        help="re-encrypt every stored secret with the first key of ENCRYPTION_KEY",
        description="For key rotation: set ENCRYPTION_KEY=new,old; run this; then drop old.",
    )
    reencrypt.set_defaults(handler=_cli_reencrypt)


def mask(value: str) -> str:
    """A secret shown as its first 4 characters and its length."""
    return f"{value[:4]}…({len(value)} chars)" if len(value) > 8 else f"***({len(value)} chars)"


def _read_value(flag_value: str | None, env: str) -> str | None:
    if flag_value == "-":
        return sys.stdin.readline().rstrip("\n")
    if flag_value is not None:
        return flag_value
    return os.environ.get(env)


def _private_key(value: str) -> str:
    """PEM text, or a path to a PEM file."""
    if "-----BEGIN" in value:
        return value
    path = Path(value).expanduser()
    if not path.is_file():
        raise CliError("--private-key is neither PEM text nor a readable file")
    return path.read_text()


async def _with_repo(settings: Settings, url: str, fn: Any) -> Any:
    raw_key = settings.secret("encryption_key")
    try:
        cipher = Cipher.from_env_value(raw_key)
    except InvalidKeyError as exc:
        raise CliError(str(exc)) from exc
    engine = create_engine(url, pool_size=1, max_overflow=0)
    try:
        async with create_session_factory(engine).begin() as session:
            return await fn(AppConfigRepository(session, cipher))
    except (StorageError, DecryptionError) as exc:
        raise CliError(str(exc)) from exc
    finally:
        await engine.dispose()


def _run(fn: Any) -> Any:
    """Run `fn(repo)` on the database every command uses (embedded: stopped afterwards)."""
    with opened(settings_or_fail()) as (settings, db):
        return asyncio.run(_with_repo(settings, db.url, fn))


def _cli_set(args: argparse.Namespace) -> int:
    config_type: ConfigType = args.config_kind
    values: dict[str, Any] = {}
    missing: list[str] = []
    for flag, env, field in _FIELDS[config_type]:
        value = _read_value(getattr(args, flag.replace("-", "_")), env)
        if not value:
            missing.append(f"--{flag} (or ${env})")
            continue
        values[field] = _private_key(value) if field == "private_key" else value
    if missing:
        raise CliError("missing " + ", ".join(missing))

    async def store(repo: AppConfigRepository) -> None:
        model: type[SecretFieldsModel] = CONFIG_MODELS[config_type]
        existing = await repo.get(model)
        merged = {**(existing.model_dump() if existing else {}), **values}
        merged["setup_at"] = merged.get("setup_at") or dt.datetime.now(dt.UTC).isoformat()
        try:
            config = model.model_validate(merged)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise CliError(f"invalid {config_type.value} config: {first['msg']}") from exc
        await repo.set(config)

    _run(store)
    print(f"stored {config_type.value} config (secrets encrypted)")
    return 0


def _masked(config: SecretFieldsModel) -> dict[str, Any]:
    data = config.model_dump(by_alias=True, exclude_none=True, mode="json")
    for field, key in type(config).SECRET_FIELDS.items():
        value = getattr(config, field)
        if value is not None:
            data[key] = mask(value)
    return data


def _cli_show(args: argparse.Namespace) -> int:
    wanted = [ConfigType(args.type)] if args.type else list(ConfigType)

    async def show(repo: AppConfigRepository) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for config_type in wanted:
            config = await repo.get(CONFIG_MODELS[config_type])
            out[config_type.value] = None if config is None else _masked(config)
        return out

    print(json.dumps(_run(show), indent=2))
    return 0


def _cli_reencrypt(args: argparse.Namespace) -> int:
    changed = _run(lambda repo: repo.reencrypt_all())
    print(f"re-encrypted {changed} secret(s) with the primary key")
    return 0


__all__ = ["ClaudeConfig", "GitHubConfig", "SlackConfig", "mask", "register"]
