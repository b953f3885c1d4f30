// The geofence a phone applies before it alarms (issue 25), shared by the citizens' app (citizen.js, a <script>) and
// its service worker (sw.js, importScripts): one copy of the rule, so the open app and the closed one agree.
//
// Alerts carry `warning_area_coordinates`: the very octets cell broadcast sends geofence-capable handsets in SBc-AP
// IE 46 (ATIS-0700041 layout; the area simplified outward, never smaller than it), base64. They are read here the way
// Android reads them (packages/modules/CellBroadcastService: GsmSmsCbMessage.parseWarningAreaCoordinates, its
// BitStreamReader, CbGeoUtils' polygon and circle tests), and applied the way CellBroadcastHandler.handleBroadcastSms
// does: no coordinates, or coordinates it cannot read → alarm; a position inside a shape → alarm; no position within
// the maximum wait time → alarm ("Broadcast the message directly if the location is not available"); otherwise the
// alert is not alarmed. Like the phone model of our tests (encoders/src/test_support/phone.rs), a position counts as
// inside when it is within its own accuracy of a shape: a fix of ±50 m at 30 m from the edge may well be inside.
'use strict';
(function (root) {
  // Seconds to wait for a fix when the coordinates name no maximum wait time (tag 1 absent, or 255): Android's
  // default, `max_location_waiting_time` = 30 in CellBroadcastService's res/values/config.xml.
  const DEFAULT_WAIT_S = 30;
  const WAIT_NOT_SET = 255;
  const GRID = 4194304; // 2^22 grid steps per axis

  function octetsOf(b64) {
    const s = atob(b64);
    return Uint8Array.from(s, (c) => c.charCodeAt(0));
  }

  // Android's BitStreamReader: most significant bit first; skip() moves to the next octet when inside one.
  function bitReader(bytes) {
    let offset = 0;
    let remained = 8;
    return {
      read(count) {
        let val = 0;
        while (count > 0) {
          if (offset >= bytes.length) throw new Error('read past the end');
          const byte = bytes[offset] & ((1 << remained) - 1);
          if (count >= remained) {
            val = val * (1 << remained) + byte;
            count -= remained;
            remained = 8;
            offset += 1;
          } else {
            val = val * (1 << count) + (byte >> (remained - count));
            remained -= count;
            count = 0;
          }
        }
        return val;
      },
      skip() {
        if (remained < 8) { remained = 8; offset += 1; }
      },
    };
  }

  function latLng(r) {
    const lat = r.read(22);
    const lng = r.read(22);
    return [lat * 180 / GRID - 90, lng * 360 / GRID - 180];
  }

  // The octets (base64) → { maxWaitS, shapes: [{ polygon: [[lat, lon], …] } | { centre: [lat, lon], radiusM }] }.
  // Throws on what Android refuses (an unknown tag, a length past the end).
  function decode(b64) {
    const bytes = octetsOf(b64);
    const r = bitReader(bytes);
    const out = { maxWaitS: WAIT_NOT_SET, shapes: [] };
    let remainedBytes = bytes.length;
    while (remainedBytes > 0) {
      const type = r.read(4);
      const length = r.read(10);
      if (length < 2) throw new Error('a TLV shorter than its header');
      remainedBytes -= length;
      r.skip();
      if (type === 1) {
        out.maxWaitS = r.read(8);
      } else if (type === 2) {
        const n = Math.floor((length - 2) * 8 / 44);
        const vertices = [];
        for (let i = 0; i < n; i += 1) vertices.push(latLng(r));
        r.skip();
        out.shapes.push({ polygon: vertices });
      } else if (type === 3) {
        const centre = latLng(r);
        out.shapes.push({ centre, radiusM: r.read(20) / 64 * 1000 });
      } else {
        throw new Error('Unsupported geoType = ' + type);
      }
    }
    return out;
  }

  // Android's LatLng.distance: haversine on a 6371 km sphere, metres.
  function haversineM(a, b) {
    const rad = Math.PI / 180;
    const dLat = (b[0] - a[0]) * rad;
    const dLng = (b[1] - a[1]) * rad;
    const x = Math.sin(dLat / 2) ** 2 + Math.cos(a[0] * rad) * Math.cos(b[0] * rad) * Math.sin(dLng / 2) ** 2;
    return 2 * 6371000 * Math.atan2(Math.sqrt(x), Math.sqrt(1 - x));
  }

  const EPS = 1e-7;
  const SCALE = 1000;
  const sign = (v) => (v > EPS ? 1 : v < -EPS ? -1 : 0);

  // CbGeoUtils.Polygon.contains: winding number ≠ 0, or on an edge; coordinates relative to the westernmost vertex,
  // scaled by 1000.
  function polygonContains(vertices, p) {
    if (!vertices.length) return false;
    const origin = vertices.reduce((o, v) => (v[1] < o[1] ? v : o), vertices[0]);
    const scaled = (q) => [(q[0] - origin[0]) * SCALE, (q[1] - origin[1]) * SCALE];
    const s = scaled(p);
    const pts = vertices.map(scaled);
    let winding = 0;
    for (let i = 0; i < pts.length; i += 1) {
      const a = pts[i];
      const b = pts[(i + 1) % pts.length];
      const ccw = sign((b[0] - a[0]) * (s[1] - a[1]) - (b[1] - a[1]) * (s[0] - a[0]));
      if (ccw === 0) {
        if (Math.min(a[0], b[0]) <= s[0] && s[0] <= Math.max(a[0], b[0]) &&
            Math.min(a[1], b[1]) <= s[1] && s[1] <= Math.max(a[1], b[1])) return true;
      } else if (sign(a[1] - s[1]) <= 0) {
        if (ccw > 0 && sign(b[1] - s[1]) > 0) winding += 1;
      } else if (ccw < 0 && sign(b[1] - s[1]) <= 0) {
        winding -= 1;
      }
    }
    return winding !== 0;
  }

  // Metres from p to the shape (0 inside). Planar around p for polygons: the margins are tens of metres.
  function distanceM(shape, p) {
    if (shape.centre) return Math.max(0, haversineM(shape.centre, p) - shape.radiusM);
    const v = shape.polygon;
    if (polygonContains(v, p)) return 0;
    const k = 111195;
    const local = (q) => [(q[1] - p[1]) * k * Math.cos(p[0] * Math.PI / 180), (q[0] - p[0]) * k];
    let best = Infinity;
    for (let i = 0; i < v.length; i += 1) {
      const a = local(v[i]);
      const b = local(v[(i + 1) % v.length]);
      const dx = b[0] - a[0];
      const dy = b[1] - a[1];
      const len2 = dx * dx + dy * dy;
      const t = len2 > 0 ? Math.min(1, Math.max(0, -(a[0] * dx + a[1] * dy) / len2)) : 0;
      best = Math.min(best, Math.hypot(a[0] + t * dx, a[1] + t * dy));
    }
    return best;
  }

  // Seconds to wait for a fix for these coordinates.
  function waitS(b64) {
    try {
      const w = b64 ? decode(b64).maxWaitS : WAIT_NOT_SET;
      return w === WAIT_NOT_SET ? DEFAULT_WAIT_S : w;
    } catch (e) {
      return DEFAULT_WAIT_S;
    }
  }

  // Should the phone alarm? `positions`: [{ lat, lon, accuracy (metres) }] that stand for where the phone is, or
  // null when its position is unknown (no fix within the wait). → { alarm, reason } with reason one of
  // no_geofence, unreadable, unknown_position, inside, outside.
  function decide(b64, positions) {
    if (!b64) return { alarm: true, reason: 'no_geofence' };
    let read;
    try { read = decode(b64); } catch (e) { return { alarm: true, reason: 'unreadable' }; }
    if (!read.shapes.length) return { alarm: true, reason: 'no_geofence' };
    if (!positions || !positions.length) return { alarm: true, reason: 'unknown_position' };
    const inside = positions.some((p) => read.shapes.some((s) => distanceM(s, [p.lat, p.lon]) <= (p.accuracy || 0)));
    return inside ? { alarm: true, reason: 'inside' } : { alarm: false, reason: 'outside' };
  }

  // The saved places, for the service worker: it has no localStorage (and no Geolocation API), so the page keeps a
  // copy in Cache Storage, which both can read. Same origin, never sent anywhere.
  const STORE = 'dc-geofence-v1';
  const PLACES = '/__dc/places';
  async function savePlaces(places) {
    if (typeof caches === 'undefined') return;
    const cache = await caches.open(STORE);
    await cache.put(PLACES, new Response(JSON.stringify(places), { headers: { 'Content-Type': 'application/json' } }));
  }
  // The saved places, or null when none were kept (a phone that never opened this version of the app).
  async function loadPlaces() {
    try {
      const cache = await caches.open(STORE);
      const r = await cache.match(PLACES);
      const places = r ? await r.json() : null;
      return Array.isArray(places) && places.length ? places : null;
    } catch (e) {
      return null;
    }
  }

  root.DCGeofence = { decode, decide, distanceM, polygonContains, waitS, savePlaces, loadPlaces, DEFAULT_WAIT_S };
})(typeof self !== 'undefined' ? self : this);
