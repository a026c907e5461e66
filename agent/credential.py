"""`clarity-agent credential get|store|erase`: the git credential helper of the checkout.

Git runs it only for the agent program's own network commands (clone, fetch), which name
it on their command line (`-c credential.helper=…`); it is never written to .git/config.
On `get` it asks the side-API for a read-only installation token and hands it to git. It
learns where to ask from variables the agent program sets for those git processes only;
the Claude CLI never sees them. It answers only for the request's remote (protocol and
host): a `url.<base>.insteadOf` the agent may have put in .git/config must not send the
token elsewhere. The token it fetched is also written to the pipe named by
CLARITY_CREDENTIAL_REPORT_FD, so the agent program can mask it in what it sends out.
"""

from __future__ import annotations

import contextlib
import os
import sys
import urllib.parse
from collections.abc import Mapping
from typing import IO

from agent.scrub import Scrubber
from agent.sideapi import SideApi, SideApiError

URL_ENV = "CLARITY_CREDENTIAL_URL"
REQUEST_ENV = "CLARITY_CREDENTIAL_REQUEST"
TOKEN_ENV = "CLARITY_CREDENTIAL_TOKEN"  # noqa: S105 - a variable name, not a secret
REPORT_FD_ENV = "CLARITY_CREDENTIAL_REPORT_FD"
REMOTE_ENV = "CLARITY_CREDENTIAL_REMOTE"
USERNAME = "x-access-token"


def helper_env(api_url: str, request_id: str, token: str, remote: str) -> dict[str, str]:
    """The variables a git process needs for this helper to answer for `remote` (a URL)."""
    parts = urllib.parse.urlsplit(remote)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return {
        URL_ENV: api_url,
        REQUEST_ENV: request_id,
        TOKEN_ENV: token,
        REMOTE_ENV: f"{parts.scheme}://{host}",
    }


def main(action: str, env: Mapping[str, str], stdin: IO[str], stdout: IO[str]) -> int:
    """Answer one git credential request (git-credential(1) protocol)."""
    # Git writes the request's attributes (protocol=…, host=…, path=…) and closes stdin.
    attributes = dict(line.split("=", 1) for line in stdin.read().splitlines() if "=" in line)
    if action != "get":
        # store/erase: the token lives only as long as git needs it; nothing to keep.
        return 0
    api_url, request_id, job_token = env.get(URL_ENV), env.get(REQUEST_ENV), env.get(TOKEN_ENV)
    if not (api_url and request_id and job_token):
        print("clarity-agent credential: not started by clarity-agent run", file=sys.stderr)
        return 1
    asked = f"{attributes.get('protocol', '')}://{attributes.get('host', '')}"
    if asked != env.get(REMOTE_ENV):
        print(f"clarity-agent credential: no token for {asked}", file=sys.stderr)
        return 1
    try:
        token = SideApi(api_url, job_token, request_id, tries=3).git_credentials()
    except SideApiError as exc:
        scrub = Scrubber([job_token])
        print(f"clarity-agent credential: {scrub(str(exc))}", file=sys.stderr)
        return 1
    _report(env.get(REPORT_FD_ENV), token)
    stdout.write(f"username={USERNAME}\npassword={token}\n")
    stdout.flush()
    return 0


def _report(fd: str | None, token: str) -> None:
    if not fd or not fd.isdigit():
        return
    # When the agent program is not listening (pipe closed) it still masks token shapes.
    with contextlib.suppress(OSError):
        os.write(int(fd), token.encode() + b"\n")
