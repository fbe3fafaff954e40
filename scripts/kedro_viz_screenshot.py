"""Screenshot kedro-viz's default view headless, with the onboarding pop-ups closed (CDP over websockets)."""

import asyncio
import base64
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import websockets

URL, OUT = sys.argv[1], sys.argv[2]
chrome = subprocess.Popen(
    [
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--user-data-dir=/tmp/chr2",
        "--remote-debugging-port=9223",
        "--window-size=1600,1000",
        "about:blank",
    ],
    stderr=subprocess.DEVNULL,
)
for _ in range(50):
    try:
        tabs = json.load(urllib.request.urlopen("http://127.0.0.1:9223/json"))
        break
    except OSError:  # not listening yet
        time.sleep(0.2)
ws_url = next(t for t in tabs if t["type"] == "page")["webSocketDebuggerUrl"]


async def main():
    async with websockets.connect(ws_url, max_size=50_000_000) as ws:
        counter = 0

        async def call(method, **params):
            nonlocal counter
            counter += 1
            await ws.send(json.dumps({"id": counter, "method": method, "params": params}))
            while True:
                msg = json.loads(await ws.recv())
                if msg.get("id") == counter:
                    return msg.get("result", {})

        await call("Emulation.setDeviceMetricsOverride", width=1600, height=1000, deviceScaleFactor=1, mobile=False)
        await call("Page.navigate", url=URL)
        await asyncio.sleep(15)
        js = """
        for (const b of document.querySelectorAll('button, a')) {
          const t = (b.textContent || '').trim();
          if (t === 'Dismiss' || t === 'Skip' ) b.click();
        }
        for (const el of document.querySelectorAll('[class*="tour"], [class*="Tour"], [class*="walkthrough"], [class*="onboarding"]')) el.remove();
        const texts = ['Workflow run status', 'is here!'];
        for (const el of document.querySelectorAll('div')) {
          if (texts.some(t => el.childElementCount < 8 && (el.textContent||'').includes(t) && el.offsetWidth < 500)) el.style.display='none';
        }
        """
        await call("Runtime.evaluate", expression=js)
        await asyncio.sleep(3)
        shot = await call("Page.captureScreenshot", format="png")
        Path(OUT).write_bytes(base64.b64decode(shot["data"]))


asyncio.run(main())
chrome.terminate()
