"""Tar archives from git for the Docker engine: a build context, a delta layer, a single file.

Everything comes from the commit's tree, never the work dir: modes and symlinks from git, times
from the commit, so one commit always gives the same bytes (and Docker's cache can trust them).
"""

from __future__ import annotations

import io
import tarfile
from pathlib import PurePosixPath

import git


def context_tar(commit: git.Commit, prefix: str, revision_file: str, only: list[str] | None = None,
                strip_directories: bool = False) -> io.BytesIO:
    """A tar of the commit's tree under `prefix` (or just the `only` paths), plus REVISION.

    Modes and symlinks come from git; times are the commit's, so the same commit always gives
    the same bytes. With `strip_directories`, no directory entries are written (the delta layer
    then holds only the changed files).
    """
    tree = commit.tree / prefix if prefix else commit.tree
    mtime = commit.committed_date
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        blobs = (tree / p for p in only) if only is not None else (
            item for item in tree.traverse() if item.type == "blob")
        written_dirs: set[str] = set()
        for blob in sorted(blobs, key=lambda b: b.path):
            relative = PurePosixPath(blob.path).relative_to(prefix).as_posix() if prefix else blob.path
            if not strip_directories:
                _add_parent_dirs(tar, relative, mtime, written_dirs)
            _add_blob(tar, relative, blob, mtime)
        tar.addfile(_file_info(revision_file, len(commit.hexsha) + 1, 0o644, mtime),
                    io.BytesIO(f"{commit.hexsha}\n".encode()))
    buffer.seek(0)
    return buffer


def _add_blob(tar: tarfile.TarFile, name: str, blob: git.Blob, mtime: int) -> None:
    data = blob.data_stream.read()
    if blob.mode == 0o120000:  # a symlink: the blob holds its target
        info = tarfile.TarInfo(name)
        info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, data.decode(), 0o777, mtime
        tar.addfile(info)
        return
    tar.addfile(_file_info(name, len(data), 0o755 if blob.mode & 0o111 else 0o644, mtime), io.BytesIO(data))


def _add_parent_dirs(tar: tarfile.TarFile, name: str, mtime: int, written: set[str]) -> None:
    for parent in reversed(PurePosixPath(name).parents[:-1]):
        if str(parent) not in written:
            info = tarfile.TarInfo(str(parent))
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, mtime
            tar.addfile(info)
            written.add(str(parent))


def _file_info(name: str, size: int, mode: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, mode, mtime
    return info


def single_file_tar(name: str, data: bytes, mode: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.addfile(_file_info(name, len(data), mode, 0), io.BytesIO(data))
    return buffer.getvalue()
