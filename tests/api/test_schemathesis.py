"""Property-based checks of the side-API against its own OpenAPI document (schemathesis).

The real server on a real database, driven by `st run` over HTTP through every phase
(examples, coverage, fuzzing, stateful), bounded in examples: no 500, every status code
and constraint the routes have is in the document, and what the document allows is taken.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path

from fakes.harness import API_TOKEN, Harness, running_clarity

ST = Path(shutil.which("st") or Path(os.sys.executable).parent / "st")  # type: ignore[attr-defined]


def _keep(report: str) -> None:
    """The report, for a person to read (test-output/ is not committed)."""
    Path("test-output").mkdir(exist_ok=True)
    Path("test-output/schemathesis.txt").write_text(report)


async def test_side_api_conforms_to_its_openapi_document(db_url: str) -> None:
    # Everything configured (a 503 `not_configured` is documented, and is a 5xx all the same).
    async with running_clarity(db_url, anthropic_api_key="sk-ant-api-test-key") as harness:
        await _run_schemathesis(harness)


async def _run_schemathesis(harness: Harness) -> None:
    # A request to find, so routes with a {requestId} are reached beyond their 404s.
    status, _ = await harness.api(
        "POST", "/requests", {"repo": "octo/widgets", "description": "Add a dark mode"}
    )
    assert status == 201
    url = str(harness.client.make_url("/api/openapi.json"))
    process = await asyncio.create_subprocess_exec(
        str(ST),
        "run",
        url,
        "--header",
        f"Authorization: Bearer {API_TOKEN}",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--checks",
        "all",
        # Auth is checked by its own tests; these routes answer 401 to a missing token by design.
        "--exclude-checks",
        "ignored_auth",
        "--max-examples",
        "20",
        "--seed",
        "20261205",
        "--request-timeout",
        "20",
        "--no-color",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
        # Its cache of found failures goes to a scratch folder, not the repository.
        cwd=tempfile.mkdtemp(prefix="clarity-schemathesis-"),
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=400)
    report = out.decode()
    await asyncio.to_thread(_keep, report)
    assert process.returncode == 0, report[-6000:]
    assert "No issues found" in report or "passed" in report, report[-3000:]
