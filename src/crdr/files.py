"""Writing files atomically, and listing a folder's files by suffix.

Atomic: a reader, or a crash, sees the old file or the whole new one, never a part. Every file
crdr writes (coded files, decoded images, weights and their sidecars, checkpoints, run logs,
evaluation reports, feature caches, plots) goes through :func:`atomic_path`, which hands its
writer a temporary path beside the target and moves the finished file into place::

    with atomic_path("model.safetensors") as temporary:   # .model.safetensors.<random>.tmp
        save_file(state, str(temporary))                   # any writer that takes a path
    # fsynced, renamed over model.safetensors, folder fsynced; on an exception, removed

Listing: :func:`find_files` is the one walk over a folder for images or coded files (``crdr
compress DIR``, ``crdr decompress DIR``, ``crdr eval``, training folders); the suffix sets are
:mod:`crdr.suffixes`.

Free of torch, numpy and Pillow: the CLI imports this before it loads anything heavy.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any, Collection, Iterator

from crdr.errors import OutputExistsError
from crdr.suffixes import suffix_of

__all__ = ["atomic_path", "find_files", "refuse_existing", "write_atomic", "write_json"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, force: bool = True) -> Iterator[Path]:
    """A temporary path in ``path``'s folder to write the new file to; it becomes ``path`` when
    the block ends without an exception.

    The temporary (``.<name>.<random>.tmp``) exists, empty, when the block starts, with the
    permissions the umask gives (``0o666 & ~umask``; a writer that narrows them, as safetensors
    does to 0600, is undone). At the end it is fsynced and moved into place (``os.replace``;
    without ``force`` a hard link, which refuses an existing target atomically), and the folder
    is fsynced so that the rename itself survives a crash. The temporary is always removed.
    Raises OutputExistsError if ``path`` exists and not ``force``: before the block runs, and
    again at the move if the file appeared meanwhile.
    """
    path = os.fspath(path)
    if not force:
        refuse_existing(path)
    directory = os.path.dirname(os.path.abspath(path))
    temporary, mode = _create_temporary(directory, os.path.basename(path))
    try:
        yield Path(temporary)
        if os.stat(temporary).st_mode & 0o7777 != mode:
            os.chmod(temporary, mode)
        _fsync_file(temporary)
        if force:
            os.replace(temporary, path)
        else:
            _move_without_overwrite(temporary, path)
        _fsync_directory(directory)
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)


def write_atomic(path: str | os.PathLike, data: bytes, *, force: bool = True) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_path` (OutputExistsError if it exists and
    not ``force``)."""
    with atomic_path(path, force=force) as temporary:
        with open(temporary, "wb") as handle:
            handle.write(data)


def write_json(path: str | os.PathLike, value: Any) -> None:
    """Replace ``path`` by ``value`` as JSON (indented by one, keys sorted: the run records and
    weights sidecars), atomically."""
    write_atomic(path, json.dumps(value, indent=1, sort_keys=True).encode("utf-8"))


def refuse_existing(path: str | os.PathLike) -> None:
    """Raise OutputExistsError if ``path`` exists (a dangling link too): the check of a writer
    that may overwrite only with ``--force``, made before any costly work."""
    if os.path.lexists(path):
        raise _exists(path)


def _exists(path: str | os.PathLike) -> OutputExistsError:
    return OutputExistsError(f"{os.fspath(path)} exists (use --force to overwrite)")


def _create_temporary(directory: str, name: str) -> tuple[str, int]:
    """A new empty file beside ``name`` and the permissions the umask gave it."""
    # os.open with 0o666 lets the umask set the final permissions (mkstemp would force 0o600).
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        candidate = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            descriptor = os.open(candidate, flags, 0o666)
        except FileExistsError:
            continue
        try:
            return candidate, os.fstat(descriptor).st_mode & 0o7777
        finally:
            os.close(descriptor)
    raise OSError(f"cannot create a temporary file in {directory}")


def _move_without_overwrite(temporary: str, path: str) -> None:
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise _exists(path) from None
    except OSError:
        # Filesystems without hard links: fall back to check-then-replace (a small race).
        refuse_existing(path)
        os.replace(temporary, path)
        return
    os.unlink(temporary)


def _fsync_file(path: str) -> None:
    descriptor = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_directory(directory: str) -> None:
    # Makes the rename itself durable; a folder cannot be opened or fsynced on every platform, and
    # the file is whole without it.
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def find_files(root: str | os.PathLike, suffixes: Collection[str], *, follow_symlinks: bool = False) -> list[Path]:
    """The regular files under ``root`` (recursively) whose lower-case suffix is in ``suffixes``,
    sorted by their path relative to ``root`` (``as_posix``), so the order is the same everywhere.

    Symbolic links to files count as files; links to folders are descended only with
    ``follow_symlinks``. Unreadable sub-folders are skipped. ``root`` is not checked: callers
    say in their own words that it is missing.
    """
    root = Path(root)
    found = []
    for directory, _, names in os.walk(root, followlinks=follow_symlinks):
        for name in names:
            path = Path(directory) / name
            if suffix_of(name) in suffixes and path.is_file():
                found.append((path.relative_to(root).as_posix(), path))
    return [path for _, path in sorted(found)]
