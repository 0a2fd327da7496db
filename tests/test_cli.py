"""The command line, driven through ``main(argv)``: outputs, --force, errors as one line; no run
overwrites an input or lets two inputs share an output; directory runs resume and keep going;
stdin/stdout; output formats by suffix; arguments refused where they enter."""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

from crdr import bitstream, cli
from crdr.cli import main
from crdr.errors import ParameterError


@pytest.fixture()
def workspace(tmp_path, vectors_dir):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray((rng.random((20, 30, 3)) * 255).astype(np.uint8)).save(tmp_path / f"{name}.png")
    return tmp_path, str(vectors_dir / "official_tiny.pth.tar")


def test_compress_decompress_info_round_trip(workspace, capsys):
    folder, model = workspace
    assert main(["compress", str(folder / "a.png"), "-q", "1.5", "--model", model]) == 0
    assert (folder / "a.crdr").exists()
    assert main(["decompress", str(folder / "a.crdr"), "-o", str(folder / "out.png"), "--beta", "2", "--model", model]) == 0
    assert Image.open(folder / "out.png").size == (30, 20)
    capsys.readouterr()
    assert main(["info", str(folder / "a.crdr"), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["q"] == 1.5 and facts["width"] == 30 and facts["bytes"] == (folder / "a.crdr").stat().st_size


def test_existing_output_needs_force(workspace, capsys):
    folder, model = workspace
    (folder / "a.crdr").write_bytes(b"keep me")
    assert main(["compress", str(folder / "a.png"), "--model", model]) == 1
    assert (folder / "a.crdr").read_bytes() == b"keep me"
    assert "--force" in capsys.readouterr().err
    assert main(["compress", str(folder / "a.png"), "--model", model, "--force"]) == 0
    assert (folder / "a.crdr").read_bytes()[:4] == b"CRDR"


def test_directory_input_prints_summary(workspace, capsys):
    folder, model = workspace
    out = folder / "coded"
    assert main(["compress", str(folder), "--out-dir", str(out), "--model", model, "-q", "0"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.crdr", "b.crdr"]
    assert "2 files, mean" in capsys.readouterr().out


def test_corrupt_file_gives_one_line_error_and_no_output(workspace, capsys):
    folder, model = workspace
    main(["compress", str(folder / "a.png"), "--model", model])
    data = (folder / "a.crdr").read_bytes()
    (folder / "bad.crdr").write_bytes(data[: len(data) // 2])
    capsys.readouterr()
    assert main(["decompress", str(folder / "bad.crdr"), "-o", str(folder / "bad.png"), "--model", model]) == 1
    err = capsys.readouterr().err
    assert err.startswith("crdr: error:") and err.count("\n") == 1
    assert not (folder / "bad.png").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["compress", "missing.png"],
        ["compress", "{folder}/notimage.png", "--model", "{model}"],
        ["compress", "{folder}/a.png", "-q", "9", "--model", "{model}"],
        ["decompress", "{folder}/a.png", "--model", "{model}", "-o", "{folder}/x.png"],
        ["compress", "{folder}/a.png", "--model", "{folder}/nope.safetensors"],
        ["info", "{folder}/a.png"],
    ],
)
def test_bad_inputs_exit_nonzero_with_one_line(workspace, capsys, argv):
    folder, model = workspace
    (folder / "notimage.png").write_bytes(b"this is not an image")
    argv = [a.format(folder=folder, model=model) for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("crdr: error:") and err.count("\n") == 1


def test_official_format_round_trip(workspace):
    folder, model = workspace
    assert main(["compress", str(folder / "a.png"), "-q", "2.0", "--format", "official", "--model", model]) == 0
    assert main(["decompress", str(folder / "a.bin"), "-o", str(folder / "o.png"), "--model", model]) == 0
    assert Image.open(folder / "o.png").size == (30, 20)


def test_target_size_from_cli_stays_under_budget(workspace):
    folder, model = workspace
    assert main(["compress", str(folder / "a.png"), "--target-size", "900", "--model", model, "-o", str(folder / "t.crdr")]) == 0
    assert (folder / "t.crdr").stat().st_size <= 900


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("crdr: error:") and err.count("\n") == 1, err
    return err


def _container(path):
    """A well-formed .crdr file for runs that must stop before decoding (payloads are not decodable)."""
    header = bitstream.Header(
        width=30, height=20, q=1.0, model_id=bytes(8), colour=bitstream.Colour.RGB, has_alpha=False, tile_size=0
    )
    path.write_bytes(bitstream.pack(bitstream.Container.from_tiles(header, [(b"z" * 8, b"y" * 30)])))
    return path


def _refuse_coding(monkeypatch):
    """Make any coding fail loudly: a check that must come first can be seen to come first."""
    from crdr import codec

    def never(*args, **kwargs):
        raise AssertionError("coding started")

    for name in ("encode", "decompress", "compress_official", "get_model"):
        monkeypatch.setattr(codec, name, never)


# -- no command overwrites its input --------------------------------------------------------------


@pytest.mark.parametrize("link", ["same", "symlink", "hardlink"])
def test_compress_never_overwrites_its_input_even_with_force(workspace, capsys, monkeypatch, link):
    folder, model = workspace
    original = (folder / "a.png").read_bytes()
    target = folder / "a.png"
    if link == "symlink":
        (target := folder / "link.crdr").symlink_to(folder / "a.png")
    elif link == "hardlink":
        os.link(folder / "a.png", target := folder / "hard.crdr")
    _refuse_coding(monkeypatch)
    assert main(["compress", str(folder / "a.png"), "-o", str(target), "--force", "--model", model]) == 1
    assert "refusing to overwrite an input" in _error(capsys)
    assert (folder / "a.png").read_bytes() == original


@pytest.mark.parametrize("link", ["same", "symlink", "hardlink"])
def test_decompress_never_overwrites_its_input_even_with_force(workspace, capsys, monkeypatch, link):
    folder, model = workspace
    original = _container(folder / "a.crdr").read_bytes()
    target = folder / "a.crdr"
    if link == "symlink":
        (target := folder / "link.png").symlink_to(folder / "a.crdr")
    elif link == "hardlink":
        os.link(folder / "a.crdr", target := folder / "hard.png")
    _refuse_coding(monkeypatch)
    assert main(["decompress", str(folder / "a.crdr"), "-o", str(target), "--force", "--model", model]) == 1
    assert "refusing to overwrite an input" in _error(capsys)
    assert (folder / "a.crdr").read_bytes() == original


def test_directory_run_never_overwrites_an_input_in_the_output_folder(workspace, capsys, monkeypatch):
    folder, model = workspace
    (folder / "a.crdr").symlink_to(folder / "b.png")  # a.png's output is b.png under another name
    _refuse_coding(monkeypatch)
    assert main(["compress", str(folder / "a.png"), str(folder / "b.png"), "--force", "--model", model]) == 1
    assert "refusing to overwrite an input" in _error(capsys)


# -- directory runs: no two inputs share an output --------------------------------------------------


def test_directory_run_mirrors_sub_folders_under_out_dir(workspace, capsys):
    folder, model = workspace
    for sub in ("x", "y"):
        (folder / "tree" / sub).mkdir(parents=True)
        (folder / "tree" / sub / "p.png").write_bytes((folder / f"{'a' if sub == 'x' else 'b'}.png").read_bytes())
    out = folder / "coded"
    assert main(["compress", str(folder / "tree"), "--out-dir", str(out), "--model", model, "-q", "0"]) == 0
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.crdr")) == ["x/p.crdr", "y/p.crdr"]
    assert (out / "x" / "p.crdr").read_bytes() != (out / "y" / "p.crdr").read_bytes()
    assert "2 files, mean" in capsys.readouterr().out


@pytest.mark.parametrize("out_dir", [False, True])
def test_inputs_mapping_to_one_output_are_refused_before_anything_is_written(workspace, capsys, out_dir):
    folder, model = workspace
    Image.open(folder / "a.png").save(folder / "a.bmp")  # a.png and a.bmp both give a.crdr
    argv = ["compress", str(folder), "--model", model] + (["--out-dir", str(folder / "coded")] if out_dir else [])
    assert main(argv + ["--force"]) == 1
    err = _error(capsys)
    assert "a.png" in err and "a.bmp" in err and "a.crdr" in err
    assert not list(folder.rglob("*.crdr"))


def test_same_name_in_two_file_arguments_is_refused(workspace, capsys):
    folder, model = workspace
    (folder / "other").mkdir()
    (folder / "other" / "a.png").write_bytes((folder / "b.png").read_bytes())
    argv = ["compress", str(folder / "a.png"), str(folder / "other" / "a.png"), "--out-dir", str(folder / "o")]
    assert main(argv + ["--model", model]) == 1
    assert "2 inputs would be written to 1 output" in _error(capsys)
    assert not (folder / "o").exists()


# -- directory runs: --keep-going, --skip-existing ------------------------------------------------


def test_keep_going_codes_the_rest_and_lists_the_failures(workspace, capsys):
    folder, model = workspace
    (folder / "broken.png").write_bytes(b"not a png at all")
    out = folder / "coded"
    assert main(["compress", str(folder), "--out-dir", str(out), "--keep-going", "--model", model, "-q", "0"]) == 1
    assert sorted(p.name for p in out.iterdir()) == ["a.crdr", "b.crdr"]
    captured = capsys.readouterr()
    assert "2 files, mean" in captured.out
    lines = captured.err.splitlines()
    assert lines[0].startswith("crdr: error: ") and "broken.png" in lines[0]
    assert lines[-1] == f"crdr: error: 1 of 3 files failed: {folder / 'broken.png'}"


def test_without_keep_going_the_first_failure_stops_the_run_and_names_the_file(workspace, capsys):
    folder, model = workspace
    (folder / "0broken.png").write_bytes(b"not a png at all")
    assert main(["compress", str(folder), "--out-dir", str(folder / "coded"), "--model", model]) == 1
    assert "0broken.png" in _error(capsys)
    assert not list((folder / "coded").glob("*.crdr"))


def test_skip_existing_resumes_a_directory_run(workspace, capsys):
    folder, model = workspace
    out = folder / "coded"
    out.mkdir()
    (out / "a.crdr").write_bytes(b"from an earlier run")
    assert main(["compress", str(folder), "--out-dir", str(out), "--skip-existing", "--model", model, "-q", "0"]) == 0
    assert (out / "a.crdr").read_bytes() == b"from an earlier run"
    assert (out / "b.crdr").read_bytes()[:4] == b"CRDR"
    out_text = capsys.readouterr().out
    assert "1 files, mean" in out_text and "1 skipped" in out_text
    assert main(["compress", str(folder), "--out-dir", str(out), "--skip-existing", "--model", model]) == 0
    assert "0 files, " in capsys.readouterr().out


def test_skip_existing_summary_counts_the_skipped(workspace, capsys):
    folder, model = workspace
    (folder / "a.crdr").write_bytes(b"kept")
    assert main(["compress", str(folder / "a.png"), str(folder / "b.png"), "--skip-existing", "--model", model]) == 0
    assert "1 files, mean" in (out := capsys.readouterr().out) and "1 skipped" in out


def test_existing_outputs_are_all_counted_in_the_refusal(workspace, capsys, monkeypatch):
    folder, model = workspace
    (folder / "a.crdr").write_bytes(b"kept")
    (folder / "b.crdr").write_bytes(b"kept")
    _refuse_coding(monkeypatch)
    assert main(["compress", str(folder), "--model", model]) == 1
    err = _error(capsys)
    assert "and 1 more outputs" in err and "--skip-existing" in err


def test_force_and_skip_existing_together_are_an_argument_error(workspace, capsys):
    folder, model = workspace
    with pytest.raises(SystemExit) as raised:
        main(["compress", str(folder), "--force", "--skip-existing", "--model", model])
    assert raised.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


# -- stdin and stdout -----------------------------------------------------------------------------


def _stdin(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def test_compress_and_decompress_through_stdin_and_stdout(workspace, capsysbinary, monkeypatch):
    folder, model = workspace
    _stdin(monkeypatch, (folder / "a.png").read_bytes())
    assert main(["compress", "-", "-o", "-", "-q", "1", "--model", model]) == 0
    captured = capsysbinary.readouterr()
    assert captured.out[:4] == b"CRDR" and b"bytes" in captured.err  # the report goes to stderr
    _stdin(monkeypatch, captured.out)
    assert main(["decompress", "-", "-o", "-", "--model", model]) == 0
    captured = capsysbinary.readouterr()
    assert Image.open(io.BytesIO(captured.out)).size == (30, 20)
    assert b"30x20" in captured.err


def test_info_reads_stdin(workspace, capsys, monkeypatch):
    folder, model = workspace
    main(["compress", str(folder / "a.png"), "--model", model])
    _stdin(monkeypatch, (folder / "a.crdr").read_bytes())
    capsys.readouterr()
    assert main(["info", "-", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["width"] == 30


def test_stdin_needs_an_explicit_output(workspace, capsys, monkeypatch):
    folder, model = workspace
    _refuse_coding(monkeypatch)
    assert main(["compress", "-", "--model", model]) == 1
    assert "-o -" in _error(capsys)


def test_binary_output_is_refused_on_a_terminal(workspace, capsys, monkeypatch):
    folder, model = workspace
    _refuse_coding(monkeypatch)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert main(["compress", str(folder / "a.png"), "-o", "-", "--model", model]) == 1
    assert "terminal" in _error(capsys)


# -- output format by suffix ----------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _srgb_profile() -> bytes:
    """One sRGB profile (each new one carries its creation time)."""
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def test_icc_profile_survives_the_round_trip_unless_stripped(workspace, capsys):
    folder, model = workspace
    Image.open(folder / "a.png").save(folder / "icc.png", icc_profile=_srgb_profile())
    assert main(["compress", str(folder / "icc.png"), "-o", str(folder / "k.crdr"), "--model", model]) == 0
    assert main(["compress", str(folder / "icc.png"), "-o", str(folder / "s.crdr"), "--strip", "--model", model]) == 0
    assert "strip" in capsys.readouterr().err
    assert main(["decompress", str(folder / "k.crdr"), "-o", str(folder / "k.webp"), "--model", model]) == 0
    assert Image.open(folder / "k.webp").info.get("icc_profile") == _srgb_profile()
    capsys.readouterr()
    for name, kept in (("k.crdr", True), ("s.crdr", False)):
        assert main(["info", str(folder / name), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["icc_profile"] is kept


def test_decompress_writes_the_format_its_output_name_asks_for(workspace, capsys):
    folder, model = workspace
    main(["compress", str(folder / "a.png"), "--model", model])
    for name in ("o.png", "o.webp", "o.tif"):
        assert main(["decompress", str(folder / "a.crdr"), "-o", str(folder / name), "--model", model]) == 0
    images = [Image.open(folder / name) for name in ("o.png", "o.webp", "o.tif")]
    assert [image.format for image in images] == ["PNG", "WEBP", "TIFF"]
    assert all(np.array_equal(np.asarray(images[0]), np.asarray(image.convert("RGB"))) for image in images)


@pytest.mark.parametrize("name, message", [
    ("o.jpg", "refusing to write a lossy format"),
    ("o.avif", "refusing to write a lossy format"),
    ("o.xyz", "cannot tell a lossless image format"),
    ("noext", "cannot tell a lossless image format"),
])
def test_lossy_or_unknown_output_formats_are_refused_before_decoding(workspace, capsys, monkeypatch, name, message):
    folder, model = workspace
    _container(folder / "a.crdr")
    _refuse_coding(monkeypatch)
    assert main(["decompress", str(folder / "a.crdr"), "-o", str(folder / name), "--model", model]) == 1
    assert message in _error(capsys)
    assert not (folder / name).exists()


def test_compress_refuses_an_output_named_like_an_image(workspace, capsys, monkeypatch):
    folder, model = workspace
    _refuse_coding(monkeypatch)
    assert main(["compress", str(folder / "a.png"), "-o", str(folder / "out.webp"), "--model", model]) == 1
    assert "compress writes .crdr files" in _error(capsys)


# -- a bad output path is reported under the user's name, before coding ---------------------------


@pytest.mark.parametrize("command", ["compress", "decompress"])
def test_missing_output_directory_is_reported_before_coding(workspace, capsys, monkeypatch, command):
    folder, model = workspace
    _container(folder / "a.crdr")
    source, target = (folder / "a.png", "x.crdr") if command == "compress" else (folder / "a.crdr", "x.png")
    _refuse_coding(monkeypatch)
    assert main([command, str(source), "-o", str(folder / "nowhere" / target), "--model", model]) == 1
    err = _error(capsys)
    assert f"cannot write {folder / 'nowhere' / target}: no such directory" in err and ".tmp" not in err


def test_out_dir_below_a_file_is_reported_before_coding(workspace, capsys, monkeypatch):
    folder, model = workspace
    _refuse_coding(monkeypatch)
    assert main(["compress", str(folder / "a.png"), "--out-dir", str(folder / "b.png" / "sub"), "--model", model]) == 1
    assert "not a directory" in _error(capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_output_directory_is_reported_before_coding(workspace, capsys, monkeypatch):
    folder, model = workspace
    (folder / "locked").mkdir(mode=0o500)
    _refuse_coding(monkeypatch)
    assert main(["compress", str(folder / "a.png"), "-o", str(folder / "locked" / "x.crdr"), "--model", model]) == 1
    assert "permission denied" in _error(capsys)


def test_a_failed_write_names_the_users_path_not_the_temporary(workspace, capsys, monkeypatch):
    folder, model = workspace
    from crdr import files

    def full_disk(path, data, *, force):
        raise OSError(28, "No space left on device", str(folder / ".a.crdr.1234.tmp"))

    monkeypatch.setattr(files, "write_atomic", full_disk)
    assert main(["compress", str(folder / "a.png"), "--model", model]) == 1
    err = _error(capsys)
    assert f"cannot write {folder / 'a.crdr'}: No space left on device" in err and ".tmp" not in err


@pytest.mark.parametrize("error, line, status", [
    (ParameterError("q must be in [0, 4], got 9"), "crdr: error: q must be in [0, 4], got 9\n", 1),
    (FileNotFoundError(2, "No such file or directory", "x.png"), "crdr: error: No such file or directory: x.png\n", 1),
    (KeyboardInterrupt(), "crdr: interrupted\n", 130),
])
def test_a_handler_error_is_one_line_and_an_exit_status(capsys, error, line, status):
    def handler(args):
        raise error

    assert cli.run_handler(argparse.Namespace(handler=handler)) == status
    assert capsys.readouterr().err == line


# -- arguments are refused where they enter -------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["--target-psnr", "nan"], ["--target-psnr", "inf"], ["--target-psnr", "-3"], ["--target-psnr", "0"],
    ["--target-bpp", "nan"], ["--target-bpp", "0"], ["--target-bpp", "-0.1"], ["--target-size", "0"],
    ["-q", "nan"], ["-q", "inf"], ["--tile-size", "-64"], ["--max-pixels", "0"],
])
def test_non_finite_or_non_positive_numbers_are_argument_errors(workspace, capsys, argv):
    folder, model = workspace
    with pytest.raises(SystemExit) as raised:
        main(["compress", str(folder / "a.png"), "--model", model, *argv])
    assert raised.value.code == 2
    assert f"argument {argv[0]}" in capsys.readouterr().err.splitlines()[-1]


def test_a_too_small_target_bpp_names_the_smallest_file(workspace, capsys):
    folder, model = workspace
    assert main(["compress", str(folder / "a.png"), "--target-bpp", "0.001", "--model", model, "-o", str(folder / "t.crdr")]) == 1
    err = _error(capsys)
    assert "0.001 bpp" in err and "smallest file" in err and "bpp at q=0" in err
    assert not (folder / "t.crdr").exists()


def test_beta_nan_is_an_argument_error(capsys):
    with pytest.raises(SystemExit):
        main(["decompress", "a.crdr", "--beta", "nan"])
    assert "must be a finite number" in capsys.readouterr().err


# -- input format ---------------------------------------------------------------------------------


def test_info_and_decompress_read_the_input_as_format_says(workspace, capsys):
    folder, model = workspace
    assert main(["compress", str(folder / "a.png"), "--model", model, "-q", "1"]) == 0
    assert main(["compress", str(folder / "a.png"), "--model", model, "--format", "official", "-q", "1"]) == 0
    capsys.readouterr()
    for name, kind in (("a.crdr", "crdr"), ("a.bin", "official")):
        for chosen in ("auto", kind):
            assert main(["info", str(folder / name), "--json", "--format", chosen]) == 0
            assert json.loads(capsys.readouterr().out) == bitstream.describe((folder / name).read_bytes())
    assert main(["info", str(folder / "a.crdr"), "--format", "official"]) == 1
    assert "not an authors' multi-rate .bin file" in _error(capsys)
    assert main(["decompress", str(folder / "a.crdr"), "--format", "official", "-o", str(folder / "x.png"), "--model", model]) == 1
    assert "not an authors' multi-rate .bin file" in _error(capsys) and not (folder / "x.png").exists()
    assert main(["decompress", str(folder / "a.bin"), "--format", "crdr", "-o", str(folder / "x.png"), "--model", model]) == 1
    assert "bad magic" in _error(capsys) and not (folder / "x.png").exists()
    assert main(["decompress", str(folder / "a.bin"), "--format", "official", "-o", str(folder / "x.png"), "--model", model]) == 0


def test_the_cli_reads_headers_with_bitstream_describe_alone():
    assert not hasattr(cli, "describe")


# -- progress -------------------------------------------------------------------------------------


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def _tiled_photo(folder):
    rng = np.random.default_rng(3)
    path = folder / "wide.png"
    Image.fromarray((rng.random((70, 150, 3)) * 255).astype(np.uint8)).save(path)
    return path  # in 64-pixel tiles: 3 x 2


def _progress_line(label: str, total: int) -> str:
    steps = "".join(f"\r{label}: tile {done}/{total}" for done in range(1, total + 1))
    width = len(f"{label}: tile {total}/{total}")
    return steps + "\r" + " " * width + "\r"  # the line is erased at the end


def test_coding_a_tiled_image_shows_tile_progress_on_a_terminal(workspace, monkeypatch):
    folder, model = workspace
    source = _tiled_photo(folder)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["compress", str(source), "-q", "1", "--tile-size", "64", "--model", model]) == 0
    assert terminal.getvalue() == _progress_line(str(source), 6)
    terminal.truncate(0), terminal.seek(0)
    coded = folder / "wide.crdr"
    assert main(["decompress", str(coded), "-o", str(folder / "back.png"), "--model", model]) == 0
    assert terminal.getvalue() == _progress_line(str(coded), 6)


def test_no_progress_line_off_a_terminal_or_for_one_tile(workspace, monkeypatch, capsys):
    folder, model = workspace
    source = _tiled_photo(folder)
    assert main(["compress", str(source), "-q", "1", "--tile-size", "64", "--model", model]) == 0
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(sys, "stderr", terminal := _Terminal())
    assert main(["compress", str(folder / "a.png"), "-q", "1", "--model", model]) == 0
    assert terminal.getvalue() == ""


def test_a_failure_after_progress_leaves_a_clean_line_before_the_error(workspace, monkeypatch):
    folder, model = workspace
    source = _tiled_photo(folder)
    assert main(["compress", str(source), "-q", "1", "--tile-size", "64", "--model", str(model)]) == 0
    from crdr import files

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files, "write_atomic", full_disk)
    monkeypatch.setattr(sys, "stderr", terminal := _Terminal())
    assert main(["decompress", str(folder / "wide.crdr"), "-o", str(folder / "x.png"), "--model", model]) == 1
    progress, error = terminal.getvalue().rsplit("\r", 1)
    assert progress == _progress_line(str(folder / "wide.crdr"), 6)[:-1]
    assert error.startswith("crdr: error: cannot write") and error.count("\n") == 1


@pytest.mark.parametrize("command", ["compress", "decompress"])
def test_device_cuda_without_cuda_is_one_line_and_writes_nothing(workspace, capsys, monkeypatch, command):
    import torch

    folder, model = workspace
    assert main(["compress", str(folder / "b.png"), "--model", model]) == 0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    capsys.readouterr()
    if command == "compress":
        source, output = folder / "a.png", folder / "a.crdr"
    else:
        source, output = folder / "b.crdr", folder / "b2.png"
    assert main([command, str(source), "-o", str(output), "--model", model, "--device", "cuda"]) == 1
    err = capsys.readouterr().err
    assert err == "crdr: error: device 'cuda' is not available: torch sees no CUDA device (use cpu or auto)\n"
    assert not output.exists()


def test_device_cpu_and_auto_write_the_default_bytes(workspace, monkeypatch):
    import torch

    folder, model = workspace
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    outputs = {}
    for device in (None, "cpu", "auto"):
        target = folder / f"a-{device}.crdr"
        assert main(["compress", str(folder / "a.png"), "-o", str(target), "--model", model]
                    + ([] if device is None else ["--device", device])) == 0
        outputs[device] = target.read_bytes()
    assert outputs["cpu"] == outputs[None] == outputs["auto"]


def test_an_unknown_device_is_an_argument_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["compress", "a.png", "--device", "tpu"])
    assert exit_info.value.code == 2 and "invalid choice: 'tpu'" in capsys.readouterr().err
