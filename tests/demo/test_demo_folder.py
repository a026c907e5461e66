"""The demo's own folder, `<data>/demo`: fresh at every start, one demo at a time.

Its Slack workspace lives in memory, so a demo that kept its database would show requests
whose threads are gone; and `clarity serve` on the same data folder must not see the demo's
requests, repository or runs.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.cli.demo import fresh_demo_folder
from bot.cli.errors import CliError
from storage.embedded import EmbeddedPostgres
from tests.pg import make_server_dir


@pytest.fixture
def data() -> Iterator[Path]:
    folder = make_server_dir()  # as root, the embedded PostgreSQL's own user passes through
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_each_demo_starts_afresh_beside_the_servers_data(data: Path) -> None:
    (data / "pgdata").mkdir()  # `clarity serve`'s, untouched
    with fresh_demo_folder(data) as folder:
        assert folder == data / "demo"
        (folder / "git").mkdir()
        (folder / "git" / "left-over").write_text("from the last demo")
    with fresh_demo_folder(data) as folder:
        assert list(folder.iterdir()) == []
    assert (data / "pgdata").is_dir()


def test_a_second_demo_on_the_same_folder_is_refused(data: Path) -> None:
    with fresh_demo_folder(data) as folder:
        (folder / "in-use").write_text("")
        second = fresh_demo_folder(data)
        with pytest.raises(CliError, match="another clarity demo is running"):
            second.__enter__()
        assert (folder / "in-use").exists()


def test_a_database_left_running_by_a_killed_demo_is_stopped(data: Path) -> None:
    orphan = EmbeddedPostgres(data / "demo" / "pgdata")
    orphan.start()
    try:
        with fresh_demo_folder(data) as folder:
            assert not EmbeddedPostgres(folder / "pgdata").is_running()
            assert not (folder / "pgdata").exists()
    finally:
        orphan.stop()
