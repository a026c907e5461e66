"""What the agent program tells Claude Code: the prompt of a run and our instructions."""

from __future__ import annotations

from agent.job import Entry, Job
from agent.mcp import QUALIFIED_TOOL_NAME

# What people say; everything else in the conversation is Clarity or the agent speaking.
PEOPLE = frozenset({"initial_request", "clarification_answer", "follow_up_request"})
# Where the agent last had its say: what people wrote after it is what the run answers.
AGENT_TURNS = frozenset({"clarification_ask", "pr_created", "pr_updated"})

INSTRUCTIONS = """\
You are Clarity's coding agent. Someone asked for this change in Slack or on GitHub, and
you work on it headless, in a sandbox: nobody watches the terminal and nobody can approve
anything while you work. People follow your progress as a summary; your final message
becomes the description of the pull request.

How to work here:
- The current directory is a git checkout of {repo} on the branch {branch}. Stay on this
  branch; do not create or switch branches.
- Make small, focused commits with clear messages as you go (git add, git commit). What
  you leave uncommitted is committed for you at the end.
- Do not push, open pull requests, or change git remotes or credentials: Clarity publishes
  your commits and opens or updates the pull request.
- Find the project's tests, linters and type checks, run the ones your change touches, and
  fix what you broke. Say in your summary what you ran and what it showed.
- When the request is ambiguous, or a decision belongs to the person who asked, do not
  guess: call {ask_tool} with one clear question (and short options when the likely answers
  are few), then end your turn at once. Their answer comes in a later message.
- Never write secrets (tokens, keys, passwords) into files, commits or messages.
- End with a short summary. Its first line is the title of the change (under 72
  characters); then what changed, and how you checked it.
"""

_LABELS = {
    "initial_request": "{who} asked",
    "clarification_ask": "You asked",
    "clarification_answer": "{who} answered",
    "follow_up_request": "{who} asked for more",
    "pr_created": "Clarity opened the pull request",
    "pr_updated": "Clarity updated the pull request",
    "error": "A run failed",
    "retry": "{who} asked to try again",
    "cancelled": "{who} cancelled the work",
}

_NEXT = {
    "initial": "Do the work this request describes.",
    "retry": (
        "An earlier run did not finish (see the conversation). Start again from the current "
        "state of the branch and do the work this request describes."
    ),
    "clarification_answer": "Continue the work with the answer above.",
    "follow_up": (
        "The pull request exists. Make the further changes the latest message asks for, on "
        "the same branch."
    ),
}


def instructions(job: Job, branch: str) -> str:
    """Our rules, appended to the CLI's own system prompt."""
    return INSTRUCTIONS.format(repo=job.repo, branch=branch, ask_tool=QUALIFIED_TOOL_NAME)


def full_prompt(job: Job, branch: str) -> str:
    """The whole request: title, description, and the conversation so far."""
    parts = [
        f"# {job.title.strip() or 'Request'}",
        f"Repository: {job.repo} (branch {branch}"
        + (f", pull request #{job.pr_number}" if job.pr_number else "")
        + (f", issue #{job.issue_number}" if job.issue_number else "")
        + ")",
        job.description.strip() or "(no description)",
    ]
    entries = [
        e
        for e in job.conversation
        if not (e.type == "initial_request" and e.content.strip() == job.description.strip())
    ]
    if entries:
        parts.append("## The conversation so far\n\n" + "\n\n".join(map(render, entries)))
    parts.append("## What to do now\n\n" + _NEXT.get(job.kind, _NEXT["initial"]))
    return "\n\n".join(parts)


def resume_prompt(job: Job) -> str | None:
    """Only what people said since the agent last spoke, for a resumed session.

    None when there is nothing new to say: the caller then sends the full prompt.
    """
    last_turn = max(
        (i for i, e in enumerate(job.conversation) if e.type in AGENT_TURNS), default=-1
    )
    news = [e for e in job.conversation[last_turn + 1 :] if e.type in PEOPLE and e.content.strip()]
    if not news:
        return None
    said = "\n\n".join(render(e) for e in news)
    return f"{said}\n\n{_NEXT.get(job.kind, 'Continue the work.')}"


def build(job: Job, branch: str, *, resumed: bool) -> str:
    """The prompt of this run."""
    if resumed and job.kind in ("clarification_answer", "follow_up"):
        short = resume_prompt(job)
        if short is not None:
            return short
    return full_prompt(job, branch)


def render(entry: Entry) -> str:
    """One conversation entry, as a person would read it."""
    who = entry.actor_name or ("Clarity" if entry.source == "system" else "Someone")
    label = _LABELS.get(entry.type, entry.type.replace("_", " ")).format(who=who)
    text = entry.content.strip()
    options = entry.metadata.get("options") if entry.type == "clarification_ask" else None
    if isinstance(options, list) and options:
        text += "\n" + "\n".join(f"- {o}" for o in options if isinstance(o, str))
    return f"**{label}:**\n{text}" if text else f"**{label}.**"
