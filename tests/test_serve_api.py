"""``crdr serve`` at the HTTP level: caching per q and per (q, beta), safety limits, the CLI entry.

Runs the FastAPI app in-process (Starlette's TestClient) with the authors' tiny test model on a
small image, so every test is quick; one test starts a real server on an ephemeral port.
"""

import argparse
import io
import json
import socket
import struct
import threading
import time
import urllib.request
import zlib

import numpy as np
import pytest
from conftest import VECTORS
from fastapi.testclient import TestClient  # the 'test' extra installs fastapi, uvicorn and httpx2
from PIL import Image

from crdr import baselines, cli, codec, serve

TINY_MODEL = VECTORS / "official_tiny.pth.tar"
MAX_UPLOAD = 200_000
MAX_PIXELS = 160 * 160


@pytest.fixture(scope="module")
def workbench(vectors_dir):
    import torch

    # As `crdr serve` does: one torch thread per request (restored for the other test modules).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield serve.Workbench(TINY_MODEL, model_name="official-tiny", max_upload_bytes=MAX_UPLOAD, max_pixels=MAX_PIXELS)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def client(workbench):
    return TestClient(serve.create_app(workbench), base_url="http://127.0.0.1")


def _png(width: int, height: int, seed: int = 0) -> bytes:
    """A small crop of a bundled sample (real photo content), as PNG bytes."""
    with Image.open(serve.SAMPLES_DIR / "kodim23.png") as image:
        crop = image.convert("RGB").crop((200 + seed, 100, 200 + seed + width, 100 + height))
    buffer = io.BytesIO()
    crop.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def image_id(client) -> str:
    response = client.post("/api/images/upload", content=_png(128, 96), headers={"X-Filename": "parrot%20crop.png"})
    assert response.status_code == 200, response.text
    info = response.json()
    assert (info["width"], info["height"], info["name"]) == (128, 96, "parrot crop.png")
    return info["id"]


def _decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


# -- what the page shows ---------------------------------------------------------------------------


def test_config_gives_slider_ranges_samples_codecs_and_limits(client):
    config = client.get("/api/config").json()
    assert config["model"]["max_q"] == 4.0 and config["model"]["max_beta"] == pytest.approx(5.12)
    assert [sample["name"] for sample in config["samples"]] == ["kodim03", "kodim15-crop", "kodim23"]
    assert {codec["name"] for codec in config["codecs"]} <= {"jpeg-420", "webp", "avif"}
    assert config["limits"] == {"max_upload_bytes": MAX_UPLOAD, "max_pixels": MAX_PIXELS}


def test_page_and_assets_are_served_from_the_package_without_external_urls(client):
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("app.js", "style.css"):
        asset = client.get(f"/static/{name}")
        assert asset.status_code == 200
        assert "http://" not in asset.text and "https://" not in asset.text and "//cdn" not in asset.text
    assert "https://" not in page.text and "http://" not in page.text


def test_beta_change_decodes_the_same_bitstream_without_encoding(client, image_id):
    encoded = client.post("/api/encode", params={"image": image_id, "q": 1.25}).json()
    faithful = client.get("/api/decode", params={"image": image_id, "q": 1.25, "beta": 0}).json()
    realistic = client.get("/api/decode", params={"image": image_id, "q": 1.25, "beta": 5.12}).json()
    for decoded in (faithful, realistic):
        assert (decoded["bytes"], decoded["sha256"], decoded["encodes"]) == (
            encoded["bytes"], encoded["sha256"], encoded["encodes"])
    assert realistic["decodes"] == faithful["decodes"] + 1
    assert realistic["entropy_decodes"] == faithful["entropy_decodes"]  # ŷ reused: only g_s ran
    assert realistic["entropy_seconds"] == 0.0
    assert realistic["psnr"] != faithful["psnr"]
    first = client.get(faithful["image_url"]).content
    second = client.get(realistic["image_url"]).content
    assert not np.array_equal(_decode_png(first), _decode_png(second))


def test_encode_runs_once_per_q_and_decode_once_per_q_and_beta(client, image_id):
    first = client.post("/api/encode", params={"image": image_id, "q": 2.5}).json()
    again = client.post("/api/encode", params={"image": image_id, "q": 2.5}).json()
    assert not first["cached"] and again["cached"]
    assert again["encodes"] == first["encodes"] and again["sha256"] == first["sha256"]
    other = client.post("/api/encode", params={"image": image_id, "q": 0.5}).json()
    assert other["encodes"] == first["encodes"] + 1 and other["sha256"] != first["sha256"]
    decoded = client.get("/api/decode", params={"image": image_id, "q": 2.5, "beta": 1}).json()
    repeated = client.get("/api/decode", params={"image": image_id, "q": 2.5, "beta": 1}).json()
    assert repeated["cached"] and repeated["decodes"] == decoded["decodes"]


def test_served_files_match_the_codec_and_download_names(client, image_id):
    params = {"image": image_id, "q": 1.75, "beta": 2.0}
    decoded = client.get("/api/decode", params=params).json()
    crdr_file = client.get(decoded["download_url"])
    assert crdr_file.headers["content-disposition"].endswith('.crdr"')
    assert len(crdr_file.content) == decoded["bytes"]
    png = client.get(decoded["png_download_url"])
    assert "attachment" in png.headers["content-disposition"]
    # The page's split decode (cached ŷ, then synthesis) gives the pixels `crdr decompress` gives.
    expected = np.asarray(codec.decompress(crdr_file.content, beta=2.0, model=str(TINY_MODEL)))
    assert np.array_equal(_decode_png(png.content), expected)


def test_psnr_and_st_lpips_describe_the_shown_reconstruction(client, workbench, image_id):
    params = {"image": image_id, "q": 1.25, "beta": 0}
    decoded = client.get("/api/decode", params=params).json()
    shown = _decode_png(client.get(decoded["image_url"]).content)
    original = workbench.image(image_id).source.rgb
    from crdr import metrics

    assert decoded["psnr"] == pytest.approx(metrics.psnr(original, shown), abs=1e-3)
    measured = client.get("/api/st-lpips", params=params).json()
    if measured["st_lpips"] is None:
        pytest.fail(measured["reason"])  # stlpips-pytorch and its weights are dependencies
    # A fresh metric, not the server's (whose backbone keeps the original's features): the number
    # must be the plain ST-LPIPS of this pair, the original and the shown image, in that order.
    network = metrics.StLpips()
    assert measured["st_lpips"] == pytest.approx(network(original, shown), abs=1e-3)
    assert measured["st_lpips"] != pytest.approx(network(original, original), abs=1e-3)
    # A baseline's ST-LPIPS is of its own decoded file.
    jpeg = client.get("/api/baseline", params={"image": image_id, "q": 1.25, "codec": "jpeg-420"}).json()
    jpeg_pixels = baselines.get_codec("jpeg-420").decode(client.get(jpeg["image_url"]).content)
    jpeg_measured = client.get(jpeg["st_lpips_url"]).json()
    assert jpeg_measured["codec"] == "jpeg-420"
    assert jpeg_measured["st_lpips"] == pytest.approx(network(original, jpeg_pixels), abs=1e-3)
    assert client.get("/api/st-lpips", params={"image": image_id, "q": 1.25}).status_code == 400


def test_jpeg_baseline_is_the_closest_size_not_above_the_crdr_file(client, image_id):
    result = client.get("/api/baseline", params={"image": image_id, "q": 2.5, "codec": "jpeg-420"}).json()
    budget = client.post("/api/encode", params={"image": image_id, "q": 2.5}).json()["bytes"]
    assert result["budget"] == budget and result["fits"]
    assert result["bytes"] <= budget
    jpeg = baselines.get_codec("jpeg-420")
    rgb = _decode_png(_png(128, 96))
    if result["quality"] < jpeg.max_quality:
        assert len(jpeg.encode(rgb, result["quality"] + 1)) > budget
    served = client.get(result["image_url"])
    assert served.headers["content-type"] == "image/jpeg" and len(served.content) == result["bytes"]
    assert result["psnr"] > 10


def test_target_size_search_fits_the_budget(client, image_id):
    smallest = client.post("/api/encode", params={"image": image_id, "q": 0}).json()["bytes"]
    target = smallest + 400
    result = client.post("/api/encode", params={"image": image_id, "target_bytes": target}).json()
    assert result["bytes"] <= target and 0 <= result["q"] <= 4
    assert result["q"] == pytest.approx(round(result["q"] / serve.Q_STEP) * serve.Q_STEP)  # a slider position
    again = client.post("/api/encode", params={"image": image_id, "q": result["q"]}).json()
    assert again["cached"] and again["sha256"] == result["sha256"]  # the probe is the slider's file
    too_small = client.post("/api/encode", params={"image": image_id, "target_bytes": smallest - 1})
    assert too_small.status_code == 400 and "smallest" in too_small.json()["detail"]


def test_beta_is_checked_and_rounded_once_for_the_cache_key_and_the_download_name(client, workbench, image_id):
    from crdr.errors import ParameterError

    assert workbench.checked_beta(1.234567) == 1.2346
    with pytest.raises(ParameterError, match="beta"):
        workbench.checked_beta(6)
    params = {"image": image_id, "q": 1.25, "beta": 0.50004, "download": 1}
    response = client.get("/api/recon.png", params=params)
    assert response.headers["content-disposition"].endswith('_q1.25_beta0.5.png"')


def test_out_of_range_or_missing_parameters_are_refused(client, image_id):
    for params in ({"q": 4.5}, {"q": -1}, {"q": "nan"}):
        response = client.post("/api/encode", params={"image": image_id, **params})
        assert response.status_code == 400 and "q" in response.json()["detail"]
    response = client.get("/api/decode", params={"image": image_id, "q": 1, "beta": 6})
    assert response.status_code == 400 and "beta" in response.json()["detail"]
    assert client.post("/api/encode", params={"image": image_id}).status_code == 400
    assert client.get("/api/baseline", params={"image": image_id, "q": 1, "codec": "gif"}).status_code == 404


# -- safety ----------------------------------------------------------------------------------------


def test_non_image_upload_gets_415_with_a_clear_message(client):
    response = client.post("/api/images/upload", content=b"%PDF-1.4 definitely not a picture")
    assert response.status_code == 415
    assert "not an image" in response.json()["detail"]
    assert client.post("/api/images/upload", content=b"").status_code == 400


def test_truncated_image_upload_is_refused_as_unreadable(client):
    response = client.post("/api/images/upload", content=_png(64, 64)[:300])
    assert response.status_code == 415 and "image" in response.json()["detail"]


def test_upload_over_the_byte_limit_is_refused(client):
    response = client.post("/api/images/upload", content=b"\x89PNG" + bytes(MAX_UPLOAD))
    assert response.status_code == 413 and "limit" in response.json()["detail"]



def test_upload_without_length_is_cut_off_while_streaming(workbench):
    """A chunked upload gets its 413 as soon as it passes the limit, before the body ends."""
    with serve.background_server(workbench) as url:
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            connection.sendall(
                f"POST /api/images/upload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Transfer-Encoding: chunked\r\nContent-Type: application/octet-stream\r\n\r\n".encode()
            )
            chunk = b"%x\r\n" % 10_000 + bytes(10_000) + b"\r\n"
            for _ in range(MAX_UPLOAD // 10_000 + 2):  # just past the limit; the body never ends
                connection.sendall(chunk)
            reply = connection.recv(4096).decode("latin-1")  # times out if the server waits for the end
    assert reply.startswith("HTTP/1.1 413"), reply[:200]


def test_upload_over_the_pixel_limit_is_refused_before_decoding(client):
    big = io.BytesIO()
    Image.new("RGB", (200, 200)).save(big, "PNG")  # 40 000 pixels > 160 x 160, a few hundred bytes
    response = client.post("/api/images/upload", content=big.getvalue())
    assert response.status_code == 413 and "pixels" in response.json()["detail"]


def _png_declaring(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header says ``width`` x ``height`` (IHDR rewritten, its CRC fixed)."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])  # IHDR data: bytes 16..28
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def test_an_upload_above_pillows_own_limit_is_refused_with_its_declared_size(client):
    response = client.post("/api/images/upload", content=_png_declaring(100_000, 100_000))
    detail = response.json()["detail"]
    assert response.status_code == 413
    assert detail == (
        f"the image has 100000x100000 = 10000000000 pixels, above this server's limit of {MAX_PIXELS}"
    )


def test_path_like_names_never_reach_the_file_system(client):
    response = client.post("/api/images/sample", params={"name": "../../etc/passwd"})
    assert response.status_code == 404 and "root:" not in response.text
    assert client.get("/api/sample-thumbnail.jpg", params={"name": "../samples/kodim23"}).status_code == 404
    assert client.get("/api/original.png", params={"image": "../../etc/passwd"}).status_code == 404
    for path in ("/static/..%2Fserve.py", "/static/../serve.py", "/static/%2e%2e/serve.py", "/static/README.md"):
        assert client.get(path).status_code == 404, path
    assert client.post("/api/images/sample", params={"name": "kodim15-crop"}).status_code == 200


def test_requests_naming_a_foreign_host_are_refused(workbench):
    foreign = TestClient(serve.create_app(workbench), base_url="http://attacker.example")
    assert foreign.get("/api/config").status_code == 400


def test_compute_once_runs_each_key_once_under_concurrent_requests():
    cache = serve.ComputeOnce(capacity=2)
    calls = []

    def slow() -> str:
        calls.append(1)
        time.sleep(0.05)
        return "value"

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get("key", slow))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and sorted(cached for _, cached in results) == [False] + [True] * 5
    cache.put("b", 1)
    cache.put("c", 2)
    assert cache.peek("key") is None  # least recently used goes first


# -- command line and a real server ----------------------------------------------------------------


def test_serve_command_binds_to_loopback_by_default():
    parser = argparse.ArgumentParser()
    serve.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve"])
    assert (args.host, args.port, args.handler) == ("127.0.0.1", 8000, serve.run_serve)
    assert "crdr.serve" in cli.EXTRA_COMMANDS


def test_serve_command_reports_a_busy_port_in_one_line(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status = cli.main(["serve", "--port", str(port), "--model", str(TINY_MODEL)])
    assert status == 1
    error = capsys.readouterr().err
    assert error.startswith("crdr: error: cannot listen on 127.0.0.1:") and error.count("\n") == 1


def test_real_server_answers_on_an_ephemeral_loopback_port(workbench):
    with serve.background_server(workbench) as url:
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "api/config", timeout=10) as response:
            assert json.load(response)["model"]["name"] == "official-tiny"


def test_an_unavailable_device_is_refused_when_the_workbench_starts(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    from crdr.errors import ParameterError

    with pytest.raises(ParameterError, match="device 'cuda' is not available"):
        serve.Workbench(TINY_MODEL, device="cuda")
