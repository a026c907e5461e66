"""AppConfigRepository: the three typed configs, secrets encrypted at this boundary."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.crypto import Cipher
from storage.errors import (
    DB_ERRORS,
    InsertError,
    NotFoundError,
    QueryError,
    StorageError,
    UpdateError,
    translate,
)
from storage.models import AppConfig, ConfigType, utcnow
from storage.schemas import ClaudeConfig, GitHubConfig, SecretFieldsModel, SlackConfig

ConfigT = TypeVar("ConfigT", bound=SecretFieldsModel)

CONFIG_MODELS: dict[ConfigType, type[SecretFieldsModel]] = {
    ConfigType.GITHUB: GitHubConfig,
    ConfigType.CLAUDE: ClaudeConfig,
    ConfigType.SLACK: SlackConfig,
}


class InvalidConfigError(StorageError):
    """A stored or supplied config does not have the expected shape."""


def _type_of(model: type[SecretFieldsModel]) -> ConfigType:
    for config_type, cls in CONFIG_MODELS.items():
        if cls is model:
            return config_type
    raise TypeError(f"not a config model: {model.__name__}")


class AppConfigRepository:
    """Get and set each config type; callers see plaintext, the database never does."""

    def __init__(self, session: AsyncSession, cipher: Cipher) -> None:
        self.session = session
        self.cipher = cipher

    # --- encoding at the boundary -------------------------------------------------------

    def _encode(self, config: SecretFieldsModel) -> dict[str, Any]:
        stored = config.to_json_dict()
        for field, key in type(config).SECRET_FIELDS.items():
            value = getattr(config, field)
            if value is not None:
                stored[key] = self.cipher.encrypt(value)
        return stored

    def _decode(self, model: type[ConfigT], stored: dict[str, Any]) -> ConfigT:
        plain = dict(stored)
        for key in model.SECRET_FIELDS.values():
            if plain.get(key) is not None:
                plain[key] = self.cipher.decrypt(plain[key])
        try:
            return model.model_validate(plain)
        except ValidationError as exc:
            raise InvalidConfigError(
                f"stored {_type_of(model).value} config is invalid: {exc.error_count()} error(s)",
                cause=exc,
            ) from exc

    # --- generic ----------------------------------------------------------------------

    async def get_raw(self, config_type: ConfigType) -> dict[str, Any] | None:
        """The stored (encrypted) JSON of one config, or None."""
        try:
            row = await self.session.scalar(
                select(AppConfig.config).where(AppConfig.type == config_type)
            )
        except DB_ERRORS as exc:
            raise translate(exc, QueryError, f"reading {config_type.value} config") from exc
        return row

    async def get(self, model: type[ConfigT]) -> ConfigT | None:
        """One config, decrypted, or None when not set."""
        stored = await self.get_raw(_type_of(model))
        return None if stored is None else self._decode(model, stored)

    async def set(self, config: SecretFieldsModel) -> None:
        """Insert or replace one config, encrypting its secret fields."""
        config_type = _type_of(type(config))
        await self._put(config_type, self._encode(config))

    async def _put(self, config_type: ConfigType, stored: dict[str, Any]) -> None:
        stmt = insert(AppConfig).values(type=config_type, config=stored)
        stmt = stmt.on_conflict_do_update(
            constraint="app_config_type_unique",
            set_={"config": stmt.excluded.config, "updated_at": utcnow()},
        )
        try:
            await self.session.execute(stmt)
        except DB_ERRORS as exc:
            raise translate(exc, InsertError, f"saving {config_type.value} config") from exc

    # --- the ADR's typed accessors ----------------------------------------------------

    async def get_github_config(self) -> GitHubConfig | None:
        return await self.get(GitHubConfig)

    async def set_github_config(self, config: GitHubConfig) -> None:
        await self.set(config)

    async def get_claude_config(self) -> ClaudeConfig | None:
        return await self.get(ClaudeConfig)

    async def set_claude_config(self, config: ClaudeConfig) -> None:
        await self.set(config)

    async def get_slack_config(self) -> SlackConfig | None:
        return await self.get(SlackConfig)

    async def set_slack_config(self, config: SlackConfig) -> None:
        await self.set(config)

    async def update_github_token(self, token: str, expires_at: str) -> None:
        """Cache a fresh installation token (encrypted) and its expiry."""
        try:
            row = await self.session.scalar(
                select(AppConfig).where(AppConfig.type == ConfigType.GITHUB).with_for_update()
            )
        except DB_ERRORS as exc:
            raise translate(exc, QueryError, "reading github config") from exc
        if row is None:
            raise NotFoundError("GitHub config not found")
        stored = dict(row.config)
        stored["installationToken"] = self.cipher.encrypt(token)
        stored["tokenExpiresAt"] = expires_at
        row.config = stored
        row.updated_at = utcnow()
        try:
            await self.session.flush()
        except DB_ERRORS as exc:
            raise translate(exc, UpdateError, "saving github token") from exc

    async def reencrypt_all(self) -> int:
        """Re-encrypt every stored secret with the primary key; returns values changed."""
        changed = 0
        try:
            rows = (await self.session.scalars(select(AppConfig).with_for_update())).all()
        except DB_ERRORS as exc:
            raise translate(exc, QueryError, "reading configs") from exc
        for row in rows:
            model = CONFIG_MODELS[row.type]
            stored = dict(row.config)
            row_changed = False
            for key in model.SECRET_FIELDS.values():
                if stored.get(key) is None:
                    continue
                fresh = self.cipher.reencrypt(stored[key])
                if fresh is not None:
                    stored[key] = fresh
                    changed += 1
                    row_changed = True
            if row_changed:
                row.config = stored
                row.updated_at = utcnow()
        try:
            await self.session.flush()
        except DB_ERRORS as exc:
            raise translate(exc, UpdateError, "re-encrypting configs") from exc
        return changed
