// Citizens' app (GET /app): the alerts for the citizen's places, what to do first, on a small map of the places and
// each alert's area over the offline basemap of Taiwan (basemap.js). Places and language stay on the phone
// (localStorage); the server sees them only while subscribed. Every text from the server is set with textContent.
'use strict';

// ---------------------------------------------------------------------------------------------------------------
// Citizen reports (issue 11): the report form.
(() => {
  const el = (id) => document.getElementById(id);
  const say = (message) => { el('report-status').textContent = message; };
  // A random id kept on the phone: the server's per-client rate limit key, never tied to a person.
  let clientId = localStorage.getItem('report-client-id');
  if (!clientId) {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    clientId = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
    localStorage.setItem('report-client-id', clientId);
  }
  let position = null;
  const showPosition = () => {
    const saved = JSON.parse(localStorage.getItem('places') || '[]')[0];
    const p = position || saved;
    el('report-position').textContent = p ? `${p.lat.toFixed(4)}, ${p.lon.toFixed(4)}` : '尚未定位 No position yet';
  };
  el('report-locate').onclick = () => navigator.geolocation.getCurrentPosition(
    (pos) => { position = { lat: pos.coords.latitude, lon: pos.coords.longitude }; showPosition(); },
    () => say('無法取得位置 Location unavailable'));
  const readPhoto = (file) => new Promise((resolve, reject) => {
    if (!file) return resolve(null);
    if (file.size > 2 * 1024 * 1024) return reject(new Error('照片超過 2 MB Photo larger than 2 MB'));
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error('無法讀取照片 Cannot read the photo'));
    reader.readAsDataURL(file);
  });
  el('report-form').onsubmit = async (ev) => {
    ev.preventDefault();
    const p = position || JSON.parse(localStorage.getItem('places') || '[]')[0];
    if (!p) { say('請先定位 Use your location first'); return; }
    try {
      const photo = await readPhoto(el('report-photo').files[0]);
      const body = { lat: p.lat, lon: p.lon, category: el('report-category').value, text: el('report-text').value,
                     ts: Date.now() };
      if (photo) body.photo = photo;
      const res = await fetch('/api/v1/reports', { method: 'POST', body: JSON.stringify(body),
        headers: { 'Content-Type': 'application/json', 'X-Client-Id': clientId } });
      const answer = await res.json();
      if (res.ok) {
        say(`已送出，謝謝 Sent, thank you (${answer.count} 則回報 reports here)`);
        el('report-text').value = ''; el('report-photo').value = '';
      } else {
        say(`未送出 Not sent: ${answer.message}`);
      }
    } catch (e) {
      say(`未送出 Not sent: ${e.message}`);
    }
  };
  showPosition();
})();

// ---------------------------------------------------------------------------------------------------------------
// The alerts and the map.
const $ = (id) => document.getElementById(id);
const state = {
  places: JSON.parse(localStorage.getItem('places') || '[]'),
  lang: localStorage.getItem('lang') || (navigator.language.startsWith('zh') ? 'zh-TW' : 'en'),
  // id -> last version received by this page: sent back after a reconnect so that the server replays only what was
  // missed. Not kept across page loads: a fresh page must get every active alert again.
  seen: {},
  notified: JSON.parse(localStorage.getItem('notified') || '{}'),   // id -> last version notified (across loads)
  alerts: new Map(),
  cap: new Map(),   // CAP identifier -> {instruction, description} in the page's language (fetched once)
  // id -> { version, alarm, reason }: the geofence's word on each alert (geofence.js), once the position is known.
  fence: new Map(),
  // The alert a tapped notification opened (`/app#alert=<id>`): shown first.
  focus: ((m) => (m ? decodeURIComponent(m[1]) : null))(/^#alert=(.+)$/.exec(location.hash)),
};
$('lang').value = state.lang;
let ws = null;
const WORDS = {
  'zh-TW': { title: '防災警報', map: '地圖與我的地點', tap: '點地圖可新增地點。', locate: '使用我的位置', add: '新增地點',
    none: '你的地點目前沒有警報', noPlaces: '請先新增地點（點地圖或使用我的位置），才會收到該處的警報。', connected: '已連線',
    reconnecting: '重新連線中…', remove: '移除', place: '地點', badCoords: '座標錯誤', noLocation: '無法取得位置，請點地圖新增地點',
    ended: { cleared: '已解除', cancelled: '已取消' }, doNow: '請這樣做', cap: 'CAP 原文', area: '範圍',
    outside: '你目前的位置不在此警報範圍內（因你關注的地點而顯示）', locating: '確認位置中…',
    severity: { Extreme: '極度危險', Severe: '嚴重', Moderate: '注意', Minor: '輕微', Unknown: '未知' } },
  en: { title: 'Disaster alerts', map: 'Map and my places', tap: 'Tap the map to add a place.', locate: 'Use my location',
    add: 'Add place', none: 'No alerts for your places', noPlaces: 'Add a place (tap the map or use your location) to get its alerts.',
    connected: 'Connected', reconnecting: 'Reconnecting…', remove: 'Remove', place: 'Place', badCoords: 'Invalid coordinates',
    noLocation: 'Location unavailable: tap the map to add a place', ended: { cleared: 'Cleared', cancelled: 'Cancelled' },
    doNow: 'What to do', cap: 'CAP message', area: 'Area',
    outside: 'Where you are now is outside this alert\'s area (shown for your saved place)', locating: 'Checking your position…',
    severity: { Extreme: 'Extreme', Severe: 'Severe', Moderate: 'Moderate', Minor: 'Minor', Unknown: 'Unknown' } },
};
const t = (key) => WORDS[state.lang === 'en' ? 'en' : 'zh-TW'][key];
// The status line by key, so that a language switch rewrites it too.
let statusKey = null;
function setStatus(key) { statusKey = key; $('status').textContent = t(key); }
function applyLanguage() {
  document.documentElement.lang = state.lang === 'en' ? 'en' : 'zh-Hant';
  if (statusKey) $('status').textContent = t(statusKey);
  for (const node of document.querySelectorAll('[data-t]')) node.textContent = t(node.dataset.t);
  document.title = t('title');
}

// CWA's colours: a level named in the headline takes its colour, otherwise the CAP severity's.
const COLOURS = [null, ['#fdd835', '#000'], ['#fb8c00', '#000'], ['#e53935', '#fff'], ['#8e24aa', '#fff']];
// Longer names first: 大豪雨 must not be read as 豪雨.
const LEVEL_RANK = { '超大豪雨': 4, '大豪雨': 3, '豪雨': 2, '大雨': 1, '一級警戒': 3, '二級警戒': 2, '三級警戒': 1,
  '土石流紅色警戒': 3, '土石流黃色警戒': 1, 'Debris flow: red alert': 3, 'Debris flow: yellow alert': 1,
  'Extremely torrential rain': 4, 'Torrential rain': 3, 'Extremely heavy rain': 2, 'Heavy rain': 1 };
const SEVERITY_RANK = { Unknown: 1, Minor: 1, Moderate: 2, Severe: 3, Extreme: 4 };
function colourOf(a) {
  const name = Object.keys(LEVEL_RANK).find((n) => (a.headline || '').includes(n));
  return COLOURS[name ? LEVEL_RANK[name] : SEVERITY_RANK[a.severity] || 1];
}

const map = L.map('map', { center: [23.7, 120.95], zoom: 7, minZoom: 6, maxZoom: 16, zoomSnap: 0.5,
  maxBounds: [[18.5, 115], [28.5, 126.5]] });
window.dcMap = map;
const placeLayer = L.layerGroup().addTo(map), areaLayer = L.layerGroup().addTo(map);
map.fitBounds(DCBasemap.TAIWAN);
DCBasemap.attach(map, { townLabels: true, countyLabelsFrom: 8, lang: () => state.lang }).then((a) => { state.atlas = a; renderPlaces(); });
map.on('click', (e) => addPlace(e.latlng.lat, e.latlng.lng));

function save() {
  localStorage.setItem('places', JSON.stringify(state.places));
  localStorage.setItem('lang', state.lang);
  localStorage.setItem('notified', JSON.stringify(state.notified));
}
function addPlace(lat, lon) {
  if (!(lat >= -90 && lat <= 90 && lon >= -180 && lon <= 180)) { setStatus('badCoords'); return; }
  if ('Notification' in window && Notification.permission === 'default') Notification.requestPermission();
  state.places.push({ lat, lon }); save(); renderPlaces(); subscribe();
}
function renderPlaces() {
  const ul = $('places'); ul.textContent = '';
  placeLayer.clearLayers();
  state.places.forEach((p, i) => {
    const li = document.createElement('li');
    const name = document.createElement('span'); name.textContent = `${i + 1}. ${placeName(p)}`; li.appendChild(name);
    const rm = document.createElement('button'); rm.type = 'button'; rm.textContent = `✕ ${t('remove')}`;
    rm.setAttribute('aria-label', `${t('remove')} ${i + 1}`);
    rm.onclick = () => { state.places.splice(i, 1); state.alerts.clear(); state.seen = {}; save(); renderPlaces(); renderAlerts(); subscribe(); };
    li.appendChild(rm); ul.appendChild(li);
    L.marker([p.lat, p.lon], { keyboard: false, icon: L.divIcon({ className: 'place-pin', iconSize: [24, 24], html: String(i + 1) }) })
      .addTo(placeLayer);
  });
  fitView();
}
function placeName(p) {
  const c = state.atlas && DCBasemap.countyAt(state.atlas, p.lat, p.lon);
  const town = state.atlas && state.atlas.towns.features.find((f) => DCBasemap.inGeometry(p.lon, p.lat, f.geometry));
  const en = state.lang === 'en';
  const where = town ? (en ? `${town.properties.TOWNENG}, ${town.properties.COUNTYENG}` : `${town.properties.COUNTYNAME}${town.properties.TOWNNAME}`)
    : c ? (en ? c.en : c.zh) : '';
  return `${where ? where + ' · ' : ''}${p.lat.toFixed(4)}, ${p.lon.toFixed(4)}`;
}
function fitView() {
  const pts = state.places.map((p) => [p.lat, p.lon]);
  for (const l of areaLayer.getLayers()) { const b = l.getBounds && l.getBounds(); if (b && b.isValid()) pts.push(b.getNorthEast(), b.getSouthWest()); }
  if (pts.length) map.fitBounds(L.latLngBounds(pts), { maxZoom: 11, padding: [24, 24] });
}

// The CAP message's instruction and description in the page's language (the public CAP archive).
async function loadCap(a) {
  // `cap` is our own path, `/cap/<id>.<version>.xml`; anything else is not fetched.
  if (typeof a.cap !== 'string' || !/^\/cap\/[\w.-]+\.xml$/.test(a.cap) || state.cap.has(a.cap)) return;
  state.cap.set(a.cap, null);
  try {
    const r = await fetch(a.cap);
    if (!r.ok) return;
    const xml = new DOMParser().parseFromString(await r.text(), 'application/xml');
    const infos = [...xml.getElementsByTagName('info')];
    const lang = (i) => ((i.getElementsByTagName('language')[0] || {}).textContent || '').toLowerCase();
    const info = infos.find((i) => state.lang === 'en' ? lang(i).startsWith('en') : lang(i).startsWith('zh')) || infos[0];
    if (!info) return;
    const text = (tag) => { const n = info.getElementsByTagName(tag)[0]; return n ? n.textContent.trim() : ''; };
    state.cap.set(a.cap, { instruction: text('instruction'), description: text('description') });
    renderAlerts();
  } catch (_) { /* the card still shows the headline */ }
}

function renderAlerts() {
  const box = $('alerts'); box.textContent = '';
  areaLayer.clearLayers();
  // Newest first, except the alert a tapped notification opened: that one comes first.
  const list = [...state.alerts.values()].sort((a, b) => (b.id === state.focus) - (a.id === state.focus) || b.sent.localeCompare(a.sent));
  if (!state.places.length) { const p = document.createElement('p'); p.textContent = t('noPlaces'); box.appendChild(p); }
  else if (!list.length) { const p = document.createElement('p'); p.textContent = t('none'); p.id = 'no-alerts'; box.appendChild(p); }
  const rank = (a) => COLOURS.indexOf(colourOf(a));
  // The map draws the worst last (on top where areas overlap); the list stays newest first.
  const drawOrder = [...list].sort((p, q) => rank(p) - rank(q));
  for (const a of list) {
    const ended = a.state === 'cleared' || a.state === 'cancelled';
    const [fill, ink] = colourOf(a);
    const div = document.createElement('article');
    div.className = `alert ${a.severity}${ended ? ' ended' : ''}`; div.dataset.alertId = a.id;
    div.style.setProperty('--level', fill); div.style.setProperty('--ink', ink);
    if (a.id === state.focus) div.classList.add('focused');
    // The geofence's decision, for the citizen (a note when not alarmed) and for tests.
    const fence = state.fence.get(a.id);
    const decided = fence && fence.version === a.version;
    div.dataset.alarm = decided ? (fence.alarm ? 'yes' : 'no') : 'pending';
    if (decided) div.dataset.fence = fence.reason;
    // Drills and tests say so before anything else: never mistaken for a real alert.
    if (!a.is_real) { const l = document.createElement('span'); l.className = 'label'; l.textContent = `${a.label || '演練 Drill'} — ${state.lang === 'en' ? 'not a real alert' : '非真實警報'}`; div.appendChild(l); }
    const cap = state.cap.get(a.cap);
    // What to do comes first.
    if (!ended && cap && cap.instruction) {
      const p = document.createElement('p'); p.className = 'instruction'; p.textContent = cap.instruction; div.appendChild(p);
    }
    const h = document.createElement('p'); h.className = 'headline';
    const chip = document.createElement('span'); chip.className = 'chip'; chip.textContent = ended ? t('ended')[a.state] : (t('severity')[a.severity] || a.severity);
    h.append(chip, a.headline); div.appendChild(h);
    const meta = document.createElement('div'); meta.className = 'meta';
    const sent = new Date(a.sent);
    const when = isNaN(sent) ? a.sent : sent.toLocaleString(state.lang === 'en' ? 'en-GB' : 'zh-TW', { hour12: false, dateStyle: 'short', timeStyle: 'short' });
    meta.textContent = `${t('area')}: ${a.area_name} · ${when}`; div.appendChild(meta);
    if (cap && cap.description) { const d = document.createElement('p'); d.className = 'what'; d.textContent = cap.description; div.appendChild(d); }
    if (decided && !fence.alarm && !ended) { const o = document.createElement('p'); o.className = 'outside'; o.textContent = t('outside'); div.appendChild(o); }
    else if (!decided && a.warning_area_coordinates && !ended) { const o = document.createElement('p'); o.className = 'locating'; o.textContent = t('locating'); div.appendChild(o); }
    box.appendChild(div);
    if (!ended) loadCap(a);
  }
  for (const a of drawOrder) {
    const ended = a.state === 'cleared' || a.state === 'cancelled';
    const [fill] = colourOf(a);
    if (a.area && a.area.type) {
      const layer = L.geoJSON(a.area, { interactive: false, style: { color: fill, weight: 2.5, fillColor: fill, fillOpacity: ended ? .1 : .4, className: 'dc-alert-area' } });
      layer.eachLayer((p) => p.on('add', () => { const e = p.getElement(); if (e) e.dataset.alert = a.id; }));
      layer.addTo(areaLayer);
    }
  }
}
// The current position, only if the citizen has allowed it (the page never asks for it here): [{lat, lon,
// accuracy}]; [] when not allowed (the saved places stand for the position then); null when allowed but no fix came
// within the wait (unknown: alarm, as Android does).
async function currentPosition(waitS) {
  if (!('geolocation' in navigator) || !navigator.permissions) return [];
  let allowed;
  try { allowed = (await navigator.permissions.query({ name: 'geolocation' })).state === 'granted'; } catch (e) { return []; }
  if (!allowed) return [];
  return new Promise((resolve) => navigator.geolocation.getCurrentPosition(
    (pos) => resolve([{ lat: pos.coords.latitude, lon: pos.coords.longitude, accuracy: pos.coords.accuracy || 0 }]),
    () => resolve(null),
    { enableHighAccuracy: true, timeout: waitS * 1000, maximumAge: 60000 }));
}
// Applies the alert's geofence (geofence.js): where the phone is — its current position when the citizen allowed
// it, else the saved places — inside the area (within the fix's accuracy) alarms; outside does not (the card stays,
// with a note: the citizen asked for this place's alerts); an unknown position alarms.
async function applyGeofence(a) {
  const wac = a.warning_area_coordinates;
  let positions = state.places.map((p) => ({ lat: p.lat, lon: p.lon, accuracy: 0 }));
  if (wac) {
    const here = await currentPosition(DCGeofence.waitS(wac));
    positions = here === null ? null : here.length ? here : positions;
  }
  const decision = DCGeofence.decide(wac, positions);
  const now = state.alerts.get(a.id);
  if (!now || now.version !== a.version) return;   // a newer version is being decided
  state.fence.set(a.id, { version: a.version, alarm: decision.alarm, reason: decision.reason });
  renderAlerts();
  if (decision.alarm) notify(a);
}
function notify(a) {
  // Only real alerts may look like real alerts: drills and tests never raise a notification.
  if (!a.is_real || a.state !== 'raised' || !('Notification' in window) || Notification.permission !== 'granted') return;
  if ((state.notified[a.id] || 0) >= a.version) return;
  state.notified[a.id] = a.version; save();
  new Notification(a.headline, { body: a.area_name, tag: a.id });
}
function subscribe() {
  if (!ws || ws.readyState !== 1 || !state.places.length) return;
  const last_seen = Object.entries(state.seen).map(([id, version]) => ({ id, version }));
  ws.send(JSON.stringify({ type: 'subscribe', places: state.places, lang: state.lang, last_seen }));
}
function connect() {
  ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws/citizen`);
  ws.onopen = () => { setStatus('connected'); subscribe(); };
  ws.onclose = () => { setStatus('reconnecting'); setTimeout(connect, 2000); };
  ws.onmessage = (ev) => {
    const m = JSON.parse(ev.data);
    if (m.type === 'alert') {
      state.seen[m.id] = m.version;
      state.alerts.set(m.id, m); renderAlerts(); fitView(); applyGeofence(m);
    } else if (m.type === 'error') {
      $('status').textContent = m.message;
    }
  };
}
$('locate').onclick = () => {
  navigator.geolocation.getCurrentPosition((pos) => addPlace(pos.coords.latitude, pos.coords.longitude),
    () => setStatus('noLocation'));
};
$('add-place').onsubmit = (ev) => {
  ev.preventDefault();
  addPlace(parseFloat($('place-lat').value), parseFloat($('place-lon').value));
};
// A notification tapped while the app is open (sw.js posts which alert): show that one first.
if ('serviceWorker' in navigator) {
  navigator.serviceWorker.addEventListener('message', (ev) => {
    if (ev.data && ev.data.type === 'open-alert' && typeof ev.data.id === 'string') { state.focus = ev.data.id; renderAlerts(); }
  });
}
$('lang').onchange = () => {
  state.lang = $('lang').value; state.alerts.clear(); state.seen = {}; state.cap.clear(); save();
  applyLanguage(); renderPlaces(); renderAlerts(); subscribe();
  if (state.atlas && state.atlas.relabel) state.atlas.relabel();
};
applyLanguage(); renderPlaces(); renderAlerts(); connect();
