"""The JSON Lines output file: written past the page cache where possible, the same bytes either way."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

import pytest

from worker.sinks import direct_file
from worker.sinks.direct_file import ALIGNMENT, STAGING_BYTES, DirectFile

SIZES = [
    0,
    1,
    ALIGNMENT - 1,
    ALIGNMENT,
    ALIGNMENT + 1,
    STAGING_BYTES - 1,
    STAGING_BYTES,
    STAGING_BYTES + 1,
    2 * STAGING_BYTES + 7,
]
MAX_CALLS = 100
"""Fake writes stop a test that would otherwise loop (a broken ``DirectFile`` could write until the disk is full)."""


def pattern(size: int) -> bytes:
    return bytes(range(251)) * (size // 251) + bytes(range(size % 251))


def write_in_pieces(path: Path, data: bytes, piece: int) -> DirectFile:
    out = DirectFile(path)
    for start in range(0, len(data), piece):
        out.write(memoryview(data)[start : start + piece])
    return out


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("piece", [1000, 3 << 20])
def test_the_file_holds_exactly_what_was_written(tmp_path: Path, size: int, piece: int) -> None:
    data = pattern(size)
    out = write_in_pieces(tmp_path / "f", data, piece)
    out.close_durably()
    assert (tmp_path / "f").read_bytes() == data


def test_whole_buffers_go_past_the_page_cache_where_the_filesystem_allows_it(tmp_path: Path) -> None:
    out = DirectFile(tmp_path / "f")
    flags = fcntl.fcntl(out.fileno(), fcntl.F_GETFL)
    out.write(pattern(STAGING_BYTES + 10))
    assert (tmp_path / "f").stat().st_size == STAGING_BYTES, "a whole staging buffer is written as soon as it is full"
    out.close_durably()
    if not flags & os.O_DIRECT:
        pytest.fail(f"{tmp_path} took no O_DIRECT; this test expects a filesystem that does (ext4, xfs, btrfs)")


def test_a_filesystem_refusing_direct_io_at_open_gets_buffered_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As older tmpfs and some network filesystems do: ``open`` with ``O_DIRECT`` fails with EINVAL."""
    real_open = os.open

    def refusing(path: str, flags: int, mode: int = 0o777) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", refusing)
    out = DirectFile(tmp_path / "f")
    assert not fcntl.fcntl(out.fileno(), fcntl.F_GETFL) & os.O_DIRECT
    data = pattern(STAGING_BYTES + 123)
    out.write(data)
    out.close_durably()
    assert (tmp_path / "f").read_bytes() == data


def test_a_direct_write_the_filesystem_refuses_is_written_again_buffered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = DirectFile(tmp_path / "f")
    data = pattern(3 * STAGING_BYTES + 5)
    refused = []
    real_write = out._raw.write

    def write(view: memoryview) -> int | None:
        if fcntl.fcntl(out.fileno(), fcntl.F_GETFL) & os.O_DIRECT and (tmp_path / "f").stat().st_size >= STAGING_BYTES:
            refused.append(len(view))
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(view)

    monkeypatch.setattr(out._raw, "write", write, raising=False)
    out.write(data)
    out.close_durably()
    assert (tmp_path / "f").read_bytes() == data
    assert refused == [STAGING_BYTES] or not direct_file._DIRECT


def test_a_short_write_goes_on_buffered_from_where_it_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = DirectFile(tmp_path / "f")
    real_write = out._raw.write
    calls = []

    def write(view: memoryview) -> int | None:
        calls.append(bool(fcntl.fcntl(out.fileno(), fcntl.F_GETFL) & os.O_DIRECT))
        assert len(calls) <= MAX_CALLS, "DirectFile keeps writing: a broken loop would fill the disk"
        return real_write(view[: ALIGNMENT * 3] if len(calls) == 1 else view)

    monkeypatch.setattr(out._raw, "write", write, raising=False)
    data = pattern(2 * STAGING_BYTES)
    out.write(data)
    out.close_durably()
    assert (tmp_path / "f").read_bytes() == data
    assert calls[1:] == [False] * (len(calls) - 1), "after a short write nothing goes direct"


def test_other_errors_are_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = DirectFile(tmp_path / "f")

    def full(view: memoryview) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(out._raw, "write", full, raising=False)
    with pytest.raises(OSError, match="No space left"):
        out.write(pattern(STAGING_BYTES))
    out.close()


def test_the_file_must_be_new(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"someone else's")
    with pytest.raises(FileExistsError):
        DirectFile(tmp_path / "f")
    assert (tmp_path / "f").read_bytes() == b"someone else's"


def test_once_buffered_an_invalid_argument_is_an_error_not_a_retry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only O_DIRECT's own refusal is retried, once; the same error from a buffered write is the disk's answer."""
    out = DirectFile(tmp_path / "f")
    calls = []

    def refuse(view: memoryview) -> int:
        calls.append(bool(fcntl.fcntl(out.fileno(), fcntl.F_GETFL) & os.O_DIRECT))
        assert len(calls) <= MAX_CALLS, "DirectFile retries without end"
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(out._raw, "write", refuse, raising=False)
    with pytest.raises(OSError, match="Invalid argument"):
        out.write(pattern(STAGING_BYTES))
    assert calls == [True, False] or not direct_file._DIRECT
    out.close()
