"""The README's picture of `reneg ui`: headless Chromium on a running UI, captured after the page's first grid
has arrived (real time, not virtual time: the grid is computed by the server). Chromium is driven over its
DevTools pipe (fds 3 and 4), so no client library is needed.

    reneg ui --port 7861 --methods embedding=runs/npo-table/reneg.safetensors &
    python scripts/ui_screenshot.py http://127.0.0.1:7861/ docs/ui.png
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time


def capture(url: str, out: str, *, wait: float = 25.0, width: int = 1300, height: int = 1150) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    to_browser_r, to_browser_w = os.pipe()
    from_browser_r, from_browser_w = os.pipe()

    def child_fds():  # chromium reads commands on fd 3 and answers on fd 4
        os.dup2(to_browser_r, 3)
        os.dup2(from_browser_w, 4)

    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        browser = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                    f"--user-data-dir={profile}", f"--window-size={width},{height}",
                                    "--remote-debugging-pipe", url], stderr=subprocess.DEVNULL,
                                   pass_fds=(3, 4), preexec_fn=child_fds)  # kept open after the dup2
        os.close(to_browser_r), os.close(from_browser_w)
        writer, reader, buffer, counter = os.fdopen(to_browser_w, "wb"), os.fdopen(from_browser_r, "rb"), b"", 0

        def call(method, params=None, session=None):
            nonlocal buffer, counter
            counter += 1
            message = {"id": counter, "method": method, "params": params or {}}
            if session:
                message["sessionId"] = session
            writer.write(json.dumps(message).encode() + b"\0")
            writer.flush()
            while True:
                while b"\0" not in buffer:
                    buffer += os.read(reader.fileno(), 1 << 20)
                raw, buffer = buffer.split(b"\0", 1)
                answer = json.loads(raw)
                if answer.get("id") == counter:
                    return answer.get("result", answer)

        try:
            time.sleep(wait)  # the page's load event asks the server for the first grid
            page = next(t for t in call("Target.getTargets")["targetInfos"] if t["type"] == "page")
            session = call("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True})["sessionId"]
            shot = call("Page.captureScreenshot", {"format": "png"}, session)
            with open(out, "wb") as handle:
                handle.write(base64.b64decode(shot["data"]))
        finally:
            browser.terminate()
            browser.wait()


if __name__ == "__main__":
    capture(sys.argv[1], sys.argv[2])
