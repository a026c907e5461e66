"""Repositories: each takes an AsyncSession; the caller owns the transaction."""

from storage.repositories.app_config import AppConfigRepository
from storage.repositories.feature_requests import (
    FeatureRequestRepository,
    Page,
    StatusStats,
)
from storage.repositories.request_messages import RequestMessagesRepository

__all__ = [
    "AppConfigRepository",
    "FeatureRequestRepository",
    "Page",
    "RequestMessagesRepository",
    "StatusStats",
]
