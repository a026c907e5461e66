"""Clarity's persistence layer: models, repositories, encryption, jobs and database operations."""
