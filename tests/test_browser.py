"""The web page in a real headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright; no browser download) against the API served by uvicorn on loopback."""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest
from conftest import catalog_of, make_project
from serving_fixtures import photo, raf_faces, small_model

from fer_pipeline.data.schema import CLASSES
from fer_pipeline.modelling.export import to_onnx
from fer_pipeline.serving.local import local_server

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium; installed with apt-get when missing and the tests run as root
    (a fresh machine or container), so that `python -m pytest` needs no other step."""
    found = shutil.which("chromium")
    if found is None and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "chromium"],
        ):
            subprocess.run(command, env=env, capture_output=True, check=False, timeout=900)
        found = shutil.which("chromium")
    if found is None:
        pytest.fail("the browser test needs Debian's chromium: `sudo apt-get install chromium`")
    return found


KEY = "s3cret-key"


@pytest.fixture(scope="module")
def project(shared_data, tmp_path_factory):
    """A project whose latest export is a small real model."""
    project = make_project(tmp_path_factory.mktemp("served") / "project", shared_data)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)
        catalog_of(project).save("model_onnx", to_onnx(small_model(shared_data)))
    return project


@pytest.fixture(scope="module")
def server(project):
    """The API serving the project's latest model, on loopback."""
    with local_server(project, log=project.parent / "uvicorn.log") as url:
        yield url


@pytest.fixture(scope="module")
def keyed_server(project):
    """The same API with ``FER_API_KEY`` set."""
    env = {"FER_API_KEY": KEY}
    with local_server(project, env=env, log=project.parent / "keyed.log") as url:
        yield url


def test_the_page_shows_faces_labels_and_bars(server, shared_data, tmp_path, chromium):
    from playwright.sync_api import sync_playwright

    image = tmp_path / "two_faces.jpg"
    image.write_bytes(photo(raf_faces(shared_data, 2)))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(server)
        page.set_input_files("#file", str(image))
        page.wait_for_selector(".face", timeout=30_000)
        assert page.inner_text("#status") == "2 faces found"
        cards = page.query_selector_all(".face")
        assert len(cards) == 2
        for card in cards:
            assert card.query_selector(".label").inner_text() in CLASSES
            assert len(card.query_selector_all(".bar")) == len(CLASSES)
            widths = [
                float(f.get_attribute("style").split("width:")[1].rstrip("%"))
                for f in card.query_selector_all(".fill")
            ]
            assert sum(widths) == pytest.approx(100, abs=0.5)
        # The photo is drawn with its boxes: the canvas takes the photo's size.
        assert page.eval_on_selector("#canvas", "c => [c.width, c.height]") == [400, 220]
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        # Bad input is shown as an error, and the page keeps working.
        bad = tmp_path / "notes.jpg"
        bad.write_text("not an image")
        page.set_input_files("#file", str(bad))
        page.wait_for_selector("#status.error", timeout=10_000)
        assert "not an image" in page.inner_text("#status")
        browser.close()
    assert (tmp_path / "page.png").stat().st_size > 10_000


def _y4m(frames: list, path) -> None:
    """A raw YUV4MPEG2 video (4:2:0) of RGB frames, as Chromium's fake camera reads."""
    import cv2

    height, width = frames[0].shape[:2]
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            out.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).tobytes())


def test_the_webcam_labels_faces_continuously(server, shared_data, tmp_path, chromium):
    """Chromium's fake camera plays a video of two real faces: the page labels frame
    after frame (a frame every FRAME_INTERVAL_MS after each answer), not one snapshot."""
    from playwright.sync_api import sync_playwright

    from fer_pipeline.data.images import decode_image

    frame = np.full((480, 640, 3), 128, np.uint8)  # the fake camera's default size
    frame[130:350, 120:520] = decode_image(photo(raf_faces(shared_data, 2)))  # two faces
    video = tmp_path / "faces.y4m"
    _y4m([frame] * 10, video)
    camera = [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={video}",
    ]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS + camera)
        page = browser.new_page()
        page.goto(server)
        page.click("#webcam")
        page.wait_for_function("Number(document.body.dataset.frames || 0) >= 3", timeout=60_000)
        assert page.inner_text("#status") == "2 faces found"
        assert len(page.query_selector_all(".face")) == 2
        assert page.inner_text("#webcam") == "Stop webcam"
        browser.close()


def test_the_page_sends_the_api_key_the_server_asks_for(
    keyed_server, shared_data, tmp_path, chromium
):
    """Without the key the page says the server needs one; a wrong one is said to be
    refused; the right one, typed in the page, is sent as X-API-Key. It is kept in the
    tab's sessionStorage only: a reload keeps it, localStorage stays empty."""
    from playwright.sync_api import sync_playwright

    image = tmp_path / "two_faces.jpg"
    image.write_bytes(photo(raf_faces(shared_data, 2)))

    def upload(page) -> None:
        page.set_input_files("#file", [])  # the same file again fires "change" again
        page.set_input_files("#file", str(image))

    def status_says(page, text: str) -> None:
        page.wait_for_function(
            "text => document.querySelector('#status').textContent.includes(text)",
            arg=text,
            timeout=30_000,
        )

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(keyed_server)
        upload(page)
        status_says(page, "This server needs an API key: enter it above")
        assert page.get_attribute("#status", "class") == "error"
        page.fill("#key", "wrong")
        upload(page)
        status_says(page, "The API key was refused")
        page.fill("#key", KEY)
        upload(page)
        page.wait_for_selector(".face", timeout=30_000)
        assert page.inner_text("#status") == "2 faces found"
        page.reload()
        assert page.input_value("#key") == KEY
        assert page.evaluate("sessionStorage.getItem('fer_api_key')") == KEY
        assert page.evaluate("localStorage.length") == 0
        browser.close()
