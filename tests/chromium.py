"""Headless Chromium (Debian's `chromium`, installed by scripts/chromium-test.sh) driven over the
DevTools protocol on a pipe (`--remote-debugging-pipe`: JSON messages ended by NUL on fds 3/4), so
tests need no websocket library. Every background network feature is off and the profile is
fresh; the pages we test must not fetch anything anyway.

    with Browser(tmp_path) as b:
        page = b.open("file:///.../index.html")
        page.eval("document.querySelectorAll('table').length")
        page.screenshot(tmp_path / "shot.png")
        page.console   # console messages and uncaught exceptions seen since the page was opened
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Optional

import pytest
from services import IN_CI

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
         "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions",
         "--hide-scrollbars", "--mute-audio", "--window-size=1280,2000"]


def require_chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        message = "chromium is not installed: run scripts/chromium-test.sh install"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


class Page:
    def __init__(self, browser: "Browser", session: str) -> None:
        self.browser, self.session = browser, session
        self.console: list[str] = []

    def call(self, method: str, **params: Any) -> dict:
        return self.browser.call(method, session=self.session, page=self, **params)

    def eval(self, expression: str) -> Any:
        out = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in out:
            raise AssertionError(f"{expression!r} raised: {out['exceptionDetails']}")
        return out["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))
        return path


class Browser:
    def __init__(self, tmp_path: Path, timeout: float = 120.0) -> None:
        self.binary = require_chromium()
        self.tmp_path, self.timeout, self.next_id = tmp_path, timeout, 0
        self.pages: dict[str, Page] = {}
        self.buffer = b""

    def __enter__(self) -> "Browser":
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()
        # chromium reads commands on fd 3 and writes replies on fd 4
        # in a network namespace of its own (root may create one): the page cannot fetch anything
        offline = ["unshare", "--net"] if shutil.which("unshare") and subprocess.run(
            ["unshare", "--net", "true"], capture_output=True).returncode == 0 else []
        self.offline = bool(offline)
        self.proc = subprocess.Popen(
            [*offline, self.binary, *FLAGS, f"--user-data-dir={self.tmp_path / 'chromium-profile'}",
             "--remote-debugging-pipe", "about:blank"],
            pass_fds=(3, 4), stdout=subprocess.DEVNULL, stderr=open(self.tmp_path / "chromium.log", "wb"),
            preexec_fn=lambda: (os.dup2(to_chrome_r, 3), os.dup2(from_chrome_w, 4)))
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.call("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.to_chrome)
        os.close(self.from_chrome)

    def _read(self) -> dict:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self.buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self.from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium exited: {(self.tmp_path / 'chromium.log').read_text()[-2000:]}")
            self.buffer += chunk
        message, _, self.buffer = self.buffer.partition(b"\0")
        return json.loads(message)

    def _event(self, message: dict) -> None:
        page = self.pages.get(message.get("sessionId", ""))
        if page is None:
            return
        params = message.get("params", {})
        if message["method"] == "Runtime.consoleAPICalled":
            page.console.append(f"console.{params['type']}: " + " ".join(
                str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif message["method"] == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            page.console.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")
        elif message["method"] == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
            page.console.append(f"log.{params['entry']['level']}: {params['entry']['text']}")
        elif message["method"] == "Page.loadEventFired":
            page.loaded = True

    def call(self, method: str, session: Optional[str] = None, page: Optional[Page] = None, **params: Any) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self.to_chrome, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self._event(reply)

    def open(self, url: str) -> Page:
        """A new tab with console capture on, navigated to `url` and loaded."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        page = Page(self, session)
        page.loaded = False
        self.pages[session] = page
        for domain in ("Runtime", "Log", "Page"):
            page.call(f"{domain}.enable")
        page.call("Page.navigate", url=url)
        deadline = time.monotonic() + self.timeout
        while not page.loaded:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not load")
            self._event(self._read())
        return page
