"""A real browser: notebook 1 in JupyterLab and as a Voila app, in Debian's Chromium; Step clicked.

Needs Debian's ``chromium`` (``apt-get install chromium``; ``scripts/test.sh`` installs it when
run as root) and the Python ``playwright`` package, which drives that Chromium directly: no
browser download, ever. Under CI a missing browser fails the test instead of skipping it.
The notebook is copied to a temporary directory first, so autosave never touches the repo, and
the screenshots go to a temporary directory too, unless ``KVLAB_UPDATE_IMAGES=1`` (what
``scripts/make_images.py --browser`` sets) asks for the README's pictures in ``images/``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = Path(os.environ.get("KVLAB_BROWSER_NOTEBOOK", ROOT / "notebooks" / "01_tour.ipynb"))
CHROMIUM = "/usr/bin/chromium"
# where the screenshots go: the README's pictures (images/) only when asked to update them
UPDATE_IMAGES = os.environ.get("KVLAB_UPDATE_IMAGES") == "1"
SHOTS = ROOT / "images" if UPDATE_IMAGES else Path(tempfile.mkdtemp(prefix="kvlab-shots-"))
SCREENSHOT = Path(os.environ.get("KVLAB_SCREENSHOT", SHOTS / "browser_test.png"))
TOKEN = "kvlab-browser-test"

pytestmark = pytest.mark.browser


def _require(condition: bool, why: str) -> None:
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide this: {why}")
        pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _serve(cmd: list[str], ready_url: str, log_path: Path, env: dict[str, str] | None = None):
    """Run a server on 127.0.0.1 until the block ends; wait until ``ready_url`` answers."""
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(ready_url, timeout=2)
                break
            except urllib.error.HTTPError:
                break  # it answers: that is all we wait for
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{cmd[2]} did not start:\n"
                                       + log_path.read_text()[-3000:]) from None
                time.sleep(0.3)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def chromium():
    _require(os.path.exists(CHROMIUM), "Debian's chromium is not installed (apt-get install "
                                       "chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"])
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 2000})
        finally:
            browser.close()


@pytest.fixture
def lab(tmp_path):
    _require(importlib.util.find_spec("jupyterlab") is not None, "jupyterlab is not installed")
    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(  # no "news?" toast on top
        '{"fetchNews": "false", "checkForUpdates": false}')
    port = _free_port()
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", "--allow-root",
           f"--port={port}", f"--ServerApp.root_dir={root}", f"--IdentityProvider.token={TOKEN}",
           f"--LabApp.user_settings_dir={tmp_path / 'settings'}",
           f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}"]
    base = f"http://127.0.0.1:{port}"
    with _serve(cmd, f"{base}/api/status?token={TOKEN}", tmp_path / "lab.log", env):
        yield base


CHAPTERS = {  # notebook -> what its first figure is (a check's feedback where there is none)
    "01_tour.ipynb": "img", "02_mvcc_and_snapshots.ipynb": "img",
    "04_two_phase_commit.ipynb": "img", "05_failures_and_recovery.ipynb": "img",
    "06_stress_and_checking.ipynb": "img", "07_workshop_exercises.ipynb": "feedback",
}


@pytest.fixture
def lab_chapters(tmp_path):
    """A JupyterLab over copies of the chapters in CHAPTERS."""
    _require(importlib.util.find_spec("jupyterlab") is not None, "jupyterlab is not installed")
    root = tmp_path / "lab"
    root.mkdir()
    for name in CHAPTERS:
        shutil.copy(ROOT / "notebooks" / name, root / name)
    port = _free_port()
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", "--allow-root",
           f"--port={port}", f"--ServerApp.root_dir={root}", f"--IdentityProvider.token={TOKEN}",
           f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}"]
    base = f"http://127.0.0.1:{port}"
    with _serve(cmd, f"{base}/api/status?token={TOKEN}", tmp_path / "lab.log", env):
        yield base


def _open(page, base: str, name: str) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    page.goto(f"{base}/lab/tree/{name}?reset&token={TOKEN}")  # reset: only this one open
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=60_000)
    with contextlib.suppress(PlaywrightTimeout):  # the kernel picker of a fresh server
        page.locator(".jp-Dialog .jp-mod-accept").click(timeout=3_000)


def _shown_size(locator) -> tuple[float, float]:
    box = locator.bounding_box()
    return (box["width"], box["height"]) if box else (0.0, 0.0)


def test_stored_chapters_show_their_first_figure_and_explorer_picture(lab_chapters, chromium):
    """Each chapter as stored (before Run All): its first figure is laid out at its size and
    saved to images/; chapter 1's explorer shows a picture, not a raw "VBox(children=..." line,
    and chapter 6's progress line its finished state."""
    page = chromium
    out = SHOTS
    out.mkdir(exist_ok=True)
    for name, what in CHAPTERS.items():
        _open(page, lab_chapters, name)
        nb = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
        if what == "img":
            target = nb.locator(".jp-OutputArea-output img").first
            target.wait_for(state="attached", timeout=30_000)
            target.scroll_into_view_if_needed()  # JupyterLab hides cells far off screen
            target.wait_for(state="visible", timeout=30_000)
            assert page.evaluate("(img) => img.naturalWidth", target.element_handle()) > 100
        else:
            target = nb.locator(".jp-OutputArea-output", has_text="not yet").first
            target.wait_for(state="attached", timeout=30_000)
            target.scroll_into_view_if_needed()
            target.wait_for(state="visible", timeout=30_000)
        width, height = _shown_size(target)
        assert width > 100 and height > 20, f"{name}: first output laid out at {width}x{height}"
        kind = "figure" if what == "img" else "check"
        target.screenshot(path=str(out / f"{name[:2]}_first_{kind}.png"))
        if name.startswith("01"):  # the explorer from its stored widget state, or its picture
            shown = nb.locator(".kvlab-explorer-snapshot, .widget-vbox:has(button.widget-button)")
            shown.first.scroll_into_view_if_needed()
            assert _shown_size(shown.first)[1] > 300
            assert nb.locator("text=VBox(children=").count() == 0
            shown.first.screenshot(path=str(out / "01_explorer_stored.png"))
        if name.startswith("04"):  # the animation's first frame, without a click
            frame = nb.locator(".kvlab-anim img").first
            frame.scroll_into_view_if_needed()
            width, height = _shown_size(frame)
            assert width > 300 and height > 300, f"animation frame laid out at {width}x{height}"
            frame.locator("xpath=..").screenshot(path=str(out / "04_animation.png"))
        if name.startswith("06"):  # the progress line ends as a summary, not a bar at 0%
            line = nb.locator(".jp-OutputArea-output", has_text="bank workload:").first
            line.scroll_into_view_if_needed()
            assert "2000/2000 transactions, done" in line.inner_text()


@pytest.fixture
def voila(tmp_path):
    _require(importlib.util.find_spec("voila") is not None, "voila is not installed")
    shutil.copy(NOTEBOOK, tmp_path / NOTEBOOK.name)
    port = _free_port()
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    cmd = [sys.executable, "-m", "voila", "--no-browser", "--Voila.ip=127.0.0.1",
           f"--port={port}", str(tmp_path / NOTEBOOK.name)]
    base = f"http://127.0.0.1:{port}"
    with _serve(cmd, f"{base}/voila/static/", tmp_path / "voila.log", env):  # any answer
        yield base


def _explorer_state(page) -> str:
    """What the explorer shows right now: its text and the PNG panels' sources."""
    return page.evaluate("""() => {
        const step = [...document.querySelectorAll('button')]
            .find(b => b.textContent.trim() === 'Step');
        const area = step.closest('.jp-OutputArea-output') || step.closest('.jp-Cell')
            || document.body;
        const imgs = [...area.querySelectorAll('img')].map(i => i.src.length + ':' +
                                                            i.src.slice(-200));
        return area.innerText + '|' + imgs.join(',');
    }""")


def _step_changes_the_explorer(page, step) -> None:
    step.scroll_into_view_if_needed()
    before = _explorer_state(page)
    step.click()
    deadline = time.monotonic() + 20
    while _explorer_state(page) == before and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    assert _explorer_state(page) != before, "clicking Step did not change the explorer"


def test_notebook_one_runs_in_jupyterlab_and_step_changes_the_explorer(lab, chromium):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    page = chromium
    page.goto(f"{lab}/lab/tree/{NOTEBOOK.name}?token={TOKEN}")
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=60_000)
    try:  # a fresh server may ask which kernel to start: accept the suggested one
        page.locator(".jp-Dialog .jp-mod-accept").click(timeout=5_000)
    except PlaywrightTimeout:
        pass
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']",
                           timeout=60_000)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    step = page.locator("button.widget-button", has_text="Step").first
    try:
        step.wait_for(state="visible", timeout=90_000)
    except PlaywrightTimeout:
        page.screenshot(path=str(SCREENSHOT.with_suffix(".failed.png")))
        raise
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']",
                           timeout=90_000)
    errors = page.locator(".jp-OutputArea-output[data-mime-type="
                          "'application/vnd.jupyter.stderr']", has_text="Error")
    assert errors.count() == 0, errors.first.inner_text()
    _step_changes_the_explorer(page, step)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    area = step.locator("xpath=ancestor::div[contains(@class,'jp-OutputArea-output')][1]")
    area.screenshot(path=str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000
    if UPDATE_IMAGES and "KVLAB_SCREENSHOT" not in os.environ:  # the README's picture
        shutil.copy(SCREENSHOT, ROOT / "images" / "explorer.png")


def test_notebook_one_as_a_voila_app_and_step_changes_the_explorer(voila, chromium):
    page = chromium
    page.goto(f"{voila}/", timeout=120_000)  # Voila runs every cell before it shows the page
    step = page.locator("button.widget-button", has_text="Step").first
    step.wait_for(state="visible", timeout=120_000)
    assert page.locator("text=Traceback").count() == 0
    _step_changes_the_explorer(page, step)
