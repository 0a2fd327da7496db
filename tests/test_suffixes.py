"""File-name suffixes have one home (crdr.suffixes): every module that lists images uses it, and
what decompress writes, compress and eval read."""

from __future__ import annotations

from PIL import Image

from crdr import cli, data, evaluate, serve, suffixes
from crdr.image_io import save_image_atomic


def test_every_module_listing_images_imports_the_one_list():
    assert cli.IMAGE_SUFFIXES is evaluate.IMAGE_SUFFIXES is serve.IMAGE_SUFFIXES is suffixes.IMAGE_SUFFIXES
    assert cli.CODED_SUFFIXES is suffixes.CODED_SUFFIXES
    assert data.TRAINING_SUFFIXES is suffixes.TRAINING_SUFFIXES <= suffixes.IMAGE_SUFFIXES


def test_writers_are_lossless_and_lossy_names_are_not_writers():
    assert not set(suffixes.LOSSLESS_WRITERS) & suffixes.LOSSY_SUFFIXES
    assert not suffixes.IMAGE_SUFFIXES & suffixes.CODED_SUFFIXES


def test_every_image_decompress_writes_is_an_input_of_compress_and_eval(tmp_path):
    written = []
    for suffix in suffixes.LOSSLESS_WRITERS:
        path = tmp_path / f"{suffix[1:]}{suffix}"
        save_image_atomic(Image.new("L", (4, 4), 99), path)  # grey: every writer stores it
        written.append(path)
    assert sorted(evaluate.list_images(tmp_path)) == sorted(written)
    jobs = cli.plan_jobs(
        [str(tmp_path)], output=None, out_dir=None, suffixes=cli.IMAGE_SUFFIXES, out_suffix=".crdr"
    )
    assert sorted(job.source for job in jobs) == sorted(written)


def test_lossless_writer_reads_the_suffix_in_any_case():
    assert suffixes.lossless_writer("a/B.TIFF") is suffixes.LOSSLESS_WRITERS[".tiff"]
    assert suffixes.suffix_of("archive.tar.PNG") == ".png" and suffixes.suffix_of("noext") == ""
