"""The real thing: ``resnetkit serve`` as a uvicorn process, driven by headless Chromium, then SIGTERM.

One server process for the module (starting one costs seconds): the browser test uses it, the SIGTERM
test ends it. The browser is Debian's ``chromium`` driven by Playwright (``pip install playwright``,
no browser download); without either, the browser test skips and says which is missing.
"""

from __future__ import annotations

import http.client
import io
import signal
import socket
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
from serve_process import NAMES, running_server  # noqa: E402

CHROMIUM = "/usr/bin/chromium"


def _cifar_like_png(path: Path) -> Path:
    """A 32x32 picture with some structure (a red square on blue), the size of a CIFAR image."""
    pixels = np.zeros((32, 32, 3), dtype=np.uint8)
    pixels[..., 2] = 180
    pixels[8:24, 10:22] = (220, 40, 30)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    with running_server(folder, "--max-wait-ms", "0") as (process, port):
        yield process, port, folder


def test_browser_uploads_an_image_and_sees_label_and_bars(server, tmp_path):
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                                         "(pip install playwright; no browser download needed)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    _, port, _ = server
    image = _cifar_like_png(tmp_path / "square.png")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 700})
            page.goto(f"http://127.0.0.1:{port}/")
            playwright_api.expect(page.locator("#model")).to_contain_text("resnet20, 10 classes")
            page.set_input_files("#files", str(image))
            bars = page.locator(".result .bar")
            playwright_api.expect(bars).to_have_count(5)
            caption = page.locator(".result figcaption").inner_text()
            assert caption.split()[0] in NAMES and caption.endswith("%")
            labels = page.locator(".result .bar .label").all_inner_texts()
            assert len(labels) == 5 and set(labels) <= set(NAMES)
            widths = [float(w.rstrip("%")) for w in
                      page.locator(".result .bar .fill").evaluate_all("els => els.map(e => e.style.width)")]
            assert widths == sorted(widths, reverse=True) and 0 < widths[0] <= 100
            # The 32x32 image is shown enlarged with sharp pixels, and the caption sits below it.
            picture = page.locator(".result img").first
            assert picture.evaluate("img => img.naturalWidth") == 32
            playwright_api.expect(picture).to_have_class("pixelated")
            box, caption_box = picture.bounding_box(), page.locator(".result figcaption").bounding_box()
            assert box["width"] >= 160 and caption_box["y"] >= box["y"] + box["height"]
            page.get_by_role("button", name="Show Grad-CAM").click()
            overlay = page.locator(".result img.overlay")
            playwright_api.expect(overlay).to_have_count(1)
            page.wait_for_function("() => document.querySelector('img.overlay').naturalWidth === 32")
            explained = page.locator(".result span.sub", has_text="where the model looked for").inner_text()
            assert explained.split('"')[1] in NAMES  # X-Class, percent-decoded by the page
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        finally:
            browser.close()


def test_browser_sends_more_images_than_one_request_takes_in_several(server, tmp_path):
    """Dropping more images than --max-files (64 by default) failed as a whole with 413; the page now splits them by
    the limits /v1/model gives (here shown to it as 2 images per request)."""
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    _, port, _ = server
    images = [str(_cifar_like_png(tmp_path / f"square{i}.png")) for i in range(5)]

    def two_per_request(route):
        body = route.fetch().json()
        assert body["limits"]["max_files"] == 64  # the server's own, which the page would use
        body["limits"]["max_files"] = 2
        route.fulfill(json=body)

    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page()
            page.route("**/v1/model", two_per_request)
            posts = []
            page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
            page.goto(f"http://127.0.0.1:{port}/")
            playwright_api.expect(page.locator("#model")).to_contain_text("resnet20, 10 classes")
            page.set_input_files("#files", images)
            playwright_api.expect(page.locator(".result")).to_have_count(5)
            assert len(posts) == 3 and all(url.endswith("/v1/predict?top_k=5") for url in posts)
            sources = page.locator(".result .source").all_inner_texts()
            assert sources == [Path(image).name for image in images]  # in the order dropped
        finally:
            browser.close()


def test_sigterm_finishes_the_request_in_flight_then_exits_0(server):
    process, port, folder = server
    image = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(image, "PNG")
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
            f"Content-Type: image/png\r\n\r\n").encode() + image.getvalue() + f"\r\n--{boundary}--\r\n".encode()
    # A request in flight: headers and half of the body sent when the signal arrives.
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall((f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
                  f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n").encode() + body[:len(body) // 2])
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    while "Shutting down" not in (folder / "server.log").read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with pytest.raises(OSError):  # no longer accepting
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert process.poll() is None  # still finishing the request in flight
    sock.sendall(body[len(body) // 2:])
    response = http.client.HTTPResponse(sock)
    response.begin()
    assert response.status == 200 and b'"labels"' in response.read()
    sock.close()
    assert process.wait(60) == 0
    log = (folder / "server.log").read_text()
    assert "Traceback" not in log and "Application shutdown complete" in log
    assert f"Uvicorn running on http://127.0.0.1:{port} (Press CTRL+C to quit)" in log  # the address, socket bound

