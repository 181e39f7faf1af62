"""A headless Chromium driven over the DevTools protocol, for the browser tests and the
viz benchmark.

The protocol runs over ``--remote-debugging-pipe`` (Chromium reads commands on fd 3 and
writes replies on fd 4, each a JSON message ended by a NUL byte): no port to race for,
no websocket library, nothing listening on the network. Standard library only.

    with Browser.start() as page:
        page.load(path)
        page.evaluate("document.title")
        page.screenshot()            # PNG bytes

The browser runs in its own session with a fresh profile folder; leaving the ``with``
kills its process group and removes the folder, also when a test fails.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--mute-audio",
    "--hide-scrollbars",
    # WebGL (plotly's scattergl) without a GPU: SwiftShader's software rasteriser.
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--remote-debugging-pipe",
)


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class BrowserError(RuntimeError):
    pass


class Browser:
    """One headless Chromium process with one page (tab) attached."""

    def __init__(self, proc: subprocess.Popen, to_browser: int, from_browser: int, profile: str):
        self.proc = proc
        self._out = to_browser
        self._in = from_browser
        self._profile = profile
        self._buf = b""
        self._next_id = 0
        self.events: list[dict] = []
        self.session: str | None = None

    # -- life cycle ----------------------------------------------------------------------
    @classmethod
    def start(cls, width: int = 1400, height: int = 900, executable: str | None = None) -> Browser:
        exe = executable or find_chromium()
        if exe is None:
            raise BrowserError("no chromium found (apt-get install chromium)")
        profile = tempfile.mkdtemp(prefix="dtsim-chromium-")
        # Our ends: we write commands into cmd_w, read replies from rep_r.
        cmd_r, cmd_w = os.pipe()
        rep_r, rep_w = os.pipe()

        def child_fds() -> None:
            # Via fresh descriptors: dup2 onto itself would keep close-on-exec set.
            a, b = os.dup(cmd_r), os.dup(rep_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        args = [exe, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"]
        try:
            proc = subprocess.Popen(
                [*args, "about:blank"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=child_fds,  # noqa: PLW1509 - only dup2, safe after fork
                close_fds=False,
                start_new_session=True,
            )
        except BaseException:
            for fd in (cmd_r, cmd_w, rep_r, rep_w):
                os.close(fd)
            shutil.rmtree(profile, ignore_errors=True)
            raise
        os.close(cmd_r)
        os.close(rep_w)
        browser = cls(proc, cmd_w, rep_r, profile)
        try:
            browser._attach(width, height)
        except BaseException:
            browser.close()
            raise
        return browser

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Kill the browser's whole process group (renderers, GPU process, zygote)."""
        try:
            if self.proc.poll() is None:
                try:
                    self._send("Browser.close", session=False, wait=False)
                except OSError:
                    pass
                try:
                    self.proc.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    pass
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        finally:
            for fd in (self._out, self._in):
                try:
                    os.close(fd)
                except OSError:
                    pass
            shutil.rmtree(self._profile, ignore_errors=True)

    # -- protocol ------------------------------------------------------------------------
    def _send(
        self,
        method: str,
        params: dict | None = None,
        *,
        session: bool = True,
        wait: bool = True,
        timeout_s: float = 30.0,
    ) -> dict:
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        data = json.dumps(msg).encode() + b"\0"
        while data:
            n = os.write(self._out, data)
            data = data[n:]
        if not wait:
            return {}
        want = self._next_id
        deadline = time.monotonic() + timeout_s
        while True:
            reply = self._read(deadline)
            if reply.get("id") == want:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def _read(self, deadline: float) -> dict:
        import select

        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("no reply from the browser in time")
            ready, _, _ = select.select([self._in], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise BrowserError("the browser closed the pipe (it crashed or exited)")
            self._buf += chunk
        msg, _, self._buf = self._buf.partition(b"\0")
        return json.loads(msg)

    def _attach(self, width: int, height: int) -> None:
        targets = self._send("Target.getTargets", session=False)["targetInfos"]
        page = next((t for t in targets if t["type"] == "page"), None)
        if page is None:
            target_id = self._send("Target.createTarget", {"url": "about:blank"}, session=False)[
                "targetId"
            ]
        else:
            target_id = page["targetId"]
        self.session = self._send(
            "Target.attachToTarget", {"targetId": target_id, "flatten": True}, session=False
        )["sessionId"]
        self._send("Page.enable")
        self._send("Runtime.enable")
        self._send("Log.enable")
        self._send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def pump(self, seconds: float = 0.0) -> None:
        """Read events that arrived (for ``seconds`` more), without sending anything."""
        import select

        deadline = time.monotonic() + seconds
        while True:
            while b"\0" in self._buf:
                msg, _, self._buf = self._buf.partition(b"\0")
                self.events.append(json.loads(msg))
            left = max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._in], [], [], left)
            if not ready:
                return
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                return
            self._buf += chunk

    # -- page ----------------------------------------------------------------------------
    def load(self, path: str | Path, timeout_s: float = 60.0) -> float:
        """Navigate to a local file; wait for its load event. Returns seconds taken."""
        url = Path(path).resolve().as_uri()
        self.pump()
        self.events.clear()  # this page's events only (load, errors)
        t0 = time.monotonic()
        self._send("Page.navigate", {"url": url})
        deadline = t0 + timeout_s
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._read(deadline))
        return time.monotonic() - t0

    def evaluate(self, expression: str, timeout_s: float = 30.0) -> Any:
        """The value of a JavaScript expression (promises awaited), through JSON."""
        wrapped = f"(async () => JSON.stringify(await ({expression})))()"
        result = self._send(
            "Runtime.evaluate",
            {"expression": wrapped, "returnByValue": True, "awaitPromise": True},
            timeout_s=timeout_s,
        )
        if "exceptionDetails" in result:
            d = result["exceptionDetails"]
            what = d.get("exception", {}).get("description") or d.get("text")
            raise BrowserError(f"{expression!r} threw: {what}")
        value = result["result"].get("value")
        return None if value is None else json.loads(value)

    def send(self, method: str, params: dict | None = None) -> dict:
        """One DevTools command to the page (e.g. ``Input.dispatchMouseEvent``)."""
        return self._send(method, params)

    def wait_value(self, expression: str, timeout_s: float = 30.0, poll_s: float = 0.02) -> Any:
        """Poll until ``expression`` is truthy; return its value."""
        t0 = time.monotonic()
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() - t0 > timeout_s:
                raise BrowserError(f"timed out waiting for {expression!r}")
            time.sleep(poll_s)

    def wait_for(self, expression: str, timeout_s: float = 60.0, poll_s: float = 0.02) -> float:
        """Poll until ``expression`` is truthy; seconds waited."""
        t0 = time.monotonic()
        self.wait_value(expression, timeout_s, poll_s)
        return time.monotonic() - t0

    def screenshot(self) -> bytes:
        data = self._send("Page.captureScreenshot", {"format": "png"}, timeout_s=60)["data"]
        return base64.b64decode(data)

    def errors(self) -> list[str]:
        """JavaScript errors so far: uncaught exceptions, console.error, error log entries."""
        self.pump()
        found = []
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                d = params["exceptionDetails"]
                found.append(f"exception: {d.get('exception', {}).get('description') or d}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(
                    "console.error: "
                    + " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
                )
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
        return found


# -- PNG decoding (no pillow) -------------------------------------------------------------
def png_pixels(png: bytes) -> tuple[int, int, int, bytes]:
    """(width, height, channels, raw unfiltered pixel rows) of an 8-bit RGB(A) PNG."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat = 8, []
    width = height = channels = 0
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind = png[pos + 4 : pos + 8]
        body = png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            if depth != 8 or color not in (2, 6):
                raise ValueError(f"unsupported PNG (depth {depth}, colour type {color})")
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + length
    raw = zlib.decompress(b"".join(idat))
    stride = width * channels
    out = bytearray(height * stride)
    prev = bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        if f == 1:
            for i in range(channels, stride):
                line[i] = (line[i] + line[i - channels]) & 255
        elif f == 2:
            for i in range(stride):
                line[i] = (line[i] + prev[i]) & 255
        elif f == 3:
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 255
        elif f == 4:
            for i in range(stride):
                a = line[i - channels] if i >= channels else 0
                b = prev[i]
                c = prev[i - channels] if i >= channels else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 255
        out[y * stride : (y + 1) * stride] = line
        prev = line
    return width, height, channels, bytes(out)


class Screenshot:
    """A decoded PNG screenshot: its size, grey-level variance and colour counts."""

    def __init__(self, png: bytes):
        import numpy as np

        self.width, self.height, channels, pixels = png_pixels(png)
        self.rgb = np.frombuffer(pixels, dtype=np.uint8).reshape(-1, channels)[:, :3]

    @property
    def variance(self) -> float:
        """Variance of the grey level (0 for a blank, one-colour image)."""
        return float(self.rgb.mean(axis=1).var())

    @property
    def colours(self) -> int:
        import numpy as np

        packed = self.rgb.astype(np.uint32) @ np.array([1 << 16, 1 << 8, 1], dtype=np.uint32)
        return len(np.unique(packed))

    def count(self, hex_colour: str) -> int:
        """Pixels of exactly this colour (``#RRGGBB``)."""
        import numpy as np

        want = np.frombuffer(bytes.fromhex(hex_colour.lstrip("#")), dtype=np.uint8)
        return int((self.rgb == want).all(axis=1).sum())
