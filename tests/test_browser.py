"""The HTML report seen in a real browser: reports/<study>/index.html opened offline in headless Chromium.

A fake study (the fixtures of tests/test_report.py) is reported on in a tmp dir; its index.html is loaded
from a ``file://`` URL with every network request refused, a full-page screenshot is taken, and the page
is checked as a reader would see it: every image decoded (``naturalWidth > 0``), the verdict table there,
text and pixels on the page. The screenshot is kept in the test's tmp dir and, when ``VAEBENCH_SCREENSHOT``
is set, copied to that path.

Browser: Debian's ``chromium`` (``apt-get install chromium``; .ci/run installs it). Driver: Playwright for
Python, chosen over Selenium because it drives the system browser directly through
``executable_path`` (no chromedriver of a matching version to install) and can intercept every request
of the page, which is how the test proves the page needs nothing from outside. ``playwright install`` is
never run (it downloads a browser build); only the pip package is used. Without chromium or playwright the
tests are skipped with a message saying what to install.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vaebench import paths
from vaebench.report import build_report

pytestmark = [pytest.mark.timeout(180), pytest.mark.pipeline]

HERE = Path(__file__).resolve().parent
VIEWPORT = {"width": 1400, "height": 1000}
MIN_TEXT_CHARS = 500      # the fake study's report has ~20k characters of text
MIN_COLOURS = 8           # a blank (or single-colour) page has 1; the report has thousands


def _report_helpers():
    """tests/test_report.py as a module (loaded by path: tests/ is not a package, whatever the import mode)."""
    name = "_vaebench_test_report_fixtures"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / "test_report.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module      # before exec: its dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> Path:
    """reports/<study>/index.html of the fake 1 dataset x 5 models x 3 seeds study of test_report.py."""
    helpers = _report_helpers()
    root = tmp_path_factory.mktemp("browser_study")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        helpers._write_study()
        result = build_report(helpers._study())
    html = root / result["index_html"]
    assert html == root / paths.REPORT_HTML.format(study=helpers.STUDY) and html.is_file()
    return html


@pytest.fixture(scope="module")
def rendered(chromium, sync_api, report_html, tmp_path_factory) -> dict:
    """Open the report in headless Chromium, offline, and record what the page shows."""
    shot = tmp_path_factory.mktemp("browser_screenshot") / "report.png"
    requested: list[str] = []   # every URL the page asked for
    refused: list[str] = []     # those refused: anything but file: and data:

    def gate(route):
        url = route.request.url
        if url.startswith(("file:", "data:")):
            route.continue_()
        else:
            refused.append(url)
            route.abort("blockedbyclient")

    with sync_api.sync_playwright() as pw:
        # Playwright passes --no-sandbox itself (chromium_sandbox=False), which running as root needs.
        browser = pw.chromium.launch(executable_path=chromium, headless=True)
        try:
            context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
            context.route("**/*", gate)
            page = context.new_page()
            page.on("request", lambda request: requested.append(request.url))
            response = page.goto(report_html.as_uri(), wait_until="load")
            page.wait_for_load_state("networkidle")
            images = page.eval_on_selector_all(
                "img", "imgs => imgs.map(i => ({src: i.currentSrc.slice(0, 40), complete: i.complete, "
                       "naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight, alt: i.alt}))")
            verdict_rows = page.eval_on_selector_all("table#verdicts tbody tr", "rows => rows.length")
            verdict_tables = page.eval_on_selector_all("table#verdicts", "t => t.length")
            text = page.evaluate("() => document.body ? document.body.innerText : ''")
            title = page.title()
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    if os.environ.get("VAEBENCH_SCREENSHOT"):
        keep = Path(os.environ["VAEBENCH_SCREENSHOT"])
        keep.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, keep)
    return {"response_ok": response is None or response.ok, "images": images, "verdict_rows": verdict_rows,
            "verdict_tables": verdict_tables, "text": text, "title": title, "screenshot": shot,
            "requested": requested, "refused": refused, "html": report_html.read_text()}


def test_every_image_is_loaded(rendered):
    images = rendered["images"]
    assert len(images) == rendered["html"].count("<img"), "not every <img> of the file is in the page"
    assert len(images) >= 2, f"the report should show its figures, found {len(images)} <img>"
    broken = [i for i in images if not (i["complete"] and i["naturalWidth"] > 0 and i["naturalHeight"] > 0)]
    assert not broken, f"{len(broken)} of {len(images)} images did not load: {broken}"


def test_page_needs_no_network(rendered):
    remote = [u for u in rendered["requested"] if not u.startswith(("file:", "data:"))]
    assert not remote and not rendered["refused"], f"the page asked for: {remote or rendered['refused']}"
    assert all(i["src"].startswith("data:image/") for i in rendered["images"])
    assert rendered["response_ok"]


def test_verdict_table_is_present(rendered):
    assert rendered["verdict_tables"] == 1, "no <table id=\"verdicts\"> in the page"
    assert rendered["verdict_rows"] >= 1, "the verdict table has no body rows"
    assert "Verdicts" in rendered["text"]


def test_page_is_not_blank(rendered):
    from PIL import Image

    text = rendered["text"]
    assert len(text.strip()) > MIN_TEXT_CHARS, f"only {len(text.strip())} characters of text: {text[:200]!r}"
    assert "vaebench report" in rendered["title"] + text
    with Image.open(rendered["screenshot"]) as im:
        rgb = im.convert("RGB")
        width, height = rgb.size
        colours = rgb.getcolors(maxcolors=width * height)
    assert width >= VIEWPORT["width"] and height >= VIEWPORT["height"]
    assert len(colours) > MIN_COLOURS, f"screenshot has {len(colours)} colour(s): blank page"
    background = max(colours)[0]
    assert background < 0.99 * width * height, "more than 99% of the screenshot is one colour"


def test_readme_screenshot_command(chromium, report_html, tmp_path):
    """The command line of the README and `make screenshot` (no driver library needed)."""
    out = tmp_path / "cli.png"
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--screenshot={out}",
         "--window-size=1400,3000", report_html.as_uri()],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0 and out.is_file(), proc.stderr[-3000:]
    from PIL import Image

    with Image.open(out) as im:
        assert im.size == (1400, 3000)
        assert len(im.convert("RGB").getcolors(maxcolors=1400 * 3000)) > MIN_COLOURS
