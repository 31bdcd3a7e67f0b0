"""The built book in a browser, run by `make book` after the build: headless
Chromium opens every page of `_build/html`, served on localhost, and checks what a
reader would see: no console error, every image loaded, every formula typeset, the
Colab button on every chapter, and no page wider than a phone's screen. It saves a
screenshot of each page under `_build/screenshots/`.

    pytest tests/book_browser.py          # after jupyter-book build

The machines that build the book have no internet, so the page's MathJax (from a
CDN) is replaced by the local one of Debian's `libjs-mathjax` (MathJax 2, given
the page's macros). Without Chromium or that MathJax the test is skipped, and says
how to install them.

A page whose bytes are those of a page that passed before, with the same images,
the same `_static` files and the same test, is not opened again: its result and
screenshot are kept (`_build/screenshots/report.json` holds each page's key), so a
rebuild after editing one chapter opens that chapter. Delete the folder to open
every page.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import http.server
import json
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"
MATHJAX = Path("/usr/share/javascript/mathjax")
MATHJAX_CDN = "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"
# mobile=False keeps the layout viewport at the screen's width (a mobile emulation
# widens it to fit the content, hiding the overflow this test looks for).
PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": False}
DESKTOP = {"width": 1280, "height": 1000, "deviceScaleFactor": 1, "mobile": False}
REDIRECT = '<meta http-equiv="Refresh"'  # the root index.html only sends readers on


def _pages() -> list[str]:
    """Every page a reader opens: not the sources, modules, or a redirect."""
    if not HTML.exists():
        return []
    return sorted(str(p.relative_to(HTML).with_suffix("")) for p in HTML.glob("**/*.html")
                  if not p.relative_to(HTML).parts[0].startswith("_")
                  and not p.read_text().startswith(REDIRECT))


PAGES = _pages()

# Loads the local MathJax 2 with the macros that the page configured for MathJax 3.
SHIM = """(function () {
  var v3 = window.MathJax || {};
  window.MathJax = {
    TeX: {Macros: (v3.tex || {}).macros || {}, extensions: ["AMSmath.js", "AMSsymbols.js"]},
    tex2jax: {inlineMath: [["\\\\(", "\\\\)"]], displayMath: [["\\\\[", "\\\\]"]],
              processEscapes: true, ignoreClass: "tex2jax_ignore|mathjax_ignore",
              processClass: (v3.options || {}).processHtmlClass || "math"},
    messageStyle: "none", showMathMenu: false
  };
  var script = document.createElement("script");
  script.src = "/mathjax/MathJax.js?config=TeX-AMS_CHTML";
  document.head.appendChild(script);
})();
"""

# Waits until MathJax has typeset the page (or finds no formula), then reports.
INSPECT = """new Promise(function (resolve) {
  var start = Date.now();
  function report(typeset) {
    var images = Array.from(document.images);
    resolve({
      broken_images: images.filter(function (i) {
        return !(i.complete && i.naturalWidth > 0); }).map(function (i) { return i.src; }),
      n_images: images.length,
      n_math: document.querySelectorAll("span.math, div.math").length,
      n_typeset: document.querySelectorAll(".MathJax_CHTML").length,
      math_errors: Array.from(document.querySelectorAll(".mjx-merror, .MathJax_Error"))
        .map(function (e) { return e.textContent.slice(0, 80); }),
      typeset: typeset,
      colab: !!document.querySelector('a[href*="colab.research.google.com"]'),
      width: document.documentElement.scrollWidth,
      too_wide: Array.from(document.querySelectorAll("body *")).filter(function (e) {
        if (e.getBoundingClientRect().right <= window.innerWidth + 1) return false;
        for (var a = e.parentElement; a && a !== document.body; a = a.parentElement) {
          if (getComputedStyle(a).overflowX !== "visible") return false;  // it scrolls
        }
        return getComputedStyle(e).overflowX === "visible" || e.scrollWidth <= e.clientWidth;
      }).slice(0, 5).map(function (e) {
        return e.tagName.toLowerCase() + "." + String(e.className).split(" ").join(".") +
          " " + (e.textContent || "").trim().slice(0, 40); }),
      viewport: window.innerWidth,
      height: document.documentElement.scrollHeight
    });
  }
  (function wait() {
    if (!document.querySelector("span.math, div.math")) return report(true);
    if (window.MathJax && window.MathJax.Hub && window.MathJax.isReady) {
      return window.MathJax.Hub.Queue(function () { report(true); });
    }
    if (Date.now() - start > 30000) return report(false);
    setTimeout(wait, 100);
  })();
})"""


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the book, the local MathJax under /mathjax/, and the book's pages with
    their MathJax CDN address pointed at the shim."""

    def translate_path(self, path: str) -> str:
        if path.startswith("/mathjax/"):
            return str(MATHJAX / path.split("?")[0].removeprefix("/mathjax/"))
        return super().translate_path(path)

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/mathjax-shim.js":
            return self._send(SHIM.encode(), "application/javascript")
        if path.endswith(".html") or path.endswith("/"):
            file = Path(self.translate_path(path))
            file = file / "index.html" if file.is_dir() else file
            if file.exists():
                html = file.read_text().replace(MATHJAX_CDN, "/mathjax-shim.js")
                return self._send(html.encode(), "text/html; charset=utf-8")
        return super().do_GET()

    def _send(self, body: bytes, kind: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:  # quiet
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _DevTools:
    """The Chrome DevTools Protocol over one page's websocket (tornado's client)."""

    def __init__(self, connection) -> None:
        self.connection, self.next_id, self.events = connection, 0, []

    async def send(self, method: str, **params: object) -> dict:
        self.next_id += 1
        await self.connection.write_message(json.dumps(
            {"id": self.next_id, "method": method, "params": params}))
        while True:  # no answer in two minutes: fail, never hang the build
            message = json.loads(await asyncio.wait_for(self.connection.read_message(), 120))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    async def wait_for(self, event: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == event for e in self.events):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(event)
            message = await asyncio.wait_for(self.connection.read_message(), remaining)
            self.events.append(json.loads(message))


def _console_errors(events: list[dict]) -> list[str]:
    errors = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            errors.append(" ".join(str(a.get("value", a.get("description", "")))
                                   for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            errors.append(details.get("exception", {}).get("description", details.get("text")))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            errors.append(f"{entry.get('text')} ({entry.get('url', '')})")
    return errors


def _keys() -> dict[str, str]:
    """Per page, a digest of everything its check depends on: its HTML, the images
    and scripts it loads, the theme's files and this test. The search index, which
    every page loads and every edit changes, counts for the search page only."""
    shared = hashlib.sha256(Path(__file__).read_bytes())
    for file in sorted((HTML / "_static").rglob("*")):
        if file.is_file():
            shared.update(file.name.encode() + file.read_bytes())
    keys = {}
    for page in PAGES:
        html = (HTML / f"{page}.html").read_bytes()
        key = shared.copy()
        key.update(html)
        for source in sorted(set(re.findall(rb'src="([^"#?]+)"', html))):
            if source.endswith(b"searchindex.js") and page != "search":
                continue
            image = (HTML / page).parent / source.decode()
            if image.is_file() and HTML.resolve() in image.resolve().parents:
                key.update(image.read_bytes())
        keys[page] = key.hexdigest()
    return keys


def _passed(result: dict) -> bool:
    """Whether a page's result passes every check below (then it may be kept)."""
    return (not result["errors"] and not result["broken_images"] and result["typeset"]
            and not result["math_errors"] and result["n_typeset"] >= result["n_math"]
            and result["width"] <= PHONE["width"])


async def _visit_all(port: int, devtools_url: str, pages: list[str]) -> dict[str, dict]:
    from tornado.websocket import websocket_connect

    connection = await websocket_connect(devtools_url, max_message_size=2**30)
    tools = _DevTools(connection)
    for domain in ("Page", "Runtime", "Log"):
        await tools.send(f"{domain}.enable")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    results = {}
    for page in pages:
        result: dict = {}
        for viewport in (PHONE, DESKTOP):
            await tools.send("Emulation.setDeviceMetricsOverride", **viewport)
            tools.events.clear()
            await tools.send("Page.navigate", url=f"http://127.0.0.1:{port}/{page}.html")
            await tools.wait_for("Page.loadEventFired", timeout=60)
            found = await asyncio.wait_for(tools.send(
                "Runtime.evaluate", expression=INSPECT, awaitPromise=True,
                returnByValue=True), timeout=90)  # INSPECT gives up on MathJax at 30 s
            seen = found["result"]["value"]
            if viewport is PHONE:
                result.update(seen, errors=_console_errors(tools.events))
                continue
            height = min(seen["height"], 12000)  # long chapters: the first 12,000 px
            shot = await tools.send("Page.captureScreenshot", format="png",
                                    captureBeyondViewport=True, clip={
                                        "x": 0, "y": 0, "width": DESKTOP["width"],
                                        "height": height, "scale": 0.5})
            name = page.replace("/", "__") + ".png"
            (SCREENSHOTS / name).write_bytes(base64.b64decode(shot["data"]))
            result["errors"] += _console_errors(tools.events)
        results[page] = result
    connection.close()
    return results


@pytest.fixture(scope="module")
def pages() -> dict[str, dict]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("the browser test needs Chromium: sudo apt install chromium "
                    "(or brew install --cask chromium); skipped")
    if not (MATHJAX / "MathJax.js").exists():
        pytest.skip("the browser test needs a local MathJax (the machines have no "
                    "internet): sudo apt install libjs-mathjax; skipped")
    if not PAGES:
        pytest.fail(f"{HTML} has no pages: run `make book` first")
    keys, report = _keys(), SCREENSHOTS / "report.json"
    before = json.loads(report.read_text()) if report.exists() else {}
    kept = {page: before[page] for page in PAGES
            if page in before and before[page].get("key") == keys[page]
            and _passed(before[page])
            and (SCREENSHOTS / (page.replace("/", "__") + ".png")).exists()}
    changed = [page for page in PAGES if page not in kept]
    print(f"\n{len(changed)} pages to open, {len(kept)} unchanged since they passed")
    if not changed:
        return kept
    handler = functools.partial(_Handler, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    debug_port = _free_port()
    with tempfile.TemporaryDirectory() as profile:
        chromium = subprocess.Popen(
            [browser, "--headless=new", "--no-sandbox", "--disable-gpu",
             "--hide-scrollbars", f"--remote-debugging-port={debug_port}",
             f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            devtools_url = None
            for _ in range(100):  # the browser takes a moment to listen
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{debug_port}/json") as r:
                        targets = [t for t in json.load(r) if t["type"] == "page"]
                    devtools_url = targets[0]["webSocketDebuggerUrl"]
                    break
                except (OSError, IndexError):
                    time.sleep(0.1)
            assert devtools_url, "Chromium did not open its DevTools port"
            results = asyncio.run(_visit_all(server.server_address[1], devtools_url,
                                             changed))
        finally:
            chromium.terminate()
            chromium.wait(timeout=30)
            server.shutdown()
    for page, result in results.items():
        result["key"] = keys[page]
    results = {**kept, **results}
    report.write_text(json.dumps(results, indent=1))
    return results


def test_the_root_page_sends_readers_to_a_page_that_exists():
    if not HTML.exists():
        pytest.skip("no built book")
    html = (HTML / "index.html").read_text()
    assert html.startswith(REDIRECT)
    target = html.split("url=", 1)[1].split('"', 1)[0]
    assert target.removesuffix(".html") in PAGES


@pytest.mark.parametrize("page", PAGES)
def test_page_has_no_console_error(pages, page):
    assert pages[page]["errors"] == []


@pytest.mark.parametrize("page", PAGES)
def test_every_image_loads(pages, page):
    assert pages[page]["broken_images"] == []


@pytest.mark.parametrize("page", PAGES)
def test_every_formula_is_typeset(pages, page):
    seen = pages[page]
    assert seen["typeset"], "MathJax did not finish"
    assert seen["math_errors"] == []
    assert seen["n_typeset"] >= seen["n_math"], (
        f"{seen['n_math']} formulas, {seen['n_typeset']} typeset")


@pytest.mark.parametrize("page", [p for p in PAGES if p.startswith("notebooks/")])
def test_chapter_has_its_colab_button_and_figures(pages, page):
    assert pages[page]["colab"]
    assert pages[page]["n_images"] > 0


@pytest.mark.parametrize("page", PAGES)
def test_page_fits_a_phone_screen(pages, page):
    seen = pages[page]
    assert seen["width"] <= PHONE["width"], (
        f"{seen['width']} px wide on a {PHONE['width']} px screen: {seen['too_wide']}")
