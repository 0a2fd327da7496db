"""Tests of the atomic writes every crdr writer goes through, and of the folder listing."""

from __future__ import annotations

import json
import os
import stat

import pytest

from crdr import files
from crdr.errors import OutputExistsError
from crdr.files import atomic_path, find_files, write_atomic, write_json

# --------------------------------------------------------------------------------------------------
# Atomic writes (moved from tests/test_image_io.py)

def test_write_atomic_writes_and_refuses_existing_without_force(tmp_path):
    path = tmp_path / "out.crdr"
    write_atomic(path, b"first", force=False)
    assert path.read_bytes() == b"first"
    with pytest.raises(OutputExistsError, match="--force"):
        write_atomic(path, b"second", force=False)
    assert path.read_bytes() == b"first"
    write_atomic(path, b"second", force=True)
    assert path.read_bytes() == b"second"
    assert os.listdir(tmp_path) == ["out.crdr"]


def test_write_atomic_removes_temporary_and_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "out.crdr"
    path.write_bytes(b"old")

    def failing_replace(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, b"new", force=True)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.crdr"]


def test_write_atomic_without_hard_links_still_refuses_existing(tmp_path, monkeypatch):
    def no_links(source, target):
        raise OSError("links not supported")

    monkeypatch.setattr(files.os, "link", no_links)
    path = tmp_path / "out.bin"
    write_atomic(path, b"data", force=False)
    assert path.read_bytes() == b"data"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_write_atomic_file_permissions_follow_umask(tmp_path):
    umask = os.umask(0o022)
    try:
        write_atomic(tmp_path / "out", b"x", force=False)
    finally:
        os.umask(umask)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o644


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "plot.png"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_path(path) as temporary:
            temporary.write_bytes(b"half")
            raise RuntimeError("writer failed")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["plot.png"]


def test_the_temporary_is_beside_the_target_and_hidden(tmp_path):
    with atomic_path(tmp_path / "weights.safetensors") as temporary:
        assert temporary.parent == tmp_path and temporary.name.startswith(".weights.safetensors.")
        assert temporary.exists() and temporary.stat().st_size == 0
        temporary.write_bytes(b"w")
    assert (tmp_path / "weights.safetensors").read_bytes() == b"w"


def test_a_writer_that_makes_its_file_owner_only_still_gives_umask_permissions(tmp_path):
    # safetensors (and tempfile.mkstemp) create files 0600; what crdr writes is meant to be shared.
    umask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "shared.bin") as temporary:
            temporary.unlink()
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT, 0o600)
            os.close(descriptor)
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "shared.bin").stat().st_mode) == 0o644


def test_without_force_an_existing_target_is_refused_before_the_writer_runs(tmp_path):
    path = tmp_path / "out.crdr"
    path.write_bytes(b"kept")
    with pytest.raises(OutputExistsError, match="use --force"):
        with atomic_path(path, force=False):
            pytest.fail("the writer ran")
    with pytest.raises(OutputExistsError):
        files.refuse_existing(path)
    assert path.read_bytes() == b"kept" and os.listdir(tmp_path) == ["out.crdr"]


def test_write_json_is_indented_by_one_with_sorted_keys(tmp_path):
    write_json(tmp_path / "record.json", {"b": 1, "a": [2]})
    text = (tmp_path / "record.json").read_text()
    assert text == json.dumps({"a": [2], "b": 1}, indent=1) and json.loads(text) == {"a": [2], "b": 1}


# --------------------------------------------------------------------------------------------------
# Folder listing


def _touch(root, *names):
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")


def test_find_files_is_recursive_case_insensitive_and_sorted_by_relative_path(tmp_path):
    _touch(tmp_path, "b/z.PNG", "a.jpg", "b/a.WebP", "a b/c.png", "notes.txt", "c.JPEG", "dir.png/inside.txt")
    found = [p.relative_to(tmp_path).as_posix() for p in find_files(tmp_path, {".png", ".jpg", ".jpeg", ".webp"})]
    assert found == ["a b/c.png", "a.jpg", "b/a.WebP", "b/z.PNG", "c.JPEG"]


def test_find_files_descends_linked_folders_only_when_asked(tmp_path):
    _touch(tmp_path / "elsewhere", "x.png")
    root = tmp_path / "set"
    _touch(root, "own.png")
    (root / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "link.png").symlink_to(root / "own.png")
    (root / "dangling.png").symlink_to(tmp_path / "missing.png")
    names = lambda paths: [p.relative_to(root).as_posix() for p in paths]  # noqa: E731
    assert names(find_files(root, {".png"})) == ["link.png", "own.png"]
    assert names(find_files(root, {".png"}, follow_symlinks=True)) == ["link.png", "linked/x.png", "own.png"]
