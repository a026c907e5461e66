"""The `clarity-agent` command: `run`, `credential get|store|erase`, `mcp`."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from agent.scrub import Scrubber


class _ScrubFilter(logging.Filter):
    """Masks secrets in every log line (the runner keeps the agent's output)."""

    def __init__(self, scrub: Scrubber) -> None:
        super().__init__()
        self.scrub = scrub

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.scrub(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = self.scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clarity-agent",
        description="Clarity's agent program: one run of a request inside a sandbox.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="do one run",
        description="Do one run. The job document comes from --job, else the CLARITY_JOB "
        "variable, else standard input.",
    )
    run.add_argument("--job", metavar="PATH", help="file holding the job document (JSON)")
    cred = sub.add_parser("credential", help="git credential helper (used by git itself)")
    cred.add_argument("action", choices=["get", "store", "erase"])
    mcp = sub.add_parser("mcp", help="serve the ask_user tool over MCP on stdio")
    mcp.add_argument(
        "--questions",
        metavar="PATH",
        help="file the questions are appended to (or CLARITY_QUESTIONS_FILE)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one subcommand; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "mcp":
        from agent import mcp

        return mcp.main(args.questions)
    if args.command == "credential":
        from agent import credential

        return credential.main(args.action, os.environ, sys.stdin, sys.stdout)
    return _run(args.job)


def _run(job_path: str | None) -> int:
    from agent import job as jobs
    from agent.run import Run, Settings

    env = dict(os.environ)
    scrub = Scrubber([env.get("ANTHROPIC_API_KEY")])
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("clarity-agent %(levelname)s %(message)s"))
    handler.addFilter(_ScrubFilter(scrub))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    try:
        job = jobs.load(job_path, env)
    except jobs.JobError as exc:
        logging.getLogger("agent").error("%s", exc)
        return 2
    scrub.add(job.api_token)
    run = Run(job, Settings.from_env(env, job))
    handler.filters.clear()
    handler.addFilter(_ScrubFilter(run.scrub))
    return run.execute()
