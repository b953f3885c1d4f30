#!/usr/bin/env python3
"""The citizens' app and its service worker in headless Chromium (Debian `chromium`, driven by PyPI `playwright`),
with the payload our server really pushed (tests/push.rs decrypts it at its Python push service and hands it here).

- The service worker registers; the push opt-in calls `pushManager.subscribe` with the server's VAPID key (stubbed:
  Chromium's own push service needs the internet) and registers the subscription through the real HTTP API, which
  also hands the places to the service worker (Cache Storage).
- Pushes delivered through the DevTools protocol (`ServiceWorker.deliverPushMessage`): the real alert rings for a
  place inside its geofence (the payload's `warning_area_coordinates`, cell broadcast's IE 46 octets); a drill is
  silent and labelled; an older version never replaces a newer one; with the places outside the polygon the alert is
  shown quietly (no sound, not kept on screen, "your places are outside"); with no places known (position unknown) it
  rings, as Android does.
- A tap with the app closed: the page is closed, a push delivered, the notification's click dispatched in the service
  worker; it opens `/app#alert=<id>`, and the app shows that alert first with its instruction. DevTools cannot click
  a notification and a synthetic click carries no user activation, so Chromium refuses `clients.openWindow` ("Not
  allowed to open a window"); the test records the URL the worker asks for (the one stand-in here) and opens it in a
  new tab as the browser does on a real tap.
- A tap with the app open tells the open app which alert it was.

Usage: citizen_push.py <base URL> '<payload JSON of a real alert, as our server encrypted it>' [screenshot folder]
Prints one JSON line per step; exits non-zero with the reason on the first failure.
"""

import base64
import json
import os
import sys
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from playwright.sync_api import sync_playwright

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]
INSIDE = {"lat": 23.5185, "lon": 120.928}   # Shenmu village: in the alert's area
OUTSIDE = {"lat": 23.1, "lon": 120.62}      # Jiaxian: far outside it


def b64e(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def step(name, **kw):
    print(json.dumps(dict(step=name, **kw), ensure_ascii=False), flush=True)


def fail(message):
    print(json.dumps({"failed": message}, ensure_ascii=False), flush=True)
    sys.exit(1)


HOST = []


def wait_for(what, fn, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = fn()
        if value:
            return value
        # Playwright's sync API delivers events (DevTools ones too) only while it runs: wait through it.
        HOST[0].wait_for_timeout(200)
    fail("timed out waiting for " + what)


def main():
    base, payload = sys.argv[1].rstrip("/"), json.loads(sys.argv[2])
    shots = sys.argv[3] if len(sys.argv) > 3 else "/tmp"
    if not payload.get("warning_area_coordinates"):
        fail("the server's payload carries no geofence: %r" % sorted(payload))
    private = ec.generate_private_key(ec.SECP256R1())
    p256dh = b64e(private.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint))
    auth = b64e(b"0123456789abcdef")
    # Nothing is pushed to it by the server: it subscribes after the test's alert went out.
    endpoint = "http://127.0.0.1:9/browser-stub"
    stub = """
      localStorage.setItem('places', JSON.stringify([%(inside)s]));
      localStorage.setItem('lang', 'en');
      window.__subscribeKeys = [];
      let current = null;
      const b64url = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf))).replace(/\\+/g, '-').replace(/\\//g, '_').replace(/=+$/, '');
      PushManager.prototype.subscribe = async function (options) {
        if (!options.userVisibleOnly) throw new Error('userVisibleOnly must be true');
        const key = new Uint8Array(options.applicationServerKey).buffer;
        window.__subscribeKeys.push(b64url(key));
        current = {
          endpoint: %(endpoint)s,
          options: { applicationServerKey: key, userVisibleOnly: true },
          toJSON() { return { endpoint: this.endpoint, expirationTime: null, keys: { p256dh: %(p256dh)s, auth: %(auth)s } }; },
          async unsubscribe() { current = null; return true; },
        };
        return current;
      };
      PushManager.prototype.getSubscription = async function () { return current; };
    """ % {"endpoint": json.dumps(endpoint), "p256dh": json.dumps(p256dh), "auth": json.dumps(auth),
           "inside": json.dumps(INSIDE)}

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS, headless=True)
        context = browser.new_context(viewport={"width": 360, "height": 740}, device_scale_factor=2)
        context.grant_permissions(["notifications"], origin=base)
        context.add_init_script(stub)
        errors = []
        # A tab that is not the app hosts the DevTools session, so that the app can be closed and pushes still come.
        host = context.new_page()
        HOST.append(host)
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(base + "/app")
        scope = page.evaluate("navigator.serviceWorker.ready.then(r => r.scope)")
        step("service_worker_ready", scope=scope)
        manifest = page.evaluate("document.querySelector('link[rel=manifest]') && document.querySelector('link[rel=manifest]').href")
        if not manifest or not manifest.endswith("/manifest.webmanifest"):
            fail("no manifest link: %r" % manifest)
        page.wait_for_selector("#push-toggle:not([hidden])")
        wait_for("the opt-in button", lambda: page.inner_text("#push-toggle"))
        page.click("#push-toggle")
        status = wait_for("subscribed", lambda: (lambda t: t if "on" in t.lower() else None)(page.inner_text("#push-status")))
        keys = page.evaluate("window.__subscribeKeys")
        served = json.loads(page.evaluate("fetch('/api/v1/push/key').then(r => r.text())"))["public_key"]
        if keys != [served]:
            fail("pushManager.subscribe was called with %r, the server serves %r" % (keys, served))
        step("subscribed", status=status, key=served)

        def kept_places():
            return page.evaluate("caches.open('dc-geofence-v1').then(c => c.match('/__dc/places')).then(r => r ? r.json() : null)")

        wait_for("the places kept for the service worker", lambda: kept_places() == [INSIDE])

        cdp = context.new_cdp_session(host)
        registrations = []
        cdp.on("ServiceWorker.workerRegistrationUpdated", lambda e: registrations.extend(e["registrations"]))
        cdp.send("ServiceWorker.enable")
        reg = wait_for("the service worker registration", lambda: next((r for r in registrations if not r.get("isDeleted")), None))

        def deliver(p):
            cdp.send("ServiceWorker.deliverPushMessage", {"origin": base, "registrationId": reg["registrationId"], "data": json.dumps(p)})

        def page_notifications():
            target = page if not page.is_closed() else None
            if target is None:
                return []
            return target.evaluate(
                "navigator.serviceWorker.ready.then(r => r.getNotifications()).then(ns => ns.map(n => "
                "({title: n.title, body: n.body, tag: n.tag, silent: n.silent, requireInteraction: n.requireInteraction, data: n.data})))"
            )

        def shown(title):
            return wait_for("the notification " + title, lambda: [n for n in page_notifications() if n["title"] == title])[0]

        def push_and_show(p):
            """Delivers `p` until its notification shows: under load the first delivery after the worker starts has
            been seen to go missing at DevTools; a repeat of the same version is a no-op in the worker."""
            for _ in range(3):
                deliver(p)
                deadline = time.time() + 8
                while time.time() < deadline:
                    found = [n for n in page_notifications() if n["title"] == p["title"]]
                    if found:
                        return found[0]
                    host.wait_for_timeout(200)
            fail("timed out waiting for the notification " + p["title"])

        version = payload["version"]

        # 1. A place inside the area: the real alert rings and stays.
        n = push_and_show(payload)
        if n["body"] != payload["body"]:
            fail("notification %r does not show the pushed body" % n)
        if n["silent"] or not n["requireInteraction"] or not n["data"]["alarm"] or n["data"]["fence"] != "inside":
            fail("a real, new warning for a place inside its area must ring and stay: %r" % n)
        step("inside_rings", title=n["title"], fence=n["data"]["fence"])

        drill = dict(payload, id="drill-1", version=1, is_real=False, label="Drill", notify=False, title="[Drill] " + payload["title"])
        deliver(drill)
        d = wait_for("the drill's notification", lambda: [x for x in page_notifications() if x["tag"] == "alert:drill-1"])[0]
        if not d["silent"] or "Drill" not in d["title"]:
            fail("a drill must be silent and labelled: %r" % d)
        step("drill_silent", title=d["title"])

        # An older version arriving late never replaces a newer one.
        version += 1
        deliver(dict(payload, version=version, title="newer " + payload["title"], notify=False))
        shown("newer " + payload["title"])
        deliver(dict(payload, title="older " + payload["title"]))
        # A push for another alert after it: the worker is given pushes in the order they come, and the older
        # version's handler (one lookup, then return) is shorter than any that shows a notification, so once this
        # one is shown the older version has been decided.
        barrier = dict(payload, id="order-barrier", version=1, notify=False, title="barrier " + payload["title"])
        push_and_show(barrier)
        if any(x["title"].startswith("older ") for x in page_notifications()):
            fail("an older version replaced a newer one")
        step("order_kept")

        # 2. The places move outside the polygon: the app re-registers them (and hands them to the worker); a rise of
        # the same alert is then shown quietly.
        page.evaluate("places => localStorage.setItem('places', JSON.stringify(places))", [OUTSIDE])
        wait_for("the new places kept for the service worker", lambda: kept_places() == [OUTSIDE])
        version += 1
        title = "outside " + payload["title"]
        n = push_and_show(dict(payload, version=version, title=title, notify=True))
        if not n["silent"] or n["requireInteraction"] or n["data"]["alarm"] or n["data"]["fence"] != "outside":
            fail("an alert whose polygon holds none of the places must not alarm: %r" % n)
        if "outside" not in n["body"]:
            fail("the quiet notification must say why: %r" % n["body"])
        step("outside_quiet", body=n["body"][:60])

        # 3. Nothing kept (the position is unknown): it rings.
        page.evaluate("caches.delete('dc-geofence-v1')")
        version += 1
        title = "unknown " + payload["title"]
        n = push_and_show(dict(payload, version=version, title=title, notify=True))
        if n["silent"] or not n["data"]["alarm"] or n["data"]["fence"] != "unknown_position":
            fail("an unknown position must alarm: %r" % n)
        step("unknown_rings", fence=n["data"]["fence"])

        # 4. A tap with the app open: the open app is told which alert it was.
        page.evaluate("places => localStorage.setItem('places', JSON.stringify(places))", [INSIDE])
        wait_for("the places kept again", lambda: kept_places() == [INSIDE])
        worker = wait_for("the service worker", lambda: next(iter(context.service_workers), None))
        worker.evaluate(
            """async (tag) => {
                 const [n] = await self.registration.getNotifications({ tag });
                 self.dispatchEvent(new NotificationEvent('notificationclick', { notification: n }));
               }""",
            "alert:" + payload["id"],
        )
        opened = wait_for("the app to show the tapped alert", lambda: page.get_attribute("#push-opened", "data-alert"))
        if opened != payload["id"]:
            fail("tap opened %r, not %r" % (opened, payload["id"]))
        if "#alert=" not in page.url:
            fail("the app's URL does not name the alert: %s" % page.url)
        step("tap_with_app_open", alert=opened, url=page.url)
        if errors:
            fail("script errors in the app: %r" % errors)

        # 5. A tap with the app closed.
        page.close()
        version += 1
        title = "closed " + payload["title"]
        deliver(dict(payload, version=version, title=title, notify=True))
        worker = wait_for("the service worker", lambda: next(iter(context.service_workers), None))
        n = wait_for("the notification with the app closed", lambda: worker.evaluate(
            "t => self.registration.getNotifications().then(ns => ns.filter(n => n.title === t).map(n => n.data))", title))[0]
        if not n["alarm"]:
            fail("the alert for a place inside its area must ring with the app closed: %r" % n)
        asked = worker.evaluate(
            """async (tag) => {
                 // Chromium refuses openWindow to a synthetic click (no user activation): record what the worker asks.
                 self.__asked = [];
                 self.clients.openWindow = async (url) => { self.__asked.push(url); return null; };
                 const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
                 const [n] = await self.registration.getNotifications({ tag });
                 const event = new NotificationEvent('notificationclick', { notification: n });
                 const done = new Promise((resolve) => { event.waitUntil = (p) => p.then(resolve, resolve); });
                 self.dispatchEvent(event);
                 await Promise.race([done, new Promise((r) => setTimeout(r, 3000))]);
                 return { asked: self.__asked, windows: windows.map((w) => w.url) };
               }""",
            "alert:" + payload["id"],
        )
        if asked["windows"]:
            fail("the app was still open: %r" % asked["windows"])
        if len(asked["asked"]) != 1 or not asked["asked"][0].endswith(payload["url"]):
            fail("the tap should open %r, it asked for %r" % (payload["url"], asked["asked"]))
        step("tap_asks_to_open", url=asked["asked"][0])
        if page_notifications_closed(worker, "alert:" + payload["id"]):
            fail("the tapped notification stays on screen")

        app = context.new_page()
        app.on("pageerror", lambda e: errors.append(str(e)))
        HOST[0] = app
        app.goto(asked["asked"][0])
        first = app.locator("#alerts article.alert").first
        wait_for("the tapped alert first", lambda: first.get_attribute("data-alert-id") == payload["id"] or None, timeout=30)
        app.locator("#alerts article.alert").first.locator(".instruction").wait_for(timeout=15000)
        kids = first.locator(":scope > *")
        cls = kids.first.get_attribute("class")
        if cls != "instruction":
            fail("the tapped alert should open with its instruction, not %r" % cls)
        if "focused" not in (first.get_attribute("class") or ""):
            fail("the tapped alert is not marked")
        if app.get_attribute("#push-opened", "data-alert") != payload["id"]:
            fail("the push opt-in does not name the opened alert")
        instruction = first.locator(".instruction").inner_text()
        step("opened_on_the_alert", url=app.url, instruction=instruction[:60])
        app.screenshot(path=os.path.join(shots, "push-tap-opened.png"))
        if errors:
            fail("script errors in the app: %r" % errors)
        browser.close()
    step("done")


def page_notifications_closed(worker, tag):
    return worker.evaluate("t => self.registration.getNotifications({ tag: t }).then(ns => ns.length > 0)", tag)


if __name__ == "__main__":
    main()
