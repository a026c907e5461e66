"""`clarity-agent run`: one run of a request, from checkout to hand-over.

1. check out the request's branch in the work folder (clone or fetch);
2. restore the saved Claude session when the run continues one (an answer, a follow-up);
3. run Claude Code headless with the prompt and our instructions, posting what it does as
   agent_* messages;
4. end by what happened: a question (session saved, clarification_ask, exit), success
   (commits bundled and uploaded), the budget spent, a crash, or a cancel (SIGTERM).

The exit status is 0 whenever the run's outcome was reported, whatever it was; non-zero
only when reporting itself failed, so the runner knows to report for us.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from agent import credential, prompt, session
from agent.claude import ClaudeProcess, cli_argv, cli_env
from agent.git import DEFAULT_GIT_URL, Checkout, GitError, Identity, branch_name, remote_url
from agent.job import Job
from agent.mcp import read_questions
from agent.outbox import Outbox
from agent.scrub import Scrubber, cut, tail
from agent.sideapi import SideApi, SideApiError
from agent.stream import Translator

log = logging.getLogger(__name__)

DEFAULT_BUDGET_USD = "10"
# After the ask_user call was answered, how long the model has to end its turn by itself.
ASK_END_TURN_S = 5.0
# How long queued messages may take to go out at the end of a run (a cancel: less).
FLUSH_S = 30.0
CANCEL_FLUSH_S = 2.0
STDERR_TAIL = 4000
LINE_WAIT_S = 0.1

# Outcomes, as the bundle route's Clarity-Run-Outcome header names them.
COMPLETED, ASKED, CANCELLED, BUDGET = "completed", "asked", "cancelled", "budget"


class ReportError(Exception):
    """Reporting the run's outcome to the side-API failed."""


@dataclass(frozen=True)
class Settings:
    """What the sandbox's environment says about this run."""

    work_dir: str
    git_url: str
    cli: str
    budget_usd: str
    timeout_s: float | None
    config_dir: str
    identity: Identity
    env: Mapping[str, str]

    @classmethod
    def from_env(cls, env: Mapping[str, str], job: Job) -> Settings:
        """Read the settings, with DESIGN.md's defaults."""
        home = env.get("HOME") or os.path.expanduser("~")
        budget = env.get("CLARITY_BUDGET_USD") or DEFAULT_BUDGET_USD
        try:
            if float(budget) <= 0:
                raise ValueError
        except ValueError:
            log.warning(
                "CLARITY_BUDGET_USD=%r is not a positive amount; using %s",
                budget,
                DEFAULT_BUDGET_USD,
            )
            budget = DEFAULT_BUDGET_USD
        timeout = env.get("CLARITY_RUN_TIMEOUT_S")
        return cls(
            work_dir=os.path.abspath(
                env.get("CLARITY_WORK_DIR") or os.path.join(home, "clarity", job.request_id)
            ),
            git_url=env.get("GITHUB_GIT_URL") or DEFAULT_GIT_URL,
            cli=env.get("CLARITY_AGENT_CLI") or "claude",
            budget_usd=budget,
            timeout_s=float(timeout) if timeout and timeout.replace(".", "", 1).isdigit() else None,
            config_dir=os.path.abspath(
                env.get("CLAUDE_CONFIG_DIR") or os.path.join(home, ".claude")
            ),
            identity=Identity.from_env(env),
            env=dict(env),
        )


@dataclass
class Attempt:
    """What one CLI process did."""

    translator: Translator
    exit_code: int | None = None
    stopped_for: str | None = None
    stderr: str = ""
    wall_ms: int = 0
    resumed: bool = False


@dataclass
class Reports:
    """Whether every report that decides the run's outcome went through."""

    failures: list[str] = field(default_factory=list)

    def failed(self, what: str, exc: Exception) -> None:
        """Remember one failed report."""
        log.error("%s failed: %s", what, exc)
        self.failures.append(what)


class Run:
    """One run of one request."""

    def __init__(self, job: Job, settings: Settings, *, api: SideApi | None = None) -> None:
        self.job = job
        self.settings = settings
        self.scrub = Scrubber([job.api_token, settings.env.get("ANTHROPIC_API_KEY")])
        self.api = api or SideApi(job.api_url, job.api_token, job.request_id)
        # A cancel must be over in seconds: few, quick tries.
        self.quick_api = SideApi(job.api_url, job.api_token, job.request_id, timeout_s=3.0, tries=2)
        self.outbox = Outbox(self.api, self.scrub)
        self.branch = job.branch or branch_name(job.request_id, job.title or job.description)
        self.cancelled = threading.Event()
        self.reports = Reports()
        # Our own files (questions, session archive, bundle), outside the checkout.
        self.tmp = ""
        url = remote_url(settings.git_url, job.repo)
        self.checkout = Checkout(
            settings.work_dir,
            url,
            env=self._git_env(),
            credential_env=credential.helper_env(job.api_url, job.request_id, job.api_token, url),
            scrubber=self.scrub,
        )
        self._phase = "checkout"

    # --- the run -------------------------------------------------------------------------

    def execute(self) -> int:
        """Do the run; the exit status (0 when the outcome was reported)."""
        if self.job.kind == "cancel":
            # The runner stops a request's sandbox itself; a cancel has no work of its own.
            log.info("kind cancel: nothing to run")
            return 0
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        self.tmp = tempfile.mkdtemp(prefix="clarity-agent-")
        self.outbox.start()
        try:
            self._execute()
        except ReportError:
            pass
        except Exception as exc:
            # Say so at once (a CLI that cannot start, a bug of ours), rather than leave the
            # request to the runner's watchdog.
            log.exception("the run failed")
            with contextlib.suppress(ReportError):
                self._report_error("AGENT_FAILED", f"clarity-agent failed: {exc}")
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.outbox.close(CANCEL_FLUSH_S if self.cancelled.is_set() else FLUSH_S)
            shutil.rmtree(self.tmp, ignore_errors=True)
        if self.reports.failures:
            log.error("could not report: %s", ", ".join(self.reports.failures))
            return 1
        return 0

    def _execute(self) -> None:
        log.info(
            "request %s attempt %d (%s) on %s",
            self.job.request_id,
            self.job.attempt,
            self.job.kind,
            self.branch,
        )
        try:
            self.checkout.sync()
            self.checkout.checkout_branch(self.branch)
        except GitError as exc:
            if self.cancelled.is_set():
                log.info("cancelled while checking out: nothing to hand over")
                return
            self._report_error("CHECKOUT_FAILED", f"Could not check out {self.job.repo}: {exc}")
            return
        if self.cancelled.is_set():
            return
        self._phase = "claude"
        resume = (
            self._restore_session()
            if self.job.kind in ("clarification_answer", "follow_up")
            else None
        )
        attempt = self._run_claude(resume)
        if resume and attempt.stopped_for is None and _resume_failed(attempt.translator.result):
            # The CLI could not resume the session (lost or unreadable): start afresh.
            log.warning("could not resume session %s; starting a new one", resume)
            attempt = self._run_claude(None, cost_before=_cost(attempt))
        self._phase = "finish"
        self._finish(attempt)

    @property
    def questions_path(self) -> str:
        """Where the MCP server appends the model's questions."""
        return os.path.join(self.tmp, "questions.jsonl")

    def _run_claude(self, resume: str | None, cost_before: float = 0.0) -> Attempt:
        instructions = prompt.instructions(self.job, self.branch)
        text = prompt.build(self.job, self.branch, resumed=resume is not None)
        argv = cli_argv(
            self.settings.cli,
            instructions=instructions,
            budget_usd=self.settings.budget_usd,
            questions_path=self.questions_path,
            resume=resume,
        )
        env = cli_env(self.settings.env, config_dir=self.settings.config_dir)
        env.update(self.settings.identity.env())
        translator = Translator(file_change=self._file_change, cwd=self.checkout.path)
        attempt = Attempt(translator=translator, resumed=resume is not None)
        process = ClaudeProcess(argv, cwd=self.checkout.path, env=env, prompt=text)
        log.info("starting Claude Code%s", f" (resuming {resume})" if resume else "")
        process.start()
        deadline = self._deadline()
        asked_at: float | None = None
        while True:
            line = process.next_line(LINE_WAIT_S)
            if line is None:
                break
            if isinstance(line, bytes):
                self._on_line(line, translator, resuming=resume is not None)
            now = time.monotonic()
            if translator.ask_delivered and asked_at is None:
                asked_at = now
            if attempt.stopped_for is None:
                if self.cancelled.is_set():
                    attempt.stopped_for = "cancel"
                elif asked_at is not None and now - asked_at > ASK_END_TURN_S:
                    attempt.stopped_for = "ask"
                elif deadline is not None and now > deadline:
                    attempt.stopped_for = "timeout"
                if attempt.stopped_for:
                    log.info("stopping Claude Code (%s)", attempt.stopped_for)
                    process.stop()
            process.tick()
        attempt.exit_code = process.finish()
        if self.cancelled.is_set() and attempt.stopped_for is None:
            attempt.stopped_for = "cancel"
        attempt.stderr = process.stderr_tail()
        attempt.wall_ms = round((time.monotonic() - process.started) * 1000)
        if cost_before and translator.result is not None:
            translator.result["total_cost_usd"] = _cost(attempt) + cost_before
        log.info("Claude Code exited with %s", attempt.exit_code)
        return attempt

    def _on_line(self, line: bytes, translator: Translator, *, resuming: bool) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            log.info("claude: %s", self.scrub(cut(line.decode(errors="replace").rstrip(), 500)))
            return
        if not isinstance(event, dict):
            return
        try:
            activities = translator.feed(event)
        except Exception:  # one odd event must not end the run
            log.exception("could not read a %s event", event.get("type"))
            return
        if resuming and _resume_failed(event):
            return  # not the run's summary: a new session follows
        for activity in activities:
            self.outbox.put(activity)

    # --- the end of a run ------------------------------------------------------------------

    def _finish(self, attempt: Attempt) -> None:
        result = attempt.translator.result or {}
        if attempt.stopped_for == "cancel":
            self._finish_cancelled(attempt)
        elif attempt.translator.ask_delivered:
            self._finish_asked(attempt)
        elif attempt.stopped_for == "timeout":
            self._finish_timeout(attempt)
        elif result.get("subtype") == "error_max_budget_usd":
            self._finish_budget(attempt)
        elif result.get("subtype") == "success" and not result.get("is_error"):
            self._finish_completed(attempt)
        else:
            self._finish_failed(attempt)

    def _finish_completed(self, attempt: Attempt) -> None:
        summary = str((attempt.translator.result or {}).get("result") or "")
        self._flush()
        self._commit(commit_message(summary, self.job.title))
        self._report_cost(attempt)
        self._save_session(attempt)
        if not self._upload(COMPLETED):
            self._report_error(
                "NO_CHANGES",
                "The agent finished without changing anything."
                + (f"\n\n{cut(summary.strip(), 3000)}" if summary.strip() else ""),
            )

    def _finish_asked(self, attempt: Attempt) -> None:
        questions = read_questions(self.questions_path) or [
            q for q in attempt.translator.asked if isinstance(q.get("question"), str)
        ]
        self._flush()
        self._commit(f"Work in progress: {self.job.title or self.branch}"[:72])
        self._report_cost(attempt)
        self._save_session(attempt)
        self._upload(ASKED)
        content, options = _one_question(questions)
        try:
            self.api.post_message(
                "clarification_ask",
                self.scrub(content),
                {"options": [self.scrub(o) for o in options]},
            )
        except SideApiError as exc:
            self.reports.failed("the clarification_ask", exc)

    def _finish_budget(self, attempt: Attempt) -> None:
        self._flush()
        self._commit(f"Work so far: {self.job.title or self.branch}"[:72])
        self._report_cost(attempt)
        self._save_session(attempt)
        uploaded = self._upload(BUDGET)
        spent = _cost(attempt)
        self._report_error(
            "BUDGET_EXCEEDED",
            f"The agent stopped at the budget of {usd(float(self.settings.budget_usd))} after "
            f"spending {usd(spent)}." + (" The work so far is on the branch." if uploaded else ""),
        )

    def _finish_cancelled(self, attempt: Attempt) -> None:
        self.outbox.flush(CANCEL_FLUSH_S)
        self._commit(f"Work in progress: {self.job.title or self.branch}"[:72])
        self._report_cost(attempt, api=self.quick_api)
        self._upload(CANCELLED, api=self.quick_api)

    def _finish_timeout(self, attempt: Attempt) -> None:
        self.outbox.flush(CANCEL_FLUSH_S)
        self._commit(f"Work in progress: {self.job.title or self.branch}"[:72])
        self._report_cost(attempt)
        self._save_session(attempt)
        uploaded = self._upload(CANCELLED)
        self._report_error(
            "TIMEOUT",
            f"The agent was stopped after {self.settings.timeout_s or 0:.0f} s, its time limit."
            + (" The work so far is on the branch." if uploaded else ""),
        )

    def _finish_failed(self, attempt: Attempt) -> None:
        self._flush()
        self._report_cost(attempt)
        self._save_session(attempt)
        result = attempt.translator.result or {}
        detail = ""
        if isinstance(result.get("errors"), list) and result["errors"]:
            detail = "; ".join(map(str, result["errors"]))
        elif isinstance(result.get("result"), str):
            detail = result["result"]
        stderr = tail(attempt.stderr.strip(), STDERR_TAIL)
        message = (
            f"Claude Code stopped without finishing (exit status {attempt.exit_code}"
            + (f", {result.get('subtype')}" if result.get("subtype") else "")
            + ")."
            + (f"\n{detail.strip()}" if detail.strip() else "")
            + (f"\n{stderr}" if stderr else "")
        )
        self._report_error("AGENT_FAILED", message)

    # --- reports ---------------------------------------------------------------------------

    def _flush(self) -> None:
        if not self.outbox.flush(FLUSH_S):
            log.warning("some agent messages were still queued at the end of the run")

    def _commit(self, message: str) -> None:
        try:
            if self.checkout.commit_all(self.scrub(message)):
                log.info("committed the work tree")
        except GitError as exc:
            log.error("could not commit the work tree: %s", exc)

    def _report_cost(self, attempt: Attempt, *, api: SideApi | None = None) -> None:
        result = attempt.translator.result
        if result is None or not isinstance(result.get("total_cost_usd"), int | float):
            return
        duration = result.get("duration_ms")
        try:
            (api or self.api).patch_status(
                "processing",
                costUsd=round(float(result["total_cost_usd"]), 6),
                durationMs=duration if isinstance(duration, int) else attempt.wall_ms,
            )
        except SideApiError as exc:
            log.warning("could not report the run's cost: %s", exc)

    def _save_session(self, attempt: Attempt) -> None:
        session_id = attempt.translator.session_id
        if not session_id:
            return
        archive = os.path.join(self.tmp, "session.tar.gz")
        try:
            if not session.pack(self.settings.config_dir, session_id, archive):
                log.warning("no transcript of session %s to save", session_id)
                return
            self.api.put_session(session_id, archive)
            log.info("saved session %s", session_id)
        except (OSError, SideApiError) as exc:
            # The next run then starts a new session with the whole conversation.
            log.warning("could not save the session: %s", exc)

    def _upload(self, outcome: str, *, api: SideApi | None = None) -> bool:
        """Bundle and upload the branch's new commits; False when there are none."""
        bundle = os.path.join(self.tmp, "run.bundle")
        try:
            if not self.checkout.bundle(self.branch, bundle):
                log.info("no new commits on %s", self.branch)
                return False
        except GitError as exc:
            self.reports.failed("the bundle", exc)
            return False
        try:
            (api or self.api).put_bundle(self.job.attempt, bundle, outcome)
            log.info("uploaded the bundle of %s (%s)", self.branch, outcome)
        except SideApiError as exc:
            self.reports.failed("the bundle upload", exc)
        return True

    def _report_error(self, code: str, message: str) -> None:
        try:
            self.api.patch_status(
                "error", errorCode=code, errorMessage=self.scrub(cut(message, 8000))
            )
        except SideApiError as exc:
            self.reports.failed(f"the {code} report", exc)
            raise ReportError(code) from exc

    # --- helpers ---------------------------------------------------------------------------

    def _git_env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in self.settings.env.items()
            if k in ("HOME", "PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR", "USER")
            or k.startswith("LC_")
        }
        env.update(self.settings.identity.env())
        env.update(GIT_TERMINAL_PROMPT="0", GCM_INTERACTIVE="never")
        return env

    def _file_change(self, path: str) -> tuple[str, str, str] | None:
        try:
            return self.checkout.file_change(path)
        except GitError as exc:
            log.warning("no diff of %s: %s", path, exc)
            return None

    def _restore_session(self) -> str | None:
        try:
            saved = self.api.get_session()
        except SideApiError as exc:
            log.warning("could not fetch the saved session: %s", exc)
            return None
        if saved is None:
            log.info("no saved session: starting a new one")
            return None
        if not session.valid_session_id(saved.session_id):
            log.warning("the saved session's id is not usable")
            return None
        try:
            session.unpack(saved.archive, self.settings.config_dir)
        except session.SessionError as exc:
            log.warning("%s", exc)
            return None
        log.info("restored session %s", saved.session_id)
        return saved.session_id

    def _deadline(self) -> float | None:
        timeout = self.settings.timeout_s
        if not timeout:
            return None
        # Leave time to hand the work over before the runner's own limit.
        return time.monotonic() + max(timeout - min(60.0, timeout / 10), 1.0)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.cancelled.is_set():
            return
        log.info("received %s: stopping", signal.Signals(signum).name)
        self.cancelled.set()
        if self._phase == "checkout":
            self.checkout.abort()


def commit_message(summary: str, title: str) -> str:
    """A commit message from the agent's summary: its first line as the subject."""
    lines = [line.strip() for line in summary.strip().splitlines()]
    subject = next((line for line in lines if line), "")
    subject = re.sub(r"^[#>*\-\s]+|[*`_]+", "", subject).strip() or title.strip() or "Clarity"
    if len(subject) > 72:
        subject = subject[:71].rstrip() + "…"
    body = "\n".join(lines[1:]).strip()
    return subject + (f"\n\n{cut(body, 4000)}" if body else "")


def usd(amount: float) -> str:
    """US dollars for a person: cents, or more digits for amounts under a cent."""
    return f"${amount:,.2f}" if amount >= 0.01 or amount == 0 else f"${amount:.4g}"


def _one_question(questions: list[dict[str, Any]]) -> tuple[str, list[str]]:
    if not questions:
        return "The agent has a question but did not say what it is.", []
    if len(questions) == 1:
        return str(questions[0]["question"]), list(questions[0].get("options") or [])
    text = "\n\n".join(f"{i}. {q['question']}" for i, q in enumerate(questions, 1))
    return text, []


def _resume_failed(event: Mapping[str, Any] | None) -> bool:
    """Whether a result says the CLI could not resume (it did no turn at all)."""
    return (
        event is not None
        and event.get("type") == "result"
        and event.get("subtype") == "error_during_execution"
        and not event.get("num_turns")
    )


def _cost(attempt: Attempt) -> float:
    value = (attempt.translator.result or {}).get("total_cost_usd")
    return float(value) if isinstance(value, int | float) else 0.0
