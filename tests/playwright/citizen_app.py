"""The citizens' app on a 360×740 phone in Debian's Chromium, offline (issue 26): a place inside an alert's area gets
the alert with its instruction first and the area on the map over the offline basemap; a place outside gets none;
the language switch turns the page and the alert into English; nothing overflows the 360 px screen."""

from harness import Offline, browser, check, env, now_ms, publish, shot, URL

DEVICE, PASSWORD = env("DC_DEVICE"), env("DC_DEVICE_PASSWORD")
INSIDE = {"lat": 23.5185, "lon": 120.9280}   # Shenmu village, in the debris-flow area the gauge watches
OUTSIDE = {"lat": 25.0330, "lon": 121.5654}  # Taipei


def phone(b, place, lang="zh-TW"):
    c = Offline(b, 360, 740, scale=2)
    c.context.add_init_script(
        f"localStorage.setItem('places', JSON.stringify([{{lat: {place['lat']}, lon: {place['lon']}}}]));"
        f"localStorage.setItem('lang', '{lang}');"
    )
    c.page.goto(f"{URL}/app")
    c.page.wait_for_function("() => document.querySelectorAll('.leaflet-dcLand-pane path').length > 0", timeout=20000)
    return c


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
        page.select_option("#lang", "en")
        page.wait_for_function("() => document.querySelector('#title').textContent === 'Disaster alerts'")
        page.locator("article.alert").filter(has_text="rain").first.wait_for(timeout=15000)
        page.wait_for_function("() => [...document.querySelectorAll('article.alert .instruction')].some(e => /[a-z]{4}/i.test(e.textContent))", timeout=10000)
        check(True, "the language switch turns the page and the alert into English")
        shot(page, "citizen-360-en.png")
        check(not inside.errors, f"no script errors: {inside.errors}")
        inside.close()

        outside = phone(b, OUTSIDE)
        outside.page.locator("#no-alerts").wait_for(timeout=15000)
        outside.page.wait_for_timeout(1500)
        check(outside.page.locator("article.alert").count() == 0, "a place outside the area gets no alert")
        shot(outside.page, "citizen-360-outside.png")
        outside.close()
    print("citizen app: all checks passed")


if __name__ == "__main__":
    main()
