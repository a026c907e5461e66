"""Typed database errors: callers tell a conflict from an outage without parsing messages."""

from __future__ import annotations

from typing import Any

import asyncpg
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, SQLAlchemyError


class StorageError(Exception):
    """Base class for failures in the storage layer; `cause` is the driver's exception."""

    operation = "query"

    def __init__(self, message: str, *, cause: BaseException | None = None, **context: Any):
        super().__init__(message)
        self.cause = cause
        self.context = context
        if cause is not None:
            self.__cause__ = cause


class QueryError(StorageError):
    operation = "query"


class InsertError(StorageError):
    operation = "insert"


class UpdateError(StorageError):
    operation = "update"


class DeleteError(StorageError):
    operation = "delete"


class ConstraintError(StorageError):
    """A constraint (foreign key, not null, check) rejected the write."""

    operation = "constraint"

    def __init__(
        self,
        message: str,
        *,
        constraint: str | None = None,
        cause: BaseException | None = None,
        **context: Any,
    ) -> None:
        super().__init__(message, cause=cause, **context)
        self.constraint = constraint


class UniqueConflictError(ConstraintError):
    """A unique constraint rejected the write: the row already exists."""


class DatabaseUnavailableError(StorageError):
    """The database could not be reached."""


class NotFoundError(StorageError):
    """The row the operation needs does not exist."""


class IllegalTransitionError(StorageError):
    """The request lifecycle forbids this status change."""

    def __init__(self, request_id: str, from_status: str, to_status: str) -> None:
        super().__init__(
            f"request {request_id}: status cannot change from {from_status} to {to_status}",
            request_id=request_id,
            from_status=from_status,
            to_status=to_status,
        )
        self.request_id = request_id
        self.from_status = from_status
        self.to_status = to_status


# Everything a database call can raise: SQLAlchemy wraps driver errors during statements,
# but a refused or timed-out *connection* surfaces as the raw OSError/TimeoutError.
DB_ERRORS: tuple[type[BaseException], ...] = (
    SQLAlchemyError,
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)

_UNIQUE_VIOLATION = "23505"
_CONSTRAINT_CLASS = "23"
_CONNECTION_CLASSES = ("08", "57P", "53")


def _sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    for candidate in (orig, getattr(orig, "__cause__", None)):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


def _constraint_name(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    for candidate in (orig, getattr(orig, "__cause__", None)):
        name = getattr(candidate, "constraint_name", None)
        if isinstance(name, str):
            return name
    return None


def translate(exc: BaseException, operation: type[StorageError], message: str) -> StorageError:
    """Map a SQLAlchemy/driver exception to our typed error, keeping the cause."""
    state = _sqlstate(exc)
    if isinstance(exc, IntegrityError) or (state or "").startswith(_CONSTRAINT_CLASS):
        name = _constraint_name(exc)
        if state == _UNIQUE_VIOLATION:
            return UniqueConflictError(
                f"{message}: already exists ({name or 'unique constraint'})",
                constraint=name,
                cause=exc,
            )
        return ConstraintError(
            f"{message}: violates {name or 'a constraint'}", constraint=name, cause=exc
        )
    if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError) or (
        isinstance(exc, OperationalError | DBAPIError)
        and (exc.connection_invalidated or (state or "").startswith(_CONNECTION_CLASSES))
    ):
        return DatabaseUnavailableError(f"{message}: database unavailable", cause=exc)
    return operation(f"{message}: {type(exc).__name__}", cause=exc)


def is_database_down(error: BaseException) -> bool:
    """Whether an error (or one it was raised from) means the database is unreachable."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DatabaseUnavailableError):
            return True
        if not isinstance(current, StorageError) and isinstance(
            translate(current, QueryError, ""), DatabaseUnavailableError
        ):
            return True
        current = current.__cause__ or current.__context__
    return False
