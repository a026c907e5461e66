"""Clarity's Slack bot, side-API, GitHub webhooks and job workers."""
