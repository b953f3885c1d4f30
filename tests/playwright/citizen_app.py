"""The citizens' app on a 360×740 phone in Debian's Chromium, offline (issue 26): a place inside an alert's area gets
the alert with its instruction first and the area on the map over the offline basemap; a place outside gets none;
the language switch turns the page and the alert into English; nothing overflows the 360 px screen.

The geofence (issue 25, web/geofence.js): the frame carries the alert's area as cell broadcast sends it
(`warning_area_coordinates`), and the phone alarms only where it is inside it — its current position when the citizen
allowed geolocation, else its saved places — and whenever its position is unknown, as Android does:
- a saved place inside, no geolocation allowed: alarmed (a notification is raised);
- geolocation allowed, the phone in Taipei: not alarmed (the card stays, with a note, and no notification);
- geolocation allowed, the phone just outside the polygon but within its fix's accuracy: alarmed; the same spot with
  a precise fix: not alarmed;
- geolocation allowed but no position to be had: alarmed."""

from harness import Offline, browser, check, env, now_ms, publish, shot, URL

DEVICE, PASSWORD = env("DC_DEVICE"), env("DC_DEVICE_PASSWORD")
INSIDE = {"lat": 23.5185, "lon": 120.9280}   # Shenmu village, in the debris-flow area the gauge watches
OUTSIDE = {"lat": 25.0330, "lon": 121.5654}  # Taipei


# Records every page notification the app raises (the Notification API itself still runs).
RECORD_NOTIFICATIONS = """
  window.__notes = [];
  if (window.Notification) {
    const Native = window.Notification;
    window.Notification = class extends Native {
      constructor(title, options) { window.__notes.push({ title, tag: options && options.tag }); super(title, options); }
    };
  }
"""


# Records the type of every frame the app's socket receives, before the app handles it (a listener added in the
# constructor runs before the `onmessage` the app sets later).
RECORD_FRAMES = """
  window.__frames = [];
  const NativeSocket = window.WebSocket;
  window.WebSocket = class extends NativeSocket {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (ev) => { try { window.__frames.push(JSON.parse(ev.data).type); } catch (_) {} });
    }
  };
"""


def replayed(page):
    """Waits until every alert the server replays for the page's subscription has reached the page. The server sends
    `subscribed`, then the replay, and reads the next frame only after it: so the acknowledgement of a second, equal
    subscribe comes after every frame of the first replay."""
    page.wait_for_function("() => window.__frames.includes('subscribed')", timeout=20000)
    page.evaluate("subscribe()")
    page.wait_for_function("() => window.__frames.filter(t => t === 'subscribed').length >= 2", timeout=20000)


def phone(b, place, lang="zh-TW", here=None):
    """`here`: None (geolocation not allowed), a dict (allowed, the phone there), or "unavailable" (allowed, no fix)."""
    c = Offline(b, 360, 740, scale=2)
    c.context.add_init_script(
        f"localStorage.setItem('places', JSON.stringify([{{lat: {place['lat']}, lon: {place['lon']}}}]));"
        f"localStorage.setItem('lang', '{lang}');"
    )
    c.context.add_init_script(RECORD_NOTIFICATIONS)
    c.context.add_init_script(RECORD_FRAMES)
    c.context.grant_permissions(["notifications"] + (["geolocation"] if here else []), origin=URL)
    if isinstance(here, dict):
        c.context.set_geolocation(here)
    elif here == "unavailable":
        # No coordinates: Chromium's emulation of "position unavailable".
        c.context.new_cdp_session(c.page).send("Emulation.setGeolocationOverride", {})
    c.page.goto(f"{URL}/app")
    c.page.wait_for_function("() => document.querySelectorAll('.leaflet-dcLand-pane path').length > 0", timeout=20000)
    return c


TAIPEI = {"lat": 25.0330, "lon": 121.5654}


def alarm_of(page, text):
    """The geofence's decision on the card whose text has `text`, once made: (data-alarm, data-fence)."""
    card = page.locator("article.alert").filter(has_text=text).first
    card.wait_for(timeout=15000)
    page.wait_for_function(
        "t => [...document.querySelectorAll('article.alert')].some(a => a.textContent.includes(t) && a.dataset.alarm !== 'pending')",
        arg=text, timeout=40000)
    return card.get_attribute("data-alarm"), card.get_attribute("data-fence")


def main():
    # A fresh reading: public at once (no approval gate for heavy rain).
    publish(DEVICE, PASSWORD, {"rain_mm": 120}, now_ms())
    with browser() as b:
        inside = phone(b, INSIDE)
        page = inside.page
        card = page.locator("article.alert").filter(has_text="豪雨").first
        card.wait_for(timeout=15000)
        page.locator("article.alert .instruction").first.wait_for(timeout=10000)
        first = card.locator(":scope > *").first
        cls = first.get_attribute("class")
        check(cls in ("instruction", "label"), f"the card opens with the instruction (or a drill label): {cls}")
        if cls == "label":
            check(card.locator(":scope > *").nth(1).get_attribute("class") == "instruction", "then the instruction")
        instruction = card.locator(".instruction").inner_text()
        check(len(instruction) > 4, f"an instruction in zh-TW: {instruction[:60]}")
        box_i, box_h = card.locator(".instruction").bounding_box(), card.locator(".headline").bounding_box()
        check(box_i["y"] < box_h["y"], "the instruction is above the headline")
        page.wait_for_function("() => document.querySelectorAll('path.dc-alert-area').length >= 1")
        check(page.locator(".place-pin").count() == 1, "the place is on the map")
        width = page.evaluate("document.documentElement.scrollWidth")
        check(width <= 360, f"nothing overflows the 360 px screen ({width})")
        top = card.bounding_box()["y"]
        check(top < 740, f"the alert is on the first screen (top at {top:.0f}px)")
        shot(page, "citizen-360-zh.png")
        shot(page, "citizen-360-zh-full.png", full_page=True)
        fence = alarm_of(page, "豪雨")
        check(fence == ("yes", "inside"), f"a saved place inside the area alarms (no geolocation allowed): {fence}")
        notes = page.evaluate("window.__notes")
        check(any("豪雨" in n["title"] or "rain" in n["title"].lower() for n in notes), f"a notification was raised: {notes}")
        wac = page.evaluate("[...state.alerts.values()].find(a => a.event === 'heavy_rain').warning_area_coordinates")
        check(isinstance(wac, str) and len(wac) > 20, "the frame carries the area as cell broadcast sends it")
        # A spot 150 m north of the polygon's northernmost vertex: outside, but within a 500 m fix's accuracy.
        near = page.evaluate(
            "w => { const s = DCGeofence.decode(w).shapes[0].polygon; const top = s.reduce((a, v) => v[0] > a[0] ? v : a);"
            " return { latitude: top[0] + 150 / 111195, longitude: top[1] }; }", wac)
        page.select_option("#lang", "en")
        page.wait_for_function("() => document.querySelector('#title').textContent === 'Disaster alerts'")
        page.locator("article.alert").filter(has_text="rain").first.wait_for(timeout=15000)
        page.wait_for_function("() => [...document.querySelectorAll('article.alert .instruction')].some(e => /[a-z]{4}/i.test(e.textContent))", timeout=10000)
        check(True, "the language switch turns the page and the alert into English")
        shot(page, "citizen-360-en.png")
        check(not inside.errors, f"no script errors: {inside.errors}")
        inside.close()

        taipei = phone(b, INSIDE, lang="en", here={"latitude": TAIPEI["lat"], "longitude": TAIPEI["lon"], "accuracy": 20})
        fence = alarm_of(taipei.page, "rain")
        check(fence == ("no", "outside"), f"the phone in Taipei (geolocation allowed) is not alarmed: {fence}")
        card = taipei.page.locator("article.alert[data-alarm=no]").first
        check(card.locator(".outside").count() == 1, "the card stays, with a note that the phone is outside the area")
        notes = taipei.page.evaluate("window.__notes")
        check(not any("rain" in n["title"].lower() for n in notes), f"and no notification for it: {notes}")
        width = taipei.page.evaluate("document.documentElement.scrollWidth")
        check(width <= 360, f"the note fits the 360 px screen ({width})")
        shot(taipei.page, "citizen-360-outside-geofence.png")
        check(not taipei.errors, f"no script errors: {taipei.errors}")
        taipei.close()

        for accuracy, expected in ((500, ("yes", "inside")), (10, ("no", "outside"))):
            c = phone(b, INSIDE, lang="en", here=dict(near, accuracy=accuracy))
            fence = alarm_of(c.page, "rain")
            check(fence == expected, f"150 m outside the polygon with a ±{accuracy} m fix: {fence}")
            c.close()

        lost = phone(b, INSIDE, lang="en", here="unavailable")
        fence = alarm_of(lost.page, "rain")
        check(fence == ("yes", "unknown_position"), f"geolocation allowed but no position: alarmed, as Android does: {fence}")
        check(not lost.errors, f"no script errors: {lost.errors}")
        lost.close()

        outside = phone(b, OUTSIDE)
        outside.page.locator("#no-alerts").wait_for(timeout=15000)
        replayed(outside.page)
        check(outside.page.locator("article.alert").count() == 0, "a place outside the area gets no alert")
        shot(outside.page, "citizen-360-outside.png")
        outside.close()
    print("citizen app: all checks passed")


if __name__ == "__main__":
    main()
