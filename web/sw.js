// The citizens' app's service worker: shows alerts pushed while the app is closed (Web Push), and opens the alert
// when the notification is tapped. Payload: docs/PAYLOADS.md, "Web Push".
//
// What rings and what does not is decided on the server (`notify`): a new alert, a level rise and the end ring;
// other updates replace the shown notification silently (same tag). Drills and tests are labelled in the title and
// always silent: a drill that rings like the real thing teaches people to ignore the real thing.
//
// Then the phone applies the alert's geofence (geofence.js, the rule cell broadcast handsets apply): a service worker
// has no Geolocation API, so the positions it checks are the saved places the page keeps for it (the ones the
// subscription was targeted by); none kept means the position is unknown, and an unknown position alarms. An alert
// whose polygon holds none of the places is still shown, but quietly: browsers require a visible notification for
// every push (`userVisibleOnly`; Chrome shows its own generic one otherwise and may revoke the subscription), and a
// quiet one that says "not where your places are" tells the citizen more than Chrome's "updated in the background".
'use strict';

importScripts('/static/geofence.js');

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

function parse(event) {
  try {
    const p = event.data && event.data.json();
    return p && p.v === 1 && typeof p.id === 'string' && typeof p.title === 'string' ? p : null;
  } catch (e) {
    return null;
  }
}

const OUTSIDE = {
  'zh-TW': '你的地點不在此警報範圍內。',
  en: 'Your places are outside this alert\'s area.',
};

async function show(p) {
  const tag = 'alert:' + p.id;
  // Pushes may arrive out of order (a retry overtaken by a newer version): never replace a newer one with an older.
  const shown = await self.registration.getNotifications({ tag });
  if (shown.some((n) => n.data && n.data.version >= p.version)) return;
  const ended = p.state === 'cleared' || p.state === 'cancelled';
  const places = await DCGeofence.loadPlaces();
  const fence = DCGeofence.decide(p.warning_area_coordinates,
    places && places.map((q) => ({ lat: q.lat, lon: q.lon, accuracy: 0 })));
  const rings = p.notify && p.is_real && fence.alarm;
  await self.registration.showNotification(p.title, {
    body: fence.alarm ? p.body : `${OUTSIDE[p.lang] || OUTSIDE.en}\n${p.body}`,
    tag,
    renotify: rings,
    silent: !rings,
    // A real, active warning stays until the citizen sees it.
    requireInteraction: rings && !ended,
    lang: p.lang,
    icon: '/icon.svg',
    badge: '/icon.svg',
    timestamp: p.sent_ms,
    data: { id: p.id, version: p.version, url: p.url, is_real: p.is_real, title: p.title, alarm: fence.alarm,
            fence: fence.reason },
  });
}

self.addEventListener('push', (event) => {
  const p = parse(event);
  // Browsers require a visible notification for every push (userVisibleOnly); an unreadable one says so plainly.
  event.waitUntil(p ? show(p) : self.registration.showNotification('防災警報 Disaster alerts', {
    body: '請開啟 App 查看 Open the app for details', tag: 'alert:unknown', silent: true, icon: '/icon.svg',
  }));
});

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  const data = event.notification.data || {};
  const url = new URL(data.url || '/app', self.location.origin);
  if (url.origin !== self.location.origin) url.href = new URL('/app', self.location.origin).href;
  event.waitUntil((async () => {
    const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
    const open = windows.find((c) => new URL(c.url).pathname === '/app');
    if (open) {
      open.postMessage({ type: 'open-alert', id: data.id, title: data.title, is_real: data.is_real, url: url.href });
      try { await open.focus(); } catch (e) { /* focus needs the tap's activation; the message is there anyway */ }
      return;
    }
    await self.clients.openWindow(url.href);
  })());
});
