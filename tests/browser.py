"""Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe): no extra packages.

``load_page(path)`` opens a local HTML file and returns what a person would have seen: console
errors, exceptions and log errors (CSP violations, failed loads), each image's load state, the
document's text, and a full-page PNG screenshot.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--mute-audio",
    "--hide-scrollbars",
]


def find_browser() -> str | None:
    if os.environ.get("EMOPRES_CHROMIUM"):
        return os.environ["EMOPRES_CHROMIUM"]
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


class BrowserError(RuntimeError):
    pass


class _Pipe:
    def __init__(self, browser: str, user_data_dir: str, flags: list[str] = ()):
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        # the browser reads commands on fd 3 and writes replies/events on fd 4; close_fds=False keeps
        # only inheritable fds across exec: the two dup2 copies (os.pipe fds are not inheritable)
        def setup():
            read_end = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
            write_end = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        self.process = subprocess.Popen(
            [browser, *FLAGS, *flags, f"--user-data-dir={user_data_dir}", "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=setup,
            close_fds=False,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60.0) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 60.0) -> dict:
        for event in self.events:
            if event.get("method") == method:
                return event
        deadline = time.monotonic() + timeout
        while True:
            message = self._read(deadline)
            self.events.append(message)
            if message.get("method") == method:
                return message

    def _read(self, deadline: float) -> dict:
        import select

        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrowserError("timed out waiting for the browser")
            ready, _, _ = select.select([self._from_browser], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                stderr = self.process.stderr.read().decode(errors="replace") if self.process.poll() is not None else ""
                raise BrowserError(f"the browser closed the pipe (exit {self.process.poll()}): {stderr[-2000:]}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except Exception:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.process.stderr:
            self.process.stderr.close()


IMAGES_JS = (
    "JSON.stringify(Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, "
    "width: i.naturalWidth, height: i.naturalHeight})))"
)


# no network but loopback: every other host name fails to resolve (a page that needs a CDN shows it)
OFFLINE_FLAGS = ["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost"]


def load_page(
    path: Path | str,
    width: int = 1280,
    timeout: float = 90.0,
    evaluate: dict[str, str] | None = None,
    settle: str | None = None,
    flags: list[str] | None = None,
) -> dict:
    """Open `path` (a local file, or a URL) in headless Chromium; returns {"errors", "images", "text", "title",
    "screenshot" (PNG bytes), "values"}: "values" holds each JavaScript expression of `evaluate` (by name)
    evaluated after the load (JSON.stringify it for objects). `settle`: an expression to wait for until truthy
    (a page that renders from a script after its load event)."""
    browser = find_browser()
    if browser is None:
        raise BrowserError("no Chromium found")
    with tempfile.TemporaryDirectory(prefix="emopres-chromium-") as profile:
        pipe = _Pipe(browser, profile, flags or [])
        try:
            target = pipe.send("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
            session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                pipe.send(f"{domain}.enable", session=session)
            pipe.send(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False},
                session=session,
            )
            url = path if isinstance(path, str) and "://" in path else Path(path).resolve().as_uri()
            pipe.send("Page.navigate", {"url": url}, session=session)
            pipe.wait_event("Page.loadEventFired", timeout=timeout)
            if settle:
                _wait_for(pipe, session, settle, timeout)
            values = {
                name: pipe.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session)[
                    "result"
                ].get("value")
                for name, expression in (evaluate or {}).items()
            }
            images = json.loads(
                pipe.send("Runtime.evaluate", {"expression": IMAGES_JS, "returnByValue": True}, session=session)[
                    "result"
                ]["value"]
            )
            text = pipe.send(
                "Runtime.evaluate", {"expression": "document.body.innerText", "returnByValue": True}, session=session
            )["result"]["value"]
            title = pipe.send(
                "Runtime.evaluate", {"expression": "document.title", "returnByValue": True}, session=session
            )["result"]["value"]
            metrics = pipe.send("Page.getLayoutMetrics", session=session)
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            shot = pipe.send(
                "Page.captureScreenshot",
                {
                    "format": "png",
                    "captureBeyondViewport": True,
                    "clip": {"x": 0, "y": 0, "width": width, "height": min(int(size["height"]), 16000), "scale": 1},
                },
                session=session,
                timeout=timeout,
            )
            errors = _errors(pipe.events)
        finally:
            pipe.close()
    return {
        "errors": errors,
        "images": images,
        "text": text,
        "title": title,
        "screenshot": base64.b64decode(shot["data"]),
        "values": values,
    }


def _wait_for(pipe: _Pipe, session: str, expression: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = pipe.send(
            "Runtime.evaluate", {"expression": f"!!({expression})", "returnByValue": True}, session=session
        )["result"]
        if result.get("value"):
            return
        if time.monotonic() > deadline:
            raise BrowserError(f"timed out waiting for {expression}")
        time.sleep(0.2)


def _errors(events: list[dict]) -> list[str]:
    out = []
    for event in events:
        method, params = event.get("method"), event.get("params") or {}
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails") or {}
            out.append(f"exception: {details.get('text')} {(details.get('exception') or {}).get('description', '')}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            out.append(
                "console: " + " ".join(str(a.get("value", a.get("description"))) for a in params.get("args", []))
            )
        elif method == "Log.entryAdded" and (params.get("entry") or {}).get("level") == "error":
            entry = params["entry"]
            out.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}".strip())
    return out
