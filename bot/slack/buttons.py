"""Buttons (`retry_request`, `cancel_request`, `raise_budget`, `answer_clarification`,
`clarification_option`) and the answer modal.

A click that changes a request, and an answer form, is a committed `slack.interaction` job
before Slack gets its answer; the job runs the plain functions below. Each effect happens
under the request's row lock after checking the state it needs, and claims the click's
delivery id with it: a double click, or one click delivered to two replicas, has exactly one
effect — a second click finds the state already changed and is told so privately, the same
click seen again changes nothing and says nothing.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from bot.requests.actions import ALREADY_ANSWERED, Actor, Outcome
from bot.slack import blocks, interactions
from bot.slack.feature import SlackFeature
from bot.slack.payloads import BlockActions, ViewSubmission
from storage.models import MessageSource, RequestStatus
from storage.repositories import FeatureRequestRepository, RequestMessagesRepository

STALE_BUTTON = "This button is out of date."
# Delivery-id sources: a click's effect, and an answer form's, is claimed under these.
CLICK_SOURCE = "slack_action"
VIEW_SOURCE = "slack_view"


def _actor(click: BlockActions | ViewSubmission) -> Actor:
    return Actor(click.user.id, click.user.display, MessageSource.SLACK)


async def tell(feature: SlackFeature, click: BlockActions, text: str) -> None:
    """Answer the person who clicked, privately."""
    api = await feature.api()
    if click.response_url:
        await api.respond(click.response_url, text)
    elif click.channel is not None:
        await api.ephemeral(click.channel.id, click.user.id, text)


async def _click(feature: SlackFeature, click: BlockActions, action: str) -> None:
    """Retry or Cancel: one lifecycle call; the person is told privately why not."""
    lifecycle = feature.lifecycle
    request_id = click.action.value or ""
    delivery = (CLICK_SOURCE, click.delivery_id)
    async with feature.services.session_factory.begin() as session:
        change = lifecycle.retry if action == blocks.ACTION_RETRY else lifecycle.cancel
        outcome: Outcome = await change(session, request_id, _actor(click), delivery=delivery)
    if outcome.refusal:
        await tell(feature, click, outcome.refusal)


async def retry(feature: SlackFeature, click: BlockActions) -> None:
    """`retry_request`: only a failed request is retried; a second click finds it running."""
    await _click(feature, click, blocks.ACTION_RETRY)


async def cancel(feature: SlackFeature, click: BlockActions) -> None:
    """`cancel_request`: by the requester or an admin, while the request is not finished."""
    await _click(feature, click, blocks.ACTION_CANCEL)


async def raise_budget(feature: SlackFeature, click: BlockActions) -> None:
    """`raise_budget` ("Continue with $X more"): by the requester or an admin, on a run its
    budget stopped; a second click finds the request running again."""
    async with feature.services.session_factory.begin() as session:
        outcome = await feature.lifecycle.raise_budget(
            session,
            click.action.value or "",
            _actor(click),
            delivery=(CLICK_SOURCE, click.delivery_id),
        )
    if outcome.refusal:
        await tell(feature, click, outcome.refusal)


def _question_id(raw: str | None) -> int | None:
    try:
        return int(raw or "")
    except ValueError:
        return None


def question_id_of_block(block_id: str) -> int | None:
    """`clarity_q:<messageId>[:<option>]` → the question's message id."""
    if not block_id.startswith(blocks.QUESTION_BLOCK_PREFIX):
        return None
    return _question_id(block_id[len(blocks.QUESTION_BLOCK_PREFIX) :].split(":", 1)[0])


async def open_answer_modal(feature: SlackFeature, click: BlockActions) -> None:
    """`answer_clarification`: a modal showing the question, if it is still open."""
    question_id = _question_id(click.action.value)
    if question_id is None:
        await tell(feature, click, STALE_BUTTON)
        return
    async with feature.services.session_factory() as session:
        messages = RequestMessagesRepository(session)
        question = await messages.get(question_id)
        request = (
            await FeatureRequestRepository(session).find_by_request_id(question.request_id)
            if question is not None
            else None
        )
        latest = await messages.open_question(question.request_id) if question else None
    if (
        question is None
        or request is None
        or request.status != RequestStatus.AWAITING_CLARIFICATION
        or latest is None
        or latest.id != question.id
    ):
        await tell(feature, click, ALREADY_ANSWERED)
        return
    metadata = {
        "questionId": question.id,
        "requestId": question.request_id,
        "channelId": click.channel.id if click.channel else request.slack_channel_id,
    }
    api = await feature.api()
    await api.call(
        "views.open",
        trigger_id=click.trigger_id,
        view=blocks.answer_modal(question, metadata, feature.scrub),
    )


async def choose_option(feature: SlackFeature, click: BlockActions) -> None:
    """`clarification_option`: the button's value is the answer."""
    question_id = question_id_of_block(click.action.block_id)
    if question_id is None or not click.action.value:
        await tell(feature, click, STALE_BUTTON)
        return
    async with feature.services.session_factory.begin() as session:
        outcome = await feature.lifecycle.answer_question(
            session,
            question_id,
            click.action.value,
            _actor(click),
            metadata={"answeredVia": "option"},
            delivery=(CLICK_SOURCE, click.delivery_id),
        )
    if outcome.refusal:
        await tell(feature, click, outcome.refusal)


@dataclass(frozen=True)
class AnswerForm:
    question_id: int | None
    channel_id: str
    answer: str
    errors: dict[str, str]


def read_answer_modal(submission: ViewSubmission) -> AnswerForm:
    """The answer modal's input, validated (errors keyed by block id)."""
    metadata = json.loads(submission.view.private_metadata or "{}")
    answer = submission.view.state.text("answer", "answer")
    errors = {} if answer else {"answer": "Write an answer, or close this form."}
    return AnswerForm(
        question_id=_question_id(str(metadata.get("questionId", ""))),
        channel_id=str(metadata.get("channelId") or ""),
        answer=answer,
        errors=errors,
    )


async def submit_answer(
    feature: SlackFeature, submission: ViewSubmission, form: AnswerForm
) -> None:
    """The answer modal was submitted: record the answer unless someone was first."""
    outcome = Outcome(refusal=ALREADY_ANSWERED)
    if form.question_id is not None:
        async with feature.services.session_factory.begin() as session:
            outcome = await feature.lifecycle.answer_question(
                session,
                form.question_id,
                form.answer,
                _actor(submission),
                metadata={"answeredVia": "modal"},
                delivery=(VIEW_SOURCE, submission.view.id),
            )
    if outcome.refusal and form.channel_id:
        api = await feature.api()
        await api.ephemeral(form.channel_id, submission.user.id, ALREADY_ANSWERED)


async def run_answer_submission(feature: SlackFeature, body: dict[str, Any]) -> None:
    """The answer modal's interaction job."""
    submission = ViewSubmission.model_validate(body)
    await submit_answer(feature, submission, read_answer_modal(submission))


ClickFn = Callable[[SlackFeature, BlockActions], Coroutine[Any, Any, None]]

# The clicks that change a request run as jobs; "Answer" only opens a modal, which needs
# its trigger_id within 3 s, so it runs right after the ack instead.
DURABLE_CLICKS: dict[str, ClickFn] = {
    blocks.ACTION_RETRY: retry,
    blocks.ACTION_CANCEL: cancel,
    blocks.ACTION_OPTION: choose_option,
    blocks.ACTION_RAISE_BUDGET: raise_budget,
}


def _click_route(handle: ClickFn) -> interactions.Route:
    async def run_click(feature: SlackFeature, body: dict[str, Any]) -> None:
        await handle(feature, BlockActions.model_validate(body))

    return run_click


ROUTES: dict[str, interactions.Route] = {
    **{action_id: _click_route(handle) for action_id, handle in DURABLE_CLICKS.items()},
    blocks.ANSWER_MODAL: run_answer_submission,
}


def register(bolt: Any, feature: SlackFeature) -> None:
    """The buttons and the answer modal."""
    for action_id in DURABLE_CLICKS:
        bolt.action(action_id)(_durable_click_listener(feature, action_id))
    bolt.action(blocks.ACTION_ANSWER)(_click_listener(feature, open_answer_modal))

    async def answer_submitted(ack: Any, body: dict[str, Any]) -> None:
        submission = ViewSubmission.model_validate(body)
        form = read_answer_modal(submission)
        errors = form.errors
        if not errors:
            key = f"{VIEW_SOURCE}:{submission.view.id}"
            problem = await interactions.accept(feature, blocks.ANSWER_MODAL, body, key)
            # Shown in the form, which stays open with the answer still in it.
            errors = {"answer": problem} if problem else {}
        if errors:
            await ack(response_action="errors", errors=errors)
            return
        await ack()

    bolt.view(blocks.ANSWER_MODAL)(answer_submitted)


def _durable_click_listener(
    feature: SlackFeature, action_id: str
) -> Callable[..., Awaitable[None]]:
    async def clicked(ack: Any, body: dict[str, Any]) -> None:
        click = BlockActions.model_validate(body)
        key = f"{CLICK_SOURCE}:{click.delivery_id}"
        problem = await interactions.accept(feature, action_id, body, key)
        await ack()
        if problem:
            await feature.inflight.run(tell(feature, click, problem), body)

    clicked.__name__ = f"clicked_{action_id}"
    return clicked


def _click_listener(feature: SlackFeature, handle: ClickFn) -> Callable[..., Awaitable[None]]:
    async def clicked(ack: Any, body: dict[str, Any]) -> None:
        click = BlockActions.model_validate(body)
        await ack()
        await feature.inflight.run(handle(feature, click), body)

    clicked.__name__ = f"clicked_{getattr(handle, '__name__', 'button')}"
    return clicked
