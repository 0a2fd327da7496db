"""The web page in a real browser: Playwright drives Debian's headless Chromium.

Loads the page, moves the q and beta sliders and checks what a user would see: numbers and the
reconstruction change with either slider, and a beta change leaves the file size, its hash and the
encode count alone (the same bitstream is decoded again). Saves a screenshot of the page: to the
file named by ``CRDR_SCREENSHOT`` (``CRDR_SCREENSHOT=docs/serve.png`` regenerates the README's
picture), else to the temporary directory, so a plain test run leaves the work tree untouched.
Skips, with the reason, only when Chromium is missing (CI cannot always install it); a missing
Playwright, FastAPI or uvicorn (the 'test' extra) or test model (marked ``vectors``) fails.
"""

import hashlib
import io
import os
import tempfile
import shutil
import urllib.request
from pathlib import Path

import pytest
from conftest import require_vectors

REPO = Path(__file__).resolve().parents[1]
# The page is tested with the tiny random model (fast, always available); CRDR_SCREENSHOT_MODEL
# (e.g. "default") serves a real model instead, for the README's picture.
SCREENSHOT_MODEL = os.environ.get("CRDR_SCREENSHOT_MODEL")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SCREENSHOT = Path(os.environ.get("CRDR_SCREENSHOT") or Path(tempfile.gettempdir()) / "crdr-serve.png")
WAIT_MS = 60_000


pytestmark = [
    pytest.mark.skipif(
        not Path(CHROMIUM).is_file(), reason=f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    ),
    pytest.mark.vectors,
]


@pytest.fixture(scope="module")
def server_url():
    from crdr import serve

    import torch

    tiny_weights = None if SCREENSHOT_MODEL else require_vectors() / "official_tiny.pth.tar"

    # As `crdr serve` does: one torch thread per request (restored for the other test modules).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    if SCREENSHOT_MODEL:
        workbench = serve.Workbench(SCREENSHOT_MODEL, model_name=SCREENSHOT_MODEL)
    else:
        workbench = serve.Workbench(tiny_weights, model_name="official-tiny (random weights)")
    try:
        with serve.background_server(workbench) as url:
            yield url
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def page(server_url, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),  # a fresh user-data-dir
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1360, "height": 940}, device_scale_factor=1,
        )
        try:
            page = context.new_page()
            page.set_default_timeout(WAIT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.errors = errors
            yield page
        finally:
            context.close()


def _wait_idle(page) -> None:
    page.wait_for_function("() => document.body.dataset.busy === 'false'", timeout=WAIT_MS)


def _text(page, element_id: str) -> str:
    return page.locator(f"#{element_id}").inner_text().strip()


def _shown_image(page, server_url: str) -> tuple[str, str]:
    """(URL of the crdr reconstruction on the page, sha256 of its pixels file), once loaded."""
    page.wait_for_function(
        "() => { const i = document.getElementById('right-img'); return i.complete && i.naturalWidth > 0; }",
        timeout=WAIT_MS,
    )
    source = page.locator("#right-img").get_attribute("src")
    with urllib.request.urlopen(server_url.rstrip("/") + source, timeout=30) as response:
        return source, hashlib.sha256(response.read()).hexdigest()


def _save_screenshot(png: bytes) -> None:
    """The README's picture, reduced to 256 colours (the test model's noise does not compress)."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        reduced = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    partial = SCREENSHOT.with_suffix(".png.partial")
    reduced.save(partial, "PNG", optimize=True)
    partial.replace(SCREENSHOT)


def _numbers(page) -> dict[str, str]:
    ids = ["crdr-bytes", "crdr-bpp", "crdr-psnr", "crdr-stlpips", "stream-sha", "stream-encodes",
           "jpeg-420-bytes", "webp-bytes", "avif-bytes", "avif-psnr", "avif-stlpips"]
    return {element_id: _text(page, element_id) for element_id in ids}


def test_page_sliders_change_numbers_and_image_and_beta_keeps_the_file(page, server_url):
    page.goto(f"{server_url}?sample=kodim15-crop")
    _wait_idle(page)
    first = _numbers(page)
    assert first["crdr-bytes"] not in ("", "–") and first["crdr-stlpips"] not in ("", "–", "…")
    assert first["avif-bytes"] not in ("", "–"), "the baselines did not arrive"
    assert float(first["avif-psnr"]) > 0 and float(first["avif-stlpips"]) >= 0
    assert int(first["avif-bytes"].replace(",", "")) <= int(first["crdr-bytes"].replace(",", ""))
    first_image = _shown_image(page, server_url)

    page.locator("#q").fill("3.5")
    _wait_idle(page)
    after_q = _numbers(page)
    # (The test model has random weights: size changes with q but not monotonically.)
    assert after_q["crdr-bytes"] != first["crdr-bytes"]
    assert after_q["crdr-psnr"] != first["crdr-psnr"]
    assert after_q["stream-sha"] != first["stream-sha"]
    if not SCREENSHOT_MODEL:  # a real model's low-rate files can be below JPEG's smallest file
        assert after_q["jpeg-420-bytes"] != first["jpeg-420-bytes"]
    after_q_image = _shown_image(page, server_url)
    assert after_q_image[0] != first_image[0] and after_q_image[1] != first_image[1]
    assert page.locator("#q-value").inner_text() == "3.50"

    page.locator("#beta").fill("5.12")
    _wait_idle(page)
    after_beta = _numbers(page)
    # Realism is a decoder setting: same file, same hash, no new encode ...
    for unchanged in ("crdr-bytes", "crdr-bpp", "stream-sha", "stream-encodes", "jpeg-420-bytes", "avif-bytes"):
        assert after_beta[unchanged] == after_q[unchanged], unchanged
    # ... but a different reconstruction, with different distortion numbers.
    assert after_beta["crdr-psnr"] != after_q["crdr-psnr"]
    assert after_beta["crdr-stlpips"] != after_q["crdr-stlpips"]
    after_beta_image = _shown_image(page, server_url)
    assert after_beta_image[0] != after_q_image[0] and after_beta_image[1] != after_q_image[1]
    note = page.locator("#same-stream")
    assert note.is_visible() and "No re-encode" in note.inner_text()
    assert page.locator("#beta-value").inner_text() == "5.12"

    # Split and zoom: AVIF on the left of the split, zoom on and off; downloads name this file.
    page.select_option("#left-source", "avif")
    assert "avif" in _text(page, "left-tag")
    assert page.locator("#left-img").get_attribute("src").startswith("/api/baseline-file?")
    page.select_option("#zoom", "4")
    assert "zoomed" in page.locator("#compare").get_attribute("class")
    assert page.locator("#compare").evaluate("view => view.style.getPropertyValue('--zoom')") == "4"
    page.select_option("#zoom", "1")
    page.locator("#split").fill("45")
    assert page.locator("#compare").evaluate("view => view.style.getPropertyValue('--split')") == "45%"
    assert page.locator("#download-crdr").get_attribute("href").startswith("/api/bitstream.crdr?")
    assert "beta=5.12" in page.locator("#download-png").get_attribute("href")
    _save_screenshot(page.screenshot(full_page=True))
    assert not page.errors, page.errors


def test_page_explains_a_non_image_upload(page, server_url):
    page.goto(f"{server_url}?sample=kodim15-crop")
    _wait_idle(page)
    page.set_input_files("#upload", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a picture"}])
    _wait_idle(page)
    error = page.locator("#error")
    assert error.is_visible()
    assert "not an image" in error.inner_text()


def test_page_fit_size_box_moves_q_to_a_fitting_file(page, server_url):
    page.goto(f"{server_url}?sample=kodim15-crop")
    _wait_idle(page)
    # The test model has random weights, so size is not monotonic in q: aim above the current file.
    target = int(_text(page, "crdr-bytes").replace(",", "")) + 500
    typed = f"{target / 1000:.1f}"
    page.locator("#target-kb").fill(typed)
    page.locator("#target-form button").click()
    _wait_idle(page)
    assert not page.locator("#error").is_visible(), _text(page, "error")
    fitted = int(_text(page, "crdr-bytes").replace(",", ""))
    assert fitted <= round(float(typed) * 1000)
    assert float(page.input_value("#q")) == float(_text(page, "q-value"))  # the slider shows the q found
    assert int(_text(page, "avif-bytes").replace(",", "")) <= fitted

    page.locator("#target-kb").fill("0.1")
    page.locator("#target-form button").click()
    _wait_idle(page)
    assert page.locator("#error").is_visible() and "smallest" in _text(page, "error")
