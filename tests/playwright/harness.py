"""What the browser tests share: Debian's Chromium driven by Playwright (no browser download), offline (every request
that leaves 127.0.0.1 is refused and recorded), MQTT readings through mosquitto_pub, screenshots as artifacts.

The Rust tests in tests/browser.rs start the real binary and run these scripts with the server's addresses in the
environment (DC_URL, DC_MQTT_PORT, tokens, device credentials, DC_ARTIFACTS)."""

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from urllib.parse import urlparse

from playwright.sync_api import sync_playwright

CHROMIUM = os.environ.get("DC_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
URL = os.environ["DC_URL"].rstrip("/")
ARTIFACTS = os.environ.get("DC_ARTIFACTS", "target/test-artifacts")


def env(name):
    value = os.environ.get(name)
    if not value:
        sys.exit(f"{name} is not set (the Rust test sets it)")
    return value


@contextmanager
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class Offline:
    """A browser context with no network beyond 127.0.0.1: what an operations centre has when the typhoon took its
    link. Requests elsewhere (the national tile server) are aborted and listed in `refused`; page errors are kept."""

    def __init__(self, b, width, height, scale=1):
        self.context = b.new_context(viewport={"width": width, "height": height}, device_scale_factor=scale)
        self.refused = []
        self.errors = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", self._console)

    def _console(self, message):
        # The refused requests themselves show up as console errors; anything else is the page's own.
        if message.type == "error" and "net::ERR_INTERNET_DISCONNECTED" not in message.text:
            self.errors.append(message.text)

    def _route(self, route):
        host = urlparse(route.request.url).hostname
        if host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            self.refused.append(route.request.url)
            route.abort("internetdisconnected")

    def close(self):
        self.context.close()


def shot(page, name, full_page=False):
    os.makedirs(ARTIFACTS, exist_ok=True)
    path = os.path.join(ARTIFACTS, name)
    page.screenshot(path=path, full_page=full_page)
    print(f"screenshot: {path}")
    return path


# The operator map's view has come to rest: no zoom or pan animation under way (Leaflet 1.9's own flags) and the
# same centre and zoom for several animation frames in a row. Several, because an animated `fitBounds` starts its
# zoom one frame after the call (Leaflet defers it to `requestAnimationFrame`), so one still frame proves nothing.
# What is measured or photographed after it is the final view, however slow the machine is.
MAP_AT_REST = """() => {
  const m = window.dcMap;
  if (!m) return false;
  const c = m.getCenter(), view = `${c.lat},${c.lng},${m.getZoom()}`;
  const moving = m._animatingZoom || (m._panAnim && m._panAnim._inProgress);
  window.__dcRest = !moving && window.__dcRest && window.__dcRest.view === view
    ? { view, frames: window.__dcRest.frames + 1 } : { view, frames: 0 };
  return window.__dcRest.frames >= 5;
}"""


def map_at_rest(page, timeout=15000):
    """Waits (polling every animation frame) until the map's view is at rest: see MAP_AT_REST."""
    page.evaluate("window.__dcRest = null")
    page.wait_for_function(MAP_AT_REST, polling="raf", timeout=timeout)


def publish(device, password, values, ts_ms):
    """One reading over MQTT with mosquitto_pub (QoS 1: returns once the broker took it)."""
    payload = json.dumps({"ts": ts_ms, "values": values})
    subprocess.run(
        [
            "mosquitto_pub", "-V", "mqttv311", "-h", "127.0.0.1", "-p", env("DC_MQTT_PORT"), "-q", "1",
            "-i", device, "-u", device, "-P", password, "-t", f"sensors/{device}/readings", "-m", payload,
        ],
        check=True,
        timeout=20,
    )


def now_ms():
    return int(time.time() * 1000)


def check(condition, message):
    if not condition:
        raise AssertionError(message)
    print(f"ok: {message}")
