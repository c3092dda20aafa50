"""Open an HTML file in headless Chromium as a user would, and report what went wrong.

Drives Chromium through the DevTools protocol over ``--remote-debugging-pipe`` (JSON
messages separated by NUL on file descriptors 3 and 4): no websocket, no extra package.
Records every network request the page makes, every console error and uncaught exception,
every JavaScript dialog (an ``alert`` would mean injected script ran), and whether every
image decoded; saves a screenshot. Chromium's profile, cache and HOME live in a folder the
caller gives (the test's temporary folder): nothing is written elsewhere.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from conftest import missing_tool

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary on PATH, if any."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageCheck:
    """What the browser saw while loading one page."""

    url: str
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    console_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)  # alt, complete, naturalWidth
    scripts: int = 0
    title: str = ""
    screenshot: Path | None = None

    @property
    def network_requests(self) -> list[str]:
        """Requests other than the page itself and inline ``data:`` images."""
        return [u for u in self.requests if u != self.url and not u.startswith("data:")]

    @property
    def broken_images(self) -> list[dict]:
        return [i for i in self.images if not i["complete"] or i["naturalWidth"] == 0]

    def summary(self) -> str:
        return (f"{self.url}: title {self.title!r}; {len(self.images)} images, "
                f"{len(self.broken_images)} broken; {len(self.network_requests)} network "
                f"requests; {len(self.console_errors)} console errors; {len(self.dialogs)} "
                f"dialogs; {self.scripts} <script> elements; screenshot {self.screenshot}")


class _Pipe:
    """The DevTools protocol over a pair of pipes."""

    def __init__(self, proc: subprocess.Popen, to_browser: int, from_browser: int):
        self.proc, self.out, self.inp = proc, to_browser, from_browser
        self.buf = b""
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 60) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.out, json.dumps(msg).encode() + b"\0")
        want = self.next_id
        deadline = time.monotonic() + timeout
        while True:
            m = self.read(deadline)
            if m.get("id") == want:
                if "error" in m:
                    raise RuntimeError(f"DevTools {method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def read(self, deadline: float) -> dict:
        import select

        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self.inp], [], [], left)
            if ready:
                chunk = os.read(self.inp, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium closed the pipe (exit {self.proc.poll()})")
                self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        return json.loads(raw)

    def wait_event(self, method: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        for e in self.events:
            if e.get("method") == method:
                return e
        while True:
            m = self.read(deadline)
            self.events.append(m)
            if m.get("method") == "Page.javascriptDialogOpening":  # never block on alert()
                self.send("Page.handleJavaScriptDialog", {"accept": True},
                          session=m.get("sessionId"))
            if m.get("method") == method:
                return m


def check_page(html_path: str | Path, workdir: str | Path, screenshot: str | Path,
               chromium: str | None = None, timeout: float = 120) -> PageCheck:
    """Load ``html_path`` in headless Chromium; return what happened (see :class:`PageCheck`)."""
    chromium = chromium or find_chromium()
    if not chromium:
        raise FileNotFoundError("no chromium on PATH")
    work = Path(workdir)
    home = work / "home"
    for d in (home, work / "profile", work / "cache", work / "config"):
        d.mkdir(parents=True, exist_ok=True)
    # Chromium's singleton socket lives in TMPDIR and a socket path has at most 107 bytes:
    # a short folder in the (work-tree) temporary folder, removed at the end
    short_tmp = tempfile.mkdtemp(prefix="cr")
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(work / "config"),
           "XDG_CACHE_HOME": str(work / "cache"), "TMPDIR": short_tmp}
    args = [chromium, "--headless=new", "--remote-debugging-pipe", "--disable-gpu",
            f"--user-data-dir={work / 'profile'}", "--no-first-run",
            "--no-default-browser-check", "--disable-extensions", "--disable-sync",
            "--disable-background-networking", "--disable-component-update",
            "--disable-default-apps", "--mute-audio", "--window-size=1280,1600",
            "--disable-dev-shm-usage"]
    if os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    to_r, to_w = os.pipe()
    from_r, from_w = os.pipe()

    def wire() -> None:  # in the child: our pipes become fds 3 (commands) and 4 (answers)
        a, b = os.dup(to_r), os.dup(from_w)
        os.dup2(a, 3)
        os.dup2(b, 4)

    log = open(work / "chromium.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            preexec_fn=wire, close_fds=False)
    os.close(to_r)
    os.close(from_w)
    url = Path(html_path).resolve().as_uri()
    result = PageCheck(url)
    cdp = _Pipe(proc, to_w, from_r)
    try:
        target = cdp.send("Target.createTarget", {"url": "about:blank"}, timeout=timeout)
        session = cdp.send("Target.attachToTarget", {"targetId": target["targetId"],
                                                     "flatten": True})["sessionId"]
        for domain in ("Network", "Runtime", "Log", "Page"):
            cdp.send(f"{domain}.enable", session=session)
        cdp.events.clear()
        cdp.send("Page.navigate", {"url": url}, session=session, timeout=timeout)
        cdp.wait_event("Page.loadEventFired", timeout=timeout)
        ev = cdp.send("Runtime.evaluate", {"expression": (
            "JSON.stringify({title: document.title, scripts: "
            "document.querySelectorAll('script').length, images: "
            "Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, "
            "naturalWidth: i.naturalWidth}))})"), "returnByValue": True}, session=session)
        page = json.loads(ev["result"]["value"])
        result.title, result.scripts, result.images = (page["title"], page["scripts"],
                                                       page["images"])
        shot = cdp.send("Page.captureScreenshot", {"format": "png"}, session=session,
                        timeout=timeout)
        Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
        result.screenshot = Path(screenshot)
        for e in cdp.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Network.requestWillBeSent":
                result.requests.append(params["request"]["url"])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error",
                                                                                  "assert"):
                result.console_errors.append(
                    " ".join(str(a.get("value", a.get("description", "")))
                             for a in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                result.console_errors.append(
                    params.get("exceptionDetails", {}).get("text", "exception"))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                result.console_errors.append(
                    f"{params['entry'].get('source')}: {params['entry'].get('text')}")
            elif method == "Page.javascriptDialogOpening":
                result.dialogs.append(params.get("message", ""))
        with contextlib.suppress(RuntimeError, TimeoutError):
            cdp.send("Browser.close", timeout=10)
    finally:
        for fd in (to_w, from_r):
            os.close(fd)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(short_tmp, ignore_errors=True)
    return result


# ------------------------------------------------------------------ for the tests


def require_chromium() -> str:
    """The Chromium binary; skip without one, unless asked for (EM2FM_TEST_BROWSER=1)."""
    path = find_chromium()
    if path is None:
        missing_tool("EM2FM_TEST_BROWSER", "no chromium on PATH",
                     "apt-get install chromium; .ci/run installs it")
    return path


def browser_check(path, tmp_path, expect_images):
    """Open a report in headless Chromium: images load, no request, no console error."""
    result = check_page(path, tmp_path / "chromium", tmp_path / "screenshot.png",
                        require_chromium())
    print(result.summary())
    assert len(result.images) == expect_images and not result.broken_images, result.images
    assert result.network_requests == [], result.network_requests
    assert result.console_errors == [], result.console_errors
    assert result.dialogs == [] and result.scripts == 0
    assert result.screenshot and result.screenshot.stat().st_size > 10_000
    return result
