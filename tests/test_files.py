"""read_user_text: special files never hang or read forever; every problem is one line."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import sim.files as files_mod
from sim.errors import InputError
from sim.files import read_user_text


class NamedError(InputError):
    pass


def test_reads_a_regular_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text("name = 'é'\n", encoding="utf-8")
    assert read_user_text(path, "scenario file", 100) == "name = 'é'\n"


def test_a_named_pipe_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.toml"
    os.mkfifo(fifo)  # no writer: a plain open() would block forever
    with pytest.raises(NamedError, match=r"pipe.toml: cannot read: a named pipe; a manifest must be a regular file"):
        read_user_text(fifo, "manifest", 100, NamedError)


def test_a_fifo_swapped_in_after_the_stat_neither_blocks_nor_is_read(tmp_path: Path, monkeypatch) -> None:
    fifo = tmp_path / "pipe.toml"
    os.mkfifo(fifo)
    real_stat = os.stat

    def looks_regular(path, *args, **kwargs):
        st = real_stat(path, *args, **kwargs)
        if Path(path) == fifo:
            return os.stat_result((stat.S_IFREG | 0o644, *tuple(st)[1:]))
        return st

    monkeypatch.setattr(files_mod.os, "stat", looks_regular)
    with pytest.raises(InputError, match="cannot read: a named pipe"):
        read_user_text(fifo, "thresholds file", 100)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_a_device_is_refused_before_reading() -> None:
    with pytest.raises(InputError, match="/dev/zero: cannot read: a character device"):
        read_user_text("/dev/zero", "manifest", 1000)


def test_a_directory_missing_file_and_size_cap(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read: a directory"):
        read_user_text(tmp_path, "journal", 100)
    with pytest.raises(InputError, match="missing.json: no such manifest$"):
        read_user_text(tmp_path / "missing.json", "manifest", 100)
    big = tmp_path / "big.json"
    big.write_bytes(b"x" * 101)
    with pytest.raises(InputError, match="larger than the limit of 100 bytes"):
        read_user_text(big, "manifest", 100)
    big.write_bytes(b"x" * 100)
    assert len(read_user_text(big, "manifest", 100)) == 100


def test_a_file_that_grows_after_the_stat_is_still_capped(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "growing"
    path.write_bytes(b"x" * 10)
    real_open = os.open

    def grow_then_open(p, *args, **kwargs):
        Path(p).write_bytes(b"x" * 5000)
        return real_open(p, *args, **kwargs)

    monkeypatch.setattr(files_mod.os, "open", grow_then_open)
    with pytest.raises(InputError, match="larger than the limit of 100 bytes"):
        read_user_text(path, "manifest", 100)


def test_non_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(InputError) as info:
        read_user_text(path, "manifest", 100)
    assert str(info.value) == f"{path}: cannot read: not UTF-8 text (invalid start byte at byte 7)"
