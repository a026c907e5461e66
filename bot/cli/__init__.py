"""The `clarity` command line. Parses arguments and runs; all wiring lives in build_* functions."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from bot.cli.errors import CliError

Handler = Callable[[argparse.Namespace], int]


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "serve",
        help="run the HTTP server (Slack, side-API, GitHub webhooks) and job workers",
        description=(
            "Run Clarity's HTTP server on HOST:PORT. Without DATABASE_URL an embedded "
            "PostgreSQL is started in a local data folder and migrated."
        ),
    )
    parser.add_argument("--host", default=None, help="listen address (default $HOST or 0.0.0.0)")
    parser.add_argument("--port", type=int, default=None, help="port (default $PORT or 3000)")
    parser.add_argument(
        "--no-workers", action="store_true", help="do not run job workers in this process"
    )
    parser.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    # Imported here: `clarity --help` and the db commands should not pay for the server.
    from bot.cli.serve import run_server

    return run_server(host=args.host, port=args.port, run_workers=not args.no_workers)


def _add_worker(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "worker",
        help="run job workers only (no HTTP server)",
        description="Run job workers against DATABASE_URL until SIGTERM/SIGINT.",
    )
    parser.add_argument("--concurrency", type=int, default=None, help="workers in this process")
    parser.add_argument("--once", action="store_true", help="run the jobs due now, then exit")
    parser.set_defaults(handler=_worker)


def _worker(args: argparse.Namespace) -> int:
    from bot.cli.serve import run_worker_process

    return run_worker_process(concurrency=args.concurrency, once=args.once)


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "demo",
        help="try Clarity in a browser: Slack simulator, local agent, demo repository",
        description=(
            "Try Clarity in a browser, with no Slack workspace, GitHub or API key. Starts an "
            "embedded PostgreSQL, the server with the Slack simulator at /_sim/, the local "
            "runner and a demo repository demo/hello, then prints the URL to open. Type "
            "`/clarity add a friendly greeting` in #clarity-demo: a scripted agent works for "
            "a few seconds, asks which greeting to use (answer with a button) and finishes; "
            "the thread links to the request's page, which shows the diff. With "
            "ANTHROPIC_API_KEY set and the claude CLI installed, Claude Code works on the demo "
            "repository instead. Everything lives in $CLARITY_DATA_DIR/demo, made afresh at "
            "every start. Honours HOST, PORT and CLARITY_DATA_DIR; Ctrl-C stops it and all "
            "it started."
        ),
    )
    parser.add_argument("--host", default=None, help="listen address (default $HOST or 0.0.0.0)")
    parser.add_argument("--port", type=int, default=None, help="port (default $PORT or 3000)")
    parser.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from bot.cli.demo import run_demo

    return run_demo(host=args.host, port=args.port)


def _add_db(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from bot.cli import db

    db.register(sub)


def _add_config(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from bot.cli import config

    config.register(sub)


REGISTRARS: Sequence[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = (
    _add_serve,
    _add_worker,
    _add_demo,
    _add_db,
    _add_config,
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, every subcommand registered by its feature module."""
    parser = argparse.ArgumentParser(
        prog="clarity",
        description="Clarity: hand work to an AI coding agent from Slack or GitHub.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in REGISTRARS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `clarity` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # Alembic narrates every connection at INFO; our commands say what matters.
        logging.getLogger("alembic").setLevel(logging.WARNING)
    handler: Handler = args.handler
    try:
        return handler(args)
    except CliError as exc:
        print(f"clarity: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
