"""Open a page in headless Chromium and report what a reader would meet: images that did not
load, console errors, uncaught exceptions, failed requests, and every text's colours.

Speaks the Chrome DevTools Protocol over ``--remote-debugging-pipe`` (JSON messages ending in a
NUL byte, read on fd 4, written on fd 3 of the browser), so it needs only the system's
``chromium`` (Debian's package; ``.ci/run`` installs it) and no Python dependency.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["PageReport", "chromium", "open_page"]

_TEXTS_JS = """
(() => {
  const opaque = (el) => {
    for (; el; el = el.parentElement) {
      const bg = getComputedStyle(el).backgroundColor;
      if (bg && bg !== 'transparent' && !bg.endsWith(', 0)')) return bg;
    }
    return 'rgb(255, 255, 255)';  // the canvas
  };
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    if (!node.textContent.trim() || !el.getClientRects().length) continue;
    const style = getComputedStyle(el);
    out.push({text: node.textContent.trim().slice(0, 40), color: style.color,
              opacity: style.opacity, background: opaque(el), cls: el.className});
  }
  return JSON.stringify(out);
})()
"""
_IMAGES_JS = """
JSON.stringify(Array.from(document.images).map(
  (img) => ({src: img.src.slice(0, 60), complete: img.complete, width: img.naturalWidth})))
"""


def chromium() -> str | None:
    """The Chromium executable on PATH, or ``None``."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if path := shutil.which(name):
            return path
    return None


@dataclass
class PageReport:
    images: list[dict] = field(default_factory=list)
    """Each ``<img>``: ``src`` (cut), ``complete``, ``width`` (natural; 0 = not decoded)."""
    errors: list[str] = field(default_factory=list)
    """Console errors, uncaught exceptions, log errors and failed requests, in order."""
    texts: list[dict] = field(default_factory=list)
    """Each visible text node: ``text``, computed ``color``, ``opacity`` and the ``background``
    of its nearest ancestor with an opaque one."""
    shown: str = ""
    """The page's rendered text as a reader sees it (``document.body.innerText``), whole."""


class _Pipe:
    def __init__(self, executable: str, profile: str):
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()

        def on_fds_3_and_4() -> None:  # in the child: the browser reads fd 3, writes fd 4
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser, from_browser)]
            os.dup2(high[0], 3)  # inheritable; every other descriptor closes on exec
            os.dup2(high[1], 4)

        self.process = subprocess.Popen(
            [
                executable,
                "--headless",
                "--remote-debugging-pipe",
                "--no-sandbox",  # CI runs as root
                "--disable-gpu",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=False,
            preexec_fn=on_fds_3_and_4,
        )
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._next_id, self.events = b"", 0, []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        return self._next_id

    def receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._read, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params=None, session=None, timeout: float = 30.0) -> dict:
        wanted, deadline = self.send(method, params, session), time.monotonic() + timeout
        while True:
            message = self.receive(deadline)
            if message.get("id") == wanted:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        for i, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(i)
        while True:
            message = self.receive(deadline)
            if message.get("method") == method:
                return message
            self.events.append(message)

    def close(self) -> None:
        try:
            self.send("Browser.close")
            self.process.wait(timeout=10)
        except Exception:
            self.process.kill()
            self.process.wait()
        os.close(self._write)
        os.close(self._read)


def _errors(events: list[dict]) -> list[str]:
    out = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            out.append("console: " + " ".join(str(a.get("value")) for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            out.append("exception: " + params["exceptionDetails"].get("text", ""))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            out.append(f"log: {params['entry'].get('text')} ({params['entry'].get('url', '')})")
        elif method == "Network.loadingFailed":
            out.append(f"request failed: {params.get('errorText')}")
    return out


def open_page(path: Path, timeout: float = 60.0) -> PageReport:
    """Load ``path`` in a fresh headless Chromium and report images, errors and text colours."""
    executable = chromium()
    if executable is None:
        raise FileNotFoundError("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        pipe = _Pipe(executable, profile)
        try:
            target = pipe.call("Target.createTarget", {"url": "about:blank"}, timeout=timeout)
            session = pipe.call(
                "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
            )["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                pipe.call(f"{domain}.enable", session=session)
            pipe.call("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
            pipe.wait_for("Page.loadEventFired", timeout=timeout)

            def evaluate(script: str) -> list:
                result = pipe.call(
                    "Runtime.evaluate", {"expression": script, "returnByValue": True}, session
                )
                return json.loads(result["result"]["value"])

            report = PageReport(images=evaluate(_IMAGES_JS), texts=evaluate(_TEXTS_JS))
            report.shown = evaluate("JSON.stringify(document.body.innerText)")
            report.errors = _errors(pipe.events)
        finally:
            pipe.close()
    return report
