"""Cause and effect on the operators' map in Debian's Chromium, offline (issue 28): with PH21 blocked by the landslide
beside a tilting slope (the Rust test played `config/scenarios/ph21-landslide-closed.toml`), the map draws the road's
centre line and an arrow from the slope's area to the road segment, in the road alert's level colour, starting inside
the cause's zone and ending on the road; the road alert's detail panel names its cause (hazard, zone, distance) with a
link that selects the causing alert, whose panel links back to the road. Screenshot `operator-cause-link.png`."""

import json

from harness import Offline, browser, check, env, shot, URL

ADMIN = env("DC_TOKEN")

# Screen coordinates of an SVG path's vertices (Leaflet writes "M x y L x y …"), through the path's own transform.
VERTICES = """(el) => {
  const nums = (el.getAttribute('d') || '').match(/-?[\\d.]+(e-?\\d+)?/g) || [];
  const m = el.getScreenCTM(), svg = el.ownerSVGElement, out = [];
  for (let i = 0; i + 1 < nums.length; i += 2) {
    const p = svg.createSVGPoint(); p.x = Number(nums[i]); p.y = Number(nums[i + 1]);
    const q = p.matrixTransform(m); out.push([q.x, q.y]);
  }
  return out;
}"""


def distance_to_polyline(point, line):
    best = float("inf")
    for (ax, ay), (bx, by) in zip(line, line[1:]):
        dx, dy = bx - ax, by - ay
        length = dx * dx + dy * dy
        t = 0 if length == 0 else max(0, min(1, ((point[0] - ax) * dx + (point[1] - ay) * dy) / length))
        x, y = ax + t * dx, ay + t * dy
        best = min(best, ((point[0] - x) ** 2 + (point[1] - y) ** 2) ** 0.5)
    return best


def main():
    with browser() as b:
        ops = Offline(b, 1280, 800)
        page = ops.page
        page.goto(f"{URL}/?token={ADMIN}")
        page.wait_for_function(
            "() => [...model.alerts.values()].some((a) => a.rule === 'road-blocked-by-hazard' && ['raised', 'updated'].includes(a.state) && a.caused_by)",
            timeout=20000,
        )
        road = json.loads(page.evaluate(
            "() => JSON.stringify([...model.alerts.values()].find((a) => a.rule === 'road-blocked-by-hazard' && ['raised', 'updated'].includes(a.state)))"))
        cause = road["caused_by"]
        print(f"road alert {road['id']} on {road['area_id']}, caused by {json.dumps(cause)}")
        check(cause.get("alert") and cause["area_id"], "the road alert names its causing alert and that alert's zone")

        # The arrow: one per caused alert, from the cause's zone to the road.
        selector = f"path.dc-cause-link[data-alert='{road['id']}']"
        page.wait_for_selector(selector, state="attached", timeout=10000)
        link = page.locator(selector)
        check(link.count() == 1, "one link drawn for the road alert")
        check(link.get_attribute("data-cause") == cause["alert"], f"the link starts at the causing alert {cause['alert']}")
        check(link.get_attribute("data-cause-zone") == cause["area_id"], f"… in its zone {cause['area_id']}")
        # Frame the two zones, then measure on the screen.
        page.evaluate(
            """([a, b]) => { const g = [model.zones.get(a).area, model.zones.get(b).area];
                 dcMap.fitBounds(L.geoJSON({type: 'GeometryCollection', geometries: g}).getBounds(), {padding: [60, 60], animate: false}); }""",
            [cause["area_id"], road["area_id"]],
        )
        page.wait_for_timeout(500)
        points = page.eval_on_selector(selector, VERTICES)
        check(len(points) == 2, f"the link is a straight line ({points})")
        start, end = points
        inside = page.evaluate(
            "([x, y, zone]) => document.elementsFromPoint(x, y).some((e) => e.dataset && e.dataset.zone === zone)",
            [start[0], start[1], cause["area_id"]],
        )
        check(inside, f"it starts inside the cause's zone {cause['area_id']} (screen {start[0]:.0f},{start[1]:.0f})")
        centre_line = page.eval_on_selector(f"path.dc-road[data-road='{road['area_id']}']", VERTICES)
        gap = distance_to_polyline(end, centre_line)
        check(gap <= 2.0, f"it ends on the road's centre line ({gap:.2f} px away)")
        length = ((end[0] - start[0]) ** 2 + (end[1] - start[1]) ** 2) ** 0.5
        check(length >= 15, f"it is long enough to be seen at this zoom ({length:.0f} px)")
        marker = link.get_attribute("marker-end") or ""
        check(marker.startswith("url(#dc-arrow-"), f"it has an arrowhead ({marker})")
        head = marker[len("url(#"):-1]
        check(page.evaluate("([sel, id]) => !!document.querySelector(sel).ownerSVGElement.querySelector('#' + id + ' path')",
                            [selector, head]), f"the arrowhead {head} is defined beside it")
        level_fill = page.evaluate("(id) => levelOf(model.alerts.get(id)).fill", road["id"])
        check(link.get_attribute("stroke") == level_fill, f"in the road alert's level colour {level_fill}")
        shot(page, "operator-cause-link.png")

        # The road alert's panel names the cause, and its link selects the causing alert.
        page.locator(f"button.alert[data-alert-id='{road['id']}']").click()
        page.locator("#detail").wait_for(state="visible")
        named = page.locator("#detail-cause")
        check(named.count() == 1, "the detail panel has a 'caused by' line")
        text = named.inner_text()
        zone_name = page.evaluate("(id) => model.zones.get(id).name", cause["area_id"])
        check("Caused by" in text and zone_name in text, f"… naming the cause's zone {zone_name}: {text!r}")
        check("崩塌" in text or "Landslide" in text, f"… and its hazard: {text!r}")
        if cause.get("distance_m") is not None:
            check(f"{round(cause['distance_m'])} m" in text, f"… and how far it is ({round(cause['distance_m'])} m)")
        anchor = named.locator(f"a[data-alert-id='{cause['alert']}']")
        check(anchor.count() == 1, "a link to the causing alert")
        anchor.click()
        page.wait_for_function("(id) => document.getElementById('detail').dataset.alertId === id", arg=cause["alert"], timeout=5000)
        check(True, "following it opens the causing alert's panel")
        check(page.locator(f"button.alert[data-alert-id='{cause['alert']}'][aria-current='true']").count() == 1,
              "… and selects it in the list")
        back = page.locator(f"#detail-effects a[data-alert-id='{road['id']}']")
        check(back.count() == 1, "the cause's panel links to the road it blocked")
        back.focus()
        page.keyboard.press("Enter")
        page.wait_for_function("(id) => document.getElementById('detail').dataset.alertId === id", arg=road["id"], timeout=5000)
        check(True, "… and the keyboard follows that link back")

        check(not ops.errors, f"no script errors: {ops.errors}")
        ops.close()
    print("traffic map: all checks passed")


if __name__ == "__main__":
    main()
