"""write_atomic: the one way bgci replaces a file others may be reading."""

from __future__ import annotations

from pathlib import Path

import pytest

from bgci.files import write_atomic


def test_text_and_bytes_replace_the_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "live.conf"
    write_atomic(target, "old\n")
    write_atomic(target, "néw\n")
    assert target.read_bytes() == "néw\n".encode()
    write_atomic(target, b"<xml/>")
    assert target.read_bytes() == b"<xml/>"
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in tmp_path.iterdir()] == ["live.conf"]  # no temp file left behind


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    write_atomic(target, "{}\n")
    with pytest.raises(TypeError):
        write_atomic(target, 42)  # type: ignore[arg-type]
    assert target.read_text() == "{}\n"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
