"""Buttons (`retry_request`, `cancel_request`, `answer_clarification`, `clarification_option`)
and the answer modal.

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

from bot.dispatch import DispatchKind, enqueue_dispatch
from bot.events import request_changed
from bot.slack import blocks, interactions
from bot.slack.answers import Answered, answer_question, open_question
from bot.slack.feature import SlackFeature
from bot.slack.payloads import BlockActions, ViewSubmission
from storage.deliveries import claim_delivery, delivery_seen
from storage.lifecycle import FINAL
from storage.models import MessageSource, MessageType, RequestMessage, RequestStatus
from storage.repositories import FeatureRequestRepository, RequestMessagesRepository
from storage.repositories.request_messages import Actor

UNKNOWN_REQUEST = "That request no longer exists."
STALE_BUTTON = "This button is out of date."
ALREADY_ANSWERED = "This question has already been answered."
# Delivery-id sources: a click's effect, and an answer form's, is claimed under these.
CLICK_SOURCE = "slack_action"
VIEW_SOURCE = "slack_view"


def _actor(click: BlockActions | ViewSubmission) -> Actor:
    return Actor(click.user.id, click.user.display)


async def tell(feature: SlackFeature, click: BlockActions, text: str) -> None:
    """Answer the person who clicked, privately."""
    api = await feature.api()
    if click.response_url:
        await api.respond(click.response_url, text)
    elif click.channel is not None:
        await api.ephemeral(click.channel.id, click.user.id, text)


async def retry(feature: SlackFeature, click: BlockActions) -> None:
    """`retry_request`: only a failed request is retried; a second click finds it running."""
    services = feature.services
    request_id = click.action.value or ""
    refusal: str | None = None
    async with services.session_factory.begin() as session:
        requests = FeatureRequestRepository(session)
        request = await requests.find_by_request_id(request_id, lock=True)
        if await delivery_seen(session, CLICK_SOURCE, click.delivery_id):
            return  # this very click took effect already (delivered twice, or run again)
        if request is None:
            refusal = UNKNOWN_REQUEST
        elif request.status != RequestStatus.ERROR:
            refusal = f"Nothing to retry: the request is {blocks.status_label(request.status)}."
        else:
            await claim_delivery(session, CLICK_SOURCE, click.delivery_id)
            request = await requests.record_retry(request_id)
            message = await RequestMessagesRepository(session).add_retry(
                request_id, request.retry_count or 1, _actor(click)
            )
            await enqueue_dispatch(
                session,
                request_id,
                DispatchKind.RETRY,
                max_attempts=services.settings.clarity_job_max_attempts,
            )
            await request_changed(services, session, request, message=message, status_changed=True)
    if refusal:
        await tell(feature, click, refusal)


async def cancel(feature: SlackFeature, click: BlockActions) -> None:
    """`cancel_request`: by the requester or an admin, while the request is not finished."""
    services = feature.services
    request_id = click.action.value or ""
    refusal: str | None = None
    async with services.session_factory.begin() as session:
        requests = FeatureRequestRepository(session)
        request = await requests.find_by_request_id(request_id, lock=True)
        if await delivery_seen(session, CLICK_SOURCE, click.delivery_id):
            return  # this very click took effect already (delivered twice, or run again)
        if request is None:
            refusal = UNKNOWN_REQUEST
        elif click.user.id != request.slack_user_id and click.user.id not in feature.admins:
            refusal = "Only the person who filed this request (or a Clarity admin) can cancel it."
        elif request.status in FINAL:
            refusal = f"This request is already {blocks.status_label(request.status)}."
        else:
            await claim_delivery(session, CLICK_SOURCE, click.delivery_id)
            request = await requests.update_status(request_id, RequestStatus.CANCELLED)
            actor = _actor(click)
            message = await RequestMessagesRepository(session).add_message(
                request_id,
                MessageType.CANCELLED,
                MessageSource.SLACK,
                f"Cancelled by {actor.name}",
                actor_id=actor.id,
                actor_name=actor.name,
            )
            await enqueue_dispatch(
                session,
                request_id,
                DispatchKind.CANCEL,
                max_attempts=services.settings.clarity_job_max_attempts,
            )
            await request_changed(services, session, request, message=message, status_changed=True)
    if refusal:
        await tell(feature, click, refusal)


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
        question = await session.get(RequestMessage, question_id)
        request = (
            await FeatureRequestRepository(session).find_by_request_id(question.request_id)
            if question is not None
            else None
        )
        latest = await open_question(session, question.request_id) if question else None
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
    answered = await answer_question(
        feature.services,
        question_id,
        click.action.value,
        _actor(click),
        via="option",
        delivery=(CLICK_SOURCE, click.delivery_id),
    )
    if answered is Answered.TOO_LATE:
        await tell(feature, click, ALREADY_ANSWERED)


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
    answered = Answered.TOO_LATE
    if form.question_id is not None:
        answered = await answer_question(
            feature.services,
            form.question_id,
            form.answer,
            _actor(submission),
            via="modal",
            delivery=(VIEW_SOURCE, submission.view.id),
        )
    if answered is Answered.TOO_LATE and form.channel_id:
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
    """The four buttons and the answer modal."""
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
