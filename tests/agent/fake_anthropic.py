"""A small real Anthropic Messages API for driving the real Claude Code CLI in tests.

The agent loop's requests (streamed, with tools) get the scripted model responses in order,
as SSE: message_start, content_block_start/delta/stop per block, message_delta,
message_stop. Anything else the CLI asks (a HEAD of the base URL, count_tokens, a
non-streamed side request) gets a short sensible answer. Every request is recorded.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Block = dict[str, Any]


def text(value: str) -> Block:
    """A text block of a scripted response."""
    return {"type": "text", "text": value}


def tool_use(name: str, tool_input: dict[str, Any]) -> Block:
    """A tool_use block of a scripted response."""
    return {
        "type": "tool_use",
        "id": "toolu_" + uuid.uuid4().hex[:24],
        "name": name,
        "input": tool_input,
    }


@dataclass
class FakeAnthropic:
    """Serves `script`, one response per agent-loop request."""

    script: list[list[Block]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    _served: int = 0
    _runner: web.AppRunner | None = None

    @property
    def loop_requests(self) -> list[dict[str, Any]]:
        """Bodies of the agent loop's requests (the ones the script answered)."""
        return [r["body"] for r in self.requests if r.get("scripted")]

    async def start(self) -> FakeAnthropic:
        """Listen on a free port of 127.0.0.1."""
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw) if raw else None
        record: dict[str, Any] = {
            "method": request.method,
            "path": request.path,
            "body": body,
            "api_key": request.headers.get("x-api-key"),
        }
        self.requests.append(record)
        if request.method in ("HEAD", "GET") and request.path == "/":
            return web.Response(status=200)
        if request.path == "/v1/messages/count_tokens":
            return web.json_response({"input_tokens": 1000})
        if request.path != "/v1/messages" or not isinstance(body, dict):
            return web.json_response(
                {
                    "type": "error",
                    "error": {"type": "not_found_error", "message": f"no route {request.path}"},
                },
                status=404,
            )
        model = str(body.get("model") or "claude-test")
        agent_loop = bool(body.get("stream")) and bool(body.get("tools"))
        if agent_loop and self._served < len(self.script):
            blocks = self.script[self._served]
            self._served += 1
            record["scripted"] = True
        else:
            blocks = [text("OK.")]
        stop = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
        message = {
            "id": "msg_" + uuid.uuid4().hex[:24],
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": 1000,
                "output_tokens": 1,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }
        if not body.get("stream"):
            return web.json_response(
                {
                    **message,
                    "content": blocks,
                    "stop_reason": stop,
                    "usage": {"input_tokens": 1000, "output_tokens": 50},
                }
            )
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)

        async def event(name: str, data: dict[str, Any]) -> None:
            await response.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())

        await event("message_start", {"type": "message_start", "message": message})
        for index, block in enumerate(blocks):
            if block["type"] == "text":
                await event(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
                await event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "text_delta", "text": block["text"]},
                    },
                )
            else:
                await event(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {
                            "type": "tool_use",
                            "id": block["id"],
                            "name": block["name"],
                            "input": {},
                        },
                    },
                )
                await event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {
                            "type": "input_json_delta",
                            "partial_json": json.dumps(block["input"]),
                        },
                    },
                )
            await event("content_block_stop", {"type": "content_block_stop", "index": index})
        await event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": 50},
            },
        )
        await event("message_stop", {"type": "message_stop"})
        await response.write_eof()
        return response
