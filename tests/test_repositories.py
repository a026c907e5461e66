"""Every repository operation, round trip, on real PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage.crypto import Cipher, DecryptionError
from storage.errors import (
    ConstraintError,
    InsertError,
    NotFoundError,
    UniqueConflictError,
)
from storage.models import MessageSource, MessageType, RequestOrigin, RequestStatus, utcnow
from storage.repositories import (
    AppConfigRepository,
    FeatureRequestRepository,
    RequestMessagesRepository,
)
from storage.repositories.request_messages import Actor, InvalidMetadataError, metadata_of
from storage.schemas import ClaudeConfig, GitHubConfig, SlackConfig

KEY = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
Factory = async_sessionmaker[AsyncSession]


@pytest.fixture
def cipher() -> Cipher:
    return Cipher.from_env_value(KEY)


def github_config() -> GitHubConfig:
    return GitHubConfig(
        app_id="123",
        private_key="-----BEGIN RSA PRIVATE KEY-----\nabc\n-----END RSA PRIVATE KEY-----",
        webhook_secret="whsec-123456",
        installation_id="456",
        owner_login="acme",
        owner_type="Organization",
        owner_id=9,
        permissions={"issues": "write"},
        events=["issues"],
        repositories=[{"id": 1, "name": "r", "fullName": "acme/r"}],  # type: ignore[list-item]
        webhook_count=3,
    )


# --- app_config -------------------------------------------------------------------------


async def test_configs_round_trip_encrypted_at_rest(
    session_factory: Factory, cipher: Cipher
) -> None:
    async with session_factory.begin() as session:
        repo = AppConfigRepository(session, cipher)
        assert await repo.get_github_config() is None
        await repo.set_github_config(github_config())
        await repo.set_claude_config(ClaudeConfig(api_key="sk-ant-abcdef123456"))
        await repo.set_slack_config(
            SlackConfig(signing_secret="signing-secret-1", bot_token="xoxb-1-2-3")
        )

    async with session_factory() as session:
        raw = dict((await session.execute(text("select type::text, config from app_config"))).all())
        blob = json.dumps(raw)
        for plaintext in ("whsec-123456", "sk-ant-abcdef123456", "signing-secret-1", "xoxb-1-2-3"):
            assert plaintext not in blob
        assert set(raw["github"]) >= {"privateKeyEncrypted", "webhookSecretEncrypted", "appId"}
        assert cipher.decrypt(raw["slack"]["botTokenEncrypted"]) == "xoxb-1-2-3"

        repo = AppConfigRepository(session, cipher)
        gh = await repo.get_github_config()
        assert gh is not None and gh.webhook_secret == "whsec-123456"
        assert gh.repositories[0].full_name == "acme/r"
        claude = await repo.get_claude_config()
        assert claude is not None and claude.api_key == "sk-ant-abcdef123456"
        slack = await repo.get_slack_config()
        assert slack is not None and slack.bot_token == "xoxb-1-2-3"


async def test_set_replaces_and_updates_token(session_factory: Factory, cipher: Cipher) -> None:
    async with session_factory.begin() as session:
        repo = AppConfigRepository(session, cipher)
        await repo.set_github_config(github_config())
        await repo.update_github_token("ghs_token_value_1234567890", "2030-01-01T00:00:00Z")
    async with session_factory.begin() as session:
        repo = AppConfigRepository(session, cipher)
        gh = await repo.get_github_config()
        assert gh is not None
        assert gh.installation_token == "ghs_token_value_1234567890"
        assert gh.token_expires_at == "2030-01-01T00:00:00Z"
        stored = await repo.get_raw(
            gh_type := __import__("storage.models").models.ConfigType.GITHUB
        )
        assert stored is not None and stored["installationToken"] != "ghs_token_value_1234567890"
        assert gh_type.value == "github"
        count = (await session.execute(text("select count(*) from app_config"))).scalar_one()
        assert count == 1


async def test_update_token_without_config_raises(session_factory: Factory, cipher: Cipher) -> None:
    async with session_factory.begin() as session:
        with pytest.raises(NotFoundError):
            await AppConfigRepository(session, cipher).update_github_token("t", "x")


async def test_typescript_row_keeps_unknown_keys(session_factory: Factory, cipher: Cipher) -> None:
    """A row the TypeScript worker wrote reads back, and writes back, without loss."""
    ts_row = {
        "appId": "1",
        "privateKeyEncrypted": cipher.encrypt("PEM"),
        "webhookSecretEncrypted": cipher.encrypt("hook-secret"),
        "installationId": "2",
        "ownerLogin": "acme",
        "ownerType": "User",
        "ownerId": 5,
        "permissions": {"contents": "write"},
        "events": ["push"],
        "repositories": [{"id": 1, "name": "r", "fullName": "acme/r", "private": True}],
        "webhookCount": 10,
        "lastWebhookAt": "2026-01-01T00:00:00Z",
        "futureField": {"nested": [1, 2]},
    }
    async with session_factory.begin() as session:
        await session.execute(
            text("insert into app_config (type, config) values ('github', cast(:c as jsonb))"),
            {"c": json.dumps(ts_row)},
        )
    async with session_factory.begin() as session:
        repo = AppConfigRepository(session, cipher)
        gh = await repo.get_github_config()
        assert gh is not None and gh.private_key == "PEM"
        assert gh.model_extra == {"futureField": {"nested": [1, 2]}}
        gh.webhook_count = 11
        await repo.set_github_config(gh)
    async with session_factory() as session:
        stored = (
            await session.execute(text("select config from app_config where type = 'github'"))
        ).scalar_one()
        assert stored["futureField"] == {"nested": [1, 2]}
        assert stored["repositories"][0]["private"] is True
        assert stored["webhookCount"] == 11
        assert cipher.decrypt(stored["webhookSecretEncrypted"]) == "hook-secret"


async def test_wrong_key_on_read_raises(session_factory: Factory, cipher: Cipher) -> None:
    async with session_factory.begin() as session:
        await AppConfigRepository(session, cipher).set_claude_config(ClaudeConfig(api_key="k" * 20))
    async with session_factory() as session:
        with pytest.raises(DecryptionError):
            await AppConfigRepository(session, Cipher.from_env_value("ab" * 32)).get_claude_config()


async def test_reencrypt_all_rotates_every_secret(session_factory: Factory, cipher: Cipher) -> None:
    async with session_factory.begin() as session:
        repo = AppConfigRepository(session, cipher)
        await repo.set_github_config(github_config())
        await repo.update_github_token("ghs_abcdefghijklmnop", "2030-01-01T00:00:00Z")
        await repo.set_slack_config(SlackConfig(signing_secret="s" * 10, bot_token="xoxb-abc"))
    new_key = "ab" * 32
    rotating = Cipher.from_env_value(f"{new_key},{KEY}")
    async with session_factory.begin() as session:
        assert await AppConfigRepository(session, rotating).reencrypt_all() == 5
    async with session_factory.begin() as session:
        assert await AppConfigRepository(session, rotating).reencrypt_all() == 0
    async with session_factory() as session:
        only_new = AppConfigRepository(session, Cipher.from_env_value(new_key))
        gh = await only_new.get_github_config()
        assert gh is not None and gh.installation_token == "ghs_abcdefghijklmnop"
        with pytest.raises(DecryptionError):
            await AppConfigRepository(session, cipher).get_slack_config()


# --- feature_requests ----------------------------------------------------------------------


async def _create(session: AsyncSession, request_id: str, **extra: object) -> None:
    fields: dict[str, object] = {
        "request_id": request_id,
        "origin": RequestOrigin.SLACK,
        "repo": "acme/app",
        "description": "add dark mode",
    }
    fields.update(extra)
    await FeatureRequestRepository(session).create(**fields)


async def test_create_defaults_and_lookups(session_factory: Factory) -> None:
    async with session_factory.begin() as session:
        repo = FeatureRequestRepository(session)
        row = await repo.create(
            request_id="r1",
            origin=RequestOrigin.SLACK,
            repo="acme/app",
            description="add dark mode",
            slack_channel_id="C1",
            slack_thread_ts="111.222",
            slack_user_id="U1",
        )
        assert row.status == RequestStatus.PENDING
        assert row.retry_count == 0
        assert row.task_status is not None and row.task_status.value == "pending"
        assert row.created_at.tzinfo is dt.UTC
        assert abs((utcnow() - row.created_at).total_seconds()) < 60
        await _create(
            session,
            "r2",
            origin=RequestOrigin.GITHUB_ISSUE,
            issue_id=99,
            issue_number=5,
            repository_name="acme/app",
            issue_labels=["clarity", "bug"],
        )
        await repo.update_status("r1", RequestStatus.PROCESSING)
        await repo.update_status("r1", RequestStatus.PR_CREATED, pr_number=42, pr_url="u")

    async with session_factory() as session:
        repo = FeatureRequestRepository(session)
        assert (await repo.get("r1")).request_id == "r1"
        assert await repo.find_by_request_id("nope") is None
        found = await repo.find_by_slack_thread("C1", "111.222")
        assert found is not None and found.request_id == "r1"
        assert await repo.find_by_slack_thread("C1", "999") is None
        by_issue = await repo.find_by_issue_id(99)
        assert by_issue is not None and by_issue.issue_labels == ["clarity", "bug"]
        by_number = await repo.find_by_issue("acme/app", 5)
        assert by_number is not None and by_number.request_id == "r2"
        by_pr = await repo.find_by_pr("acme/app", 42)
        assert by_pr is not None and by_pr.request_id == "r1"
        assert await repo.find_by_pr("acme/other", 42) is None
        with pytest.raises(NotFoundError):
            await repo.get("nope")


async def test_update_fields_and_retry(session_factory: Factory) -> None:
    async with session_factory.begin() as session:
        await _create(session, "r1")
        repo = FeatureRequestRepository(session)
        await repo.update_status("r1", RequestStatus.ERROR)
        before = await repo.get("r1")
        updated_at = before.updated_at
        row = await repo.record_retry("r1")
        assert (row.status, row.retry_count) == (RequestStatus.PROCESSING, 1)
        assert row.last_retry_at is not None and row.updated_at >= updated_at
        await repo.update_fields("r1", title="Dark mode", cost_usd=125)
    async with session_factory() as session:
        row = await FeatureRequestRepository(session).get("r1")
        assert (row.title, row.cost_usd, row.retry_count) == ("Dark mode", 125, 1)


async def test_unknown_fields_are_rejected(session_factory: Factory) -> None:
    async with session_factory.begin() as session:
        await _create(session, "r1")
        repo = FeatureRequestRepository(session)
        with pytest.raises(TypeError):
            await repo.update_fields("r1", not_a_column=1)
        with pytest.raises(TypeError):
            await repo.update_fields("r1", request_id="other")


async def test_duplicate_request_id_is_typed_conflict(session_factory: Factory) -> None:
    async with session_factory.begin() as session:
        await _create(session, "r1")
        with pytest.raises(UniqueConflictError) as info:
            await _create(session, "r1")
        assert info.value.constraint == "feature_requests_request_id_unique"
        assert info.value.cause is not None
        # The savepoint kept the outer transaction usable.
        await _create(session, "r2")
    async with session_factory() as session:
        count = (await session.execute(text("select count(*) from feature_requests"))).scalar()
        assert count == 2


async def test_concurrent_creates_one_wins(session_factory: Factory) -> None:
    """Two transactions insert the same requestId at once: one row, one typed conflict."""
    first_inserted = asyncio.Event()

    async def creator(delay_commit: bool) -> str:
        try:
            async with session_factory.begin() as session:
                await _create(session, "same")
                if delay_commit:
                    first_inserted.set()
                    await asyncio.sleep(0.2)  # hold the row lock while the other one inserts
            return "created"
        except UniqueConflictError:
            return "conflict"

    async def second() -> str:
        await first_inserted.wait()
        return await creator(False)

    results = await asyncio.gather(creator(True), second())
    assert sorted(results) == ["conflict", "created"]
    async with session_factory() as session:
        count = (
            await session.execute(
                text("select count(*) from feature_requests where request_id = 'same'")
            )
        ).scalar()
        assert count == 1


async def test_recent_cursor_pagination(session_factory: Factory) -> None:
    async with session_factory.begin() as session:
        for i in range(7):
            await _create(session, f"r{i}", slack_user_id="U1" if i % 2 else "U2")
            await session.execute(
                text("update feature_requests set created_at = :t where request_id = :r"),
                {"t": dt.datetime(2026, 1, 1) + dt.timedelta(minutes=i // 2), "r": f"r{i}"},
            )
    async with session_factory() as session:
        repo = FeatureRequestRepository(session)
        seen: list[str] = []
        cursor = None
        while True:
            page = await repo.recent(limit=3, cursor=cursor)
            seen += [r.request_id for r in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert seen == ["r6", "r5", "r4", "r3", "r2", "r1", "r0"]
        mine = await repo.recent(limit=10, slack_user_id="U1")
        assert [r.request_id for r in mine.items] == ["r5", "r3", "r1"]


async def test_stats_since(session_factory: Factory) -> None:
    async with session_factory.begin() as session:
        repo = FeatureRequestRepository(session)
        for i, (status, cost, duration) in enumerate(
            [
                (RequestStatus.COMPLETED, 100, 1000),
                (RequestStatus.COMPLETED, 300, 3000),
                (RequestStatus.ERROR, None, None),
            ]
        ):
            await _create(session, f"r{i}", cost_usd=cost, duration_ms=duration)
            row = await repo.get(f"r{i}")
            row.status = status
        await _create(session, "old", cost_usd=999)
        await session.execute(
            text("update feature_requests set created_at = '2020-01-01' where request_id = 'old'")
        )
    async with session_factory() as session:
        repo = FeatureRequestRepository(session)
        stats = {s.status: s for s in await repo.stats_since(utcnow() - dt.timedelta(days=1))}
        assert set(stats) == {RequestStatus.COMPLETED, RequestStatus.ERROR}
        done = stats[RequestStatus.COMPLETED]
        assert (done.count, done.avg_duration_ms, done.total_cost_cents) == (2, 2000.0, 400)
        assert (stats[RequestStatus.ERROR].count, stats[RequestStatus.ERROR].total_cost_cents) == (
            1,
            0,
        )
        assert await repo.median_duration_since(utcnow() - dt.timedelta(days=1)) == 2000.0


# --- request_messages -------------------------------------------------------------------


async def test_every_message_helper_round_trips(session_factory: Factory) -> None:
    actor = Actor(id="U1", name="Ada")
    async with session_factory.begin() as session:
        await _create(session, "r1")
        m = RequestMessagesRepository(session)
        await m.add_message("r1", MessageType.INITIAL_REQUEST, MessageSource.SLACK, "add dark mode")
        await m.add_clarification_ask("r1", "Which theme?", "111.2", options=["dark", "light"])
        await m.add_clarification_answer("r1", "dark", actor, "slack", {"slackTs": "111.3"})
        await m.add_follow_up_request("r1", "also the icons", actor)
        await m.add_agent_thinking("r1", "planning", "t1", 1)
        await m.add_agent_tool_call("r1", "Read", {"path": "a.py"}, "t1", 1)
        await m.add_agent_tool_result("r1", "Read", "x" * 600, 12, "t1")
        await m.add_agent_file_change("r1", "a.py", "modified", "@@ -1 +1 @@")
        await m.add_agent_terminal("r1", "pytest", 0, "ok", "")
        await m.add_agent_summary("r1", "done", 5000, 150)
        await m.add_pr_created("r1", 60000, 250)
        await m.add_pr_updated("r1", "abc123", 1000, 50)
        await m.add_error("r1", "CONTAINER_TIMEOUT", "timed out", "stack")
        await m.add_retry("r1", 1, actor)

    async with session_factory() as session:
        m = RequestMessagesRepository(session)
        thread = await m.get_thread("r1")
        assert [x.type for x in thread] == [
            MessageType.INITIAL_REQUEST,
            MessageType.CLARIFICATION_ASK,
            MessageType.CLARIFICATION_ANSWER,
            MessageType.FOLLOW_UP_REQUEST,
            MessageType.AGENT_THINKING,
            MessageType.AGENT_TOOL_CALL,
            MessageType.AGENT_TOOL_RESULT,
            MessageType.AGENT_FILE_CHANGE,
            MessageType.AGENT_TERMINAL,
            MessageType.AGENT_SUMMARY,
            MessageType.PR_CREATED,
            MessageType.PR_UPDATED,
            MessageType.ERROR,
            MessageType.RETRY,
        ]
        ask = metadata_of(thread[1])
        assert (ask.slack_thread_ts, ask.options) == ("111.2", ["dark", "light"])
        assert thread[1].actor_id == "system" and thread[1].actor_name == "Clarity AI"
        assert (thread[2].actor_id, thread[2].source) == ("U1", MessageSource.SLACK)
        assert len(thread[6].content) == 500
        assert metadata_of(thread[6]).tool_output == "x" * 600
        assert metadata_of(thread[7]).file_action == "modified"
        assert metadata_of(thread[12]).error_code == "CONTAINER_TIMEOUT"
        assert thread[13].content == "Retry attempt #1" and thread[13].actor_name == "Ada"
        assert thread[11].metadata_ == {"commitSha": "abc123", "durationMs": 1000, "costCents": 50}

        totals = await m.get_total_metrics("r1")
        assert (totals.total_duration_ms, totals.total_cost_cents) == (66000, 450)
        activity = await m.get_agent_activity("r1")
        assert len(activity.messages) == 6
        assert activity.total_turns == 2  # t1 plus the turn-less file/terminal/summary group
        assert [x.type for x in activity.turns["t1"]] == [
            MessageType.AGENT_THINKING,
            MessageType.AGENT_TOOL_CALL,
            MessageType.AGENT_TOOL_RESULT,
        ]
        assert await m.count("r1") == 14


async def test_metadata_validated_and_unknown_keys_kept(session_factory: Factory) -> None:
    async with session_factory.begin() as session:
        await _create(session, "r1")
        m = RequestMessagesRepository(session)
        with pytest.raises(InvalidMetadataError):
            await m.add_message(
                "r1",
                MessageType.PROCESSING_UPDATE,
                MessageSource.SYSTEM,
                "x",
                metadata={"fileAction": "exploded"},
            )
        msg = await m.add_message(
            "r1",
            MessageType.PROCESSING_UPDATE,
            MessageSource.SYSTEM,
            "x",
            metadata={"turnNumber": 2, "agentVersion": "1.2.3"},
        )
        assert msg.metadata_ == {"turnNumber": 2, "agentVersion": "1.2.3"}
    async with session_factory() as session:
        thread = await RequestMessagesRepository(session).get_thread("r1")
        assert len(thread) == 1
        meta = metadata_of(thread[0])
        assert meta.turn_number == 2 and meta.model_extra == {"agentVersion": "1.2.3"}


async def test_message_for_unknown_request_is_constraint_error(session_factory: Factory) -> None:
    async with session_factory() as session:
        with pytest.raises(ConstraintError) as info:
            await RequestMessagesRepository(session).add_message(
                "missing", MessageType.INITIAL_REQUEST, MessageSource.SLACK, "x"
            )
        assert not isinstance(info.value, UniqueConflictError)
        assert info.value.constraint == (
            "request_messages_request_id_feature_requests_request_id_fk"
        )
        assert isinstance(info.value, ConstraintError) and not isinstance(info.value, InsertError)


async def test_unreachable_database_is_typed() -> None:
    from storage.engine import create_engine, create_session_factory
    from storage.errors import DatabaseUnavailableError

    engine = create_engine("postgresql://u:p@127.0.0.1:9/db")
    try:
        async with create_session_factory(engine)() as session:
            with pytest.raises(DatabaseUnavailableError) as info:
                await FeatureRequestRepository(session).find_by_request_id("r1")
            assert info.value.cause is not None
    finally:
        await engine.dispose()
