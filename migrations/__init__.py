"""Alembic migrations for Clarity's schema."""
