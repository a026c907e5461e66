"""A fake GitHub REST API: a real local HTTP server speaking the wire format PyGithub reads.

Serves installation tokens (checking the App's JWT against its public key), repositories,
issues and issue comments, and records every call. `fail_next(n, status)` scripts failures;
`lose_next(method, suffix)` lets a call take effect and then answers it with an error, as
when the connection drops after GitHub acted.
"""

from __future__ import annotations

import datetime as dt
import itertools
import secrets
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def make_app_key() -> tuple[str, str]:
    """A fresh RSA key pair for a test App: (private PEM, public PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@dataclass
class GitHubCall:
    method: str
    path: str
    body: Any
    authorization: str


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _since(request: web.Request) -> str:
    """The `since` filter (ISO 8601 in UTC, as GitHub takes it); "" when absent."""
    return request.query.get("since", "")


@dataclass
class FakeGitHub:
    app_id: str
    public_key: str
    installation_id: int = 4242
    token_ttl: dt.timedelta = dt.timedelta(hours=1)
    calls: list[GitHubCall] = field(default_factory=list)
    issues: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    comments: list[dict[str, Any]] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    # What each token was asked for (the access_tokens body): repositories and permissions.
    token_scopes: dict[str, dict[str, Any]] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(9_000_001))
    _numbers: dict[str, itertools.count[int]] = field(default_factory=dict)
    _failures: int = 0
    _failure_status: int = 500
    _lose: list[tuple[str, str, int]] = field(default_factory=list)
    _server: TestServer | None = None

    async def start(self) -> FakeGitHub:
        self.pulls: dict[tuple[str, int], dict[str, Any]] = {}
        app = web.Application(middlewares=[self._record])
        r = app.router
        r.add_post("/app/installations/{installation}/access_tokens", self._access_token)
        r.add_get("/repos/{owner}/{repo}", self._repo)
        r.add_post("/repos/{owner}/{repo}/issues", self._create_issue)
        r.add_get("/repos/{owner}/{repo}/issues", self._list_issues)
        r.add_get("/repos/{owner}/{repo}/issues/{number}", self._get_issue)
        r.add_post("/repos/{owner}/{repo}/issues/{number}/comments", self._create_comment)
        r.add_get("/repos/{owner}/{repo}/issues/{number}/comments", self._list_comments)
        r.add_get("/repos/{owner}/{repo}/pulls", self._list_pulls)
        r.add_post("/repos/{owner}/{repo}/pulls", self._create_pull)
        r.add_get("/repos/{owner}/{repo}/pulls/{number}", self._get_pull)
        r.add_patch("/repos/{owner}/{repo}/pulls/{number}", self._edit_pull)
        r.add_post("/graphql", self._graphql)
        self._server = TestServer(app)
        await self._server.start_server()
        return self

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return str(self._server.make_url("")).rstrip("/")

    def fail_next(self, count: int, status: int = 500) -> None:
        self._failures, self._failure_status = count, status

    def lose_next(self, method: str, suffix: str, status: int = 502) -> None:
        """The next `method` call to a path ending in `suffix` acts, then answers `status`."""
        self._lose.append((method, suffix, status))

    def calls_to(self, method: str, suffix: str) -> list[GitHubCall]:
        return [c for c in self.calls if c.method == method and c.path.endswith(suffix)]

    def comments_on(self, repo: str, number: int) -> list[dict[str, Any]]:
        url = f"{self.url}/repos/{repo}/issues/{number}"
        return [c for c in self.comments if c["issue_url"] == url]

    def add_issue(self, repo: str, number: int, title: str, **extra: Any) -> dict[str, Any]:
        """An issue that exists before the test (as if a person opened it)."""
        issue = self._issue(repo, number, title, extra.pop("body", None), **extra)
        self.issues[(repo, number)] = issue
        return issue

    # -- handlers -------------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        self.calls.append(
            GitHubCall(request.method, request.path, body, request.headers.get("Authorization", ""))
        )
        if self._failures > 0:
            self._failures -= 1
            return web.json_response({"message": "scripted failure"}, status=self._failure_status)
        response: web.StreamResponse = await handler(request)
        for lost in self._lose:
            method, suffix, status = lost
            if request.method == method and request.path.endswith(suffix):
                self._lose.remove(lost)
                return web.json_response({"message": "answer lost"}, status=status)
        return response

    def _check_token(self, request: web.Request) -> None:
        auth = request.headers.get("Authorization", "")
        token = auth.split(" ", 1)[-1]
        if token not in self.tokens:
            raise web.HTTPUnauthorized(
                text='{"message": "Bad credentials"}', content_type="application/json"
            )
        self.check_scope(token, request.match_info.get("repo"), write=request.method != "GET")

    def check_scope(self, token: str, repo: str | None, *, write: bool) -> None:
        """A token limited to some repositories or permissions acts only within them, as
        GitHub's do (404 for a repository it cannot see, 403 for a write it may not)."""
        scope = self.token_scopes.get(token)
        if scope is None:
            return
        allowed = scope.get("repositories")
        if repo is not None and allowed is not None and repo not in allowed:
            raise web.HTTPNotFound(text='{"message": "Not Found"}', content_type="application/json")
        if write and set(scope.get("permissions", {}).values()) <= {"read"}:
            raise web.HTTPForbidden(
                text='{"message": "Resource not accessible by integration"}',
                content_type="application/json",
            )

    async def _access_token(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        try:
            claims = jwt.decode(auth.split(" ", 1)[-1], self.public_key, algorithms=["RS256"])
        except jwt.PyJWTError as exc:
            return web.json_response({"message": f"bad JWT: {exc}"}, status=401)
        if str(claims.get("iss")) != str(self.app_id):
            return web.json_response({"message": "wrong app"}, status=401)
        if int(request.match_info["installation"]) != self.installation_id:
            return web.json_response({"message": "Not Found"}, status=404)
        asked = await request.json() if request.body_exists else None
        asked = asked if isinstance(asked, dict) else {}
        token = "ghs_" + secrets.token_hex(18)
        self.tokens.append(token)
        expires = (dt.datetime.now(dt.UTC) + self.token_ttl).replace(microsecond=0)
        answer: dict[str, Any] = {
            "token": token,
            "expires_at": expires.isoformat().replace("+00:00", "Z"),
            "permissions": asked.get("permissions") or {"issues": "write", "contents": "write"},
            "repository_selection": "all",
        }
        if asked.get("permissions") or asked.get("repositories") is not None:
            self.token_scopes[token] = {
                "permissions": dict(asked.get("permissions") or {}),
                "repositories": asked.get("repositories"),
            }
        if asked.get("repositories") is not None:
            answer["repository_selection"] = "selected"
            answer["repositories"] = [
                {"name": name, "full_name": f"octo-org/{name}"} for name in asked["repositories"]
            ]
        return web.json_response(answer, status=201)

    def _repo_json(self, full_name: str) -> dict[str, Any]:
        owner, name = full_name.split("/")
        return {
            "id": abs(hash(full_name)) % 10_000_000,
            "name": name,
            "full_name": full_name,
            "owner": {"login": owner, "id": 1, "type": "Organization"},
            "html_url": f"https://github.com/{full_name}",
            "url": f"{self.url}/repos/{full_name}",
            "default_branch": "main",
        }

    def _issue(
        self, repo: str, number: int, title: str, body: str | None, **extra: Any
    ) -> dict[str, Any]:
        return {
            "id": next(self._ids),
            "number": number,
            "title": title,
            "body": body,
            "state": "open",
            "html_url": f"https://github.com/{repo}/issues/{number}",
            "url": f"{self.url}/repos/{repo}/issues/{number}",
            "user": {"login": "clarity-app[bot]", "id": 77, "type": "Bot"},
            "labels": [],
            "author_association": "NONE",
            "created_at": _now(),
            "updated_at": _now(),
            **extra,
        }

    async def _repo(self, request: web.Request) -> web.Response:
        self._check_token(request)
        m = request.match_info
        return web.json_response(self._repo_json(f"{m['owner']}/{m['repo']}"))

    async def _create_issue(self, request: web.Request) -> web.Response:
        self._check_token(request)
        m = request.match_info
        repo = f"{m['owner']}/{m['repo']}"
        body = await request.json()
        number = next(self._numbers.setdefault(repo, itertools.count(1)))
        issue = self._issue(repo, number, body["title"], body.get("body"))
        issue["labels"] = [{"name": n} for n in body.get("labels", [])]
        self.issues[(repo, number)] = issue
        return web.json_response(issue, status=201)

    async def _get_issue(self, request: web.Request) -> web.Response:
        self._check_token(request)
        m = request.match_info
        issue = self.issues.get((f"{m['owner']}/{m['repo']}", int(m["number"])))
        if issue is None:
            return web.json_response({"message": "Not Found"}, status=404)
        return web.json_response(issue)

    async def _create_comment(self, request: web.Request) -> web.Response:
        self._check_token(request)
        m = request.match_info
        repo = f"{m['owner']}/{m['repo']}"
        body = await request.json()
        comment_id = next(self._ids)
        issue_url = f"{self.url}/repos/{repo}/issues/{m['number']}"
        comment = {
            "id": comment_id,
            "body": body["body"],
            "user": {"login": "clarity-app[bot]", "id": 77, "type": "Bot"},
            "html_url": f"https://github.com/{repo}/issues/{m['number']}#issuecomment-{comment_id}",
            "url": f"{self.url}/repos/{repo}/issues/comments/{comment_id}",
            "issue_url": issue_url,
            "created_at": _now(),
            "updated_at": _now(),
        }
        self.comments.append(comment)
        return web.json_response(comment, status=201)

    async def _list_issues(self, request: web.Request) -> web.Response:
        """Issues of a repository updated since `since`, newest first (one page)."""
        self._check_token(request)
        m = request.match_info
        repo = f"{m['owner']}/{m['repo']}"
        since = _since(request)
        found = [
            issue
            for (r, _), issue in self.issues.items()
            if r == repo and issue["updated_at"] >= since
        ]
        found.sort(key=lambda issue: issue["number"], reverse=True)
        return web.json_response(found)

    async def _list_comments(self, request: web.Request) -> web.Response:
        """An issue's comments updated since `since`, oldest first (one page)."""
        self._check_token(request)
        m = request.match_info
        since = _since(request)
        listed = [
            c
            for c in self.comments_on(f"{m['owner']}/{m['repo']}", int(m["number"]))
            if c["updated_at"] >= since
        ]
        return web.json_response(listed)

    # --- pull requests --------------------------------------------------------------

    def _pull_json(self, repo: str, pull: dict[str, Any]) -> dict[str, Any]:
        number = pull["number"]
        return {
            **pull,
            "id": 9000 + number,
            "node_id": f"PR_{repo}_{number}",
            "html_url": f"https://github.com/{repo}/pull/{number}",
            "url": f"{self.url}/repos/{repo}/pulls/{number}",
            "state": "open",
            "user": {"login": "clarity-app[bot]", "id": 77, "type": "Bot"},
            "head": {"ref": pull["head"], "label": f"{repo.split('/')[0]}:{pull['head']}"},
            "base": {"ref": pull["base"]},
        }

    async def _list_pulls(self, request: web.Request) -> web.Response:
        self._check_token(request)
        m = request.match_info
        repo = f"{m['owner']}/{m['repo']}"
        head = request.query.get("head", "")
        branch = head.split(":", 1)[-1]
        found = [
            self._pull_json(repo, pull)
            for (r, _), pull in sorted(self.pulls.items())
            if r == repo and (not head or pull["head"] == branch)
        ]
        return web.json_response(found)

    async def _create_pull(self, request: web.Request) -> web.Response:
        self._check_token(request)
        m = request.match_info
        repo = f"{m['owner']}/{m['repo']}"
        body = await request.json()
        if any(r == repo and p["head"] == body["head"] for (r, _), p in self.pulls.items()):
            return web.json_response({"message": "A pull request already exists"}, status=422)
        number = next(self._numbers.setdefault(repo, itertools.count(1)))
        pull = {
            "number": number,
            "title": body["title"],
            "body": body.get("body"),
            "head": body["head"],
            "base": body["base"],
            "draft": bool(body.get("draft", False)),
        }
        self.pulls[(repo, number)] = pull
        return web.json_response(self._pull_json(repo, pull), status=201)

    async def _get_pull(self, request: web.Request) -> web.Response:
        self._check_token(request)
        m = request.match_info
        repo = f"{m['owner']}/{m['repo']}"
        pull = self.pulls.get((repo, int(m["number"])))
        if pull is None:
            return web.json_response({"message": "Not Found"}, status=404)
        return web.json_response(self._pull_json(repo, pull))

    async def _edit_pull(self, request: web.Request) -> web.Response:
        self._check_token(request)
        m = request.match_info
        repo = f"{m['owner']}/{m['repo']}"
        pull = self.pulls.get((repo, int(m["number"])))
        if pull is None:
            return web.json_response({"message": "Not Found"}, status=404)
        pull.update({k: v for k, v in (await request.json()).items() if k in ("title", "body")})
        return web.json_response(self._pull_json(repo, pull))

    async def _graphql(self, request: web.Request) -> web.Response:
        """Only markPullRequestReadyForReview, as PyGithub sends it."""
        self._check_token(request)
        body = await request.json()
        node = str((body.get("variables") or {}).get("input", {}).get("pullRequestId", ""))
        for (repo, number), pull in self.pulls.items():
            if f"PR_{repo}_{number}" == node:
                pull["draft"] = False
                data = {"markPullRequestReadyForReview": {"pullRequest": {"isDraft": False}}}
                return web.json_response({"data": data})
        return web.json_response({"errors": [{"message": "not found"}]})
