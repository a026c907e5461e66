"""Saving and restoring the Claude session, so that an answer or a follow-up resumes it.

Claude Code keeps a session's transcript in
`$CLAUDE_CONFIG_DIR/projects/<cwd, every non-alphanumeric character replaced by '-'>/
<session id>.jsonl` (plus `<session id>/` beside it for subagent transcripts and large tool
results) and its task list in `tasks/<session id>/`. `--resume <session id>` needs the
transcript, found under the same working directory, and nothing else; the work folder's
path is the same for every run of a request, so the restored files land where the CLI
looks.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from collections.abc import Iterator

# Older CLIs keep the todo list here; the tasks folder replaced it.
_TODOS = "todos"
_TASKS = "tasks"
_PROJECTS = "projects"
_SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


class SessionError(Exception):
    """A saved session that cannot be restored."""


def project_key(cwd: str) -> str:
    """The folder name Claude Code files a working directory's sessions under."""
    return re.sub(r"[^A-Za-z0-9]", "-", cwd)


def valid_session_id(session_id: str) -> bool:
    """Whether a session id is safe to use in a path and on a command line."""
    return bool(_SESSION_ID.match(session_id))


def transcript_path(config_dir: str, cwd: str, session_id: str) -> str:
    """Where the CLI keeps the transcript of a session started in `cwd`."""
    return os.path.join(config_dir, _PROJECTS, project_key(cwd), f"{session_id}.jsonl")


def find_transcript(config_dir: str, session_id: str) -> str | None:
    """The transcript of a session, wherever its project folder is."""
    projects = os.path.join(config_dir, _PROJECTS)
    try:
        folders = sorted(os.listdir(projects))
    except OSError:
        return None
    for folder in folders:
        candidate = os.path.join(projects, folder, f"{session_id}.jsonl")
        if os.path.isfile(candidate):
            return candidate
    return None


def session_files(config_dir: str, session_id: str) -> Iterator[str]:
    """Paths (relative to the config folder) of everything that belongs to one session."""
    transcript = find_transcript(config_dir, session_id)
    if transcript is None:
        return
    yield os.path.relpath(transcript, config_dir)
    beside = transcript[: -len(".jsonl")]
    for extra in (beside, os.path.join(config_dir, _TASKS, session_id)):
        for root, _dirs, files in os.walk(extra):
            for name in sorted(files):
                if name != ".lock":
                    yield os.path.relpath(os.path.join(root, name), config_dir)
    todos = os.path.join(config_dir, _TODOS)
    if os.path.isdir(todos):
        for name in sorted(os.listdir(todos)):
            if name.startswith(session_id) and os.path.isfile(os.path.join(todos, name)):
                yield os.path.join(_TODOS, name)


def pack(config_dir: str, session_id: str, archive_path: str) -> bool:
    """Write the session's files as a gzip'd tar; False when the session has no transcript."""
    if not valid_session_id(session_id):
        return False
    files = list(session_files(config_dir, session_id))
    if not files:
        return False
    with tarfile.open(archive_path, "w:gz") as archive:
        for relative in files:
            archive.add(os.path.join(config_dir, relative), arcname=relative, recursive=False)
    return True


def unpack(archive: bytes, config_dir: str) -> None:
    """Restore a saved session's files into the config folder.

    Only regular files and folders under `projects/`, `tasks/` or `todos/` are written: the
    archive comes over the network and must not place anything else.
    """
    os.makedirs(config_dir, exist_ok=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            members = tar.getmembers()
            for member in members:
                _check(member)
            for member in members:
                target = os.path.join(config_dir, member.name)
                if member.isdir():
                    os.makedirs(target, exist_ok=True)
                    continue
                source = tar.extractfile(member)
                if source is None:
                    continue
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with source, open(target, "wb") as out:
                    out.write(source.read())
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise SessionError(f"the saved session cannot be unpacked: {exc}") from exc


def _check(member: tarfile.TarInfo) -> None:
    name = member.name
    parts = name.split("/")
    if (
        not (member.isfile() or member.isdir())
        or name.startswith("/")
        or ".." in parts
        or "\\" in name
        or parts[0] not in (_PROJECTS, _TASKS, _TODOS)
    ):
        raise SessionError(f"the saved session holds an entry it may not: {name!r}")
