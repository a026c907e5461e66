"""The request lifecycle: every state change of a request is one function of `RequestLifecycle`.

Slack listeners, GitHub webhooks, the side-API and the dashboard are adapters: they verify,
parse, call one function here and reply. What a change does — check the transition, write
the audit message, claim the delivery, queue the dispatch, announce the change to the
subscribers (Slack, GitHub, the dashboard's event streams) — is written once, here.
"""
