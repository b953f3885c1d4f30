// Operators' map (GET /): Leaflet over the offline basemap of Taiwan (basemap.js), fed by /ws/operator (snapshot,
// then every change), with the operator API for what the socket does not carry (deliveries, broadcasts, history).
//
// Safety: every text that comes from outside (alert texts, partners' warnings, citizens' reports, delivery details)
// is set with textContent or as a DOM node, never as HTML; Leaflet tooltips get DOM nodes, not strings. The server's
// CSP allows no inline script, as a second line.
'use strict';

// ---------------------------------------------------------------------------------------------------------------
// Token: taken from ?token= once, kept for this tab only, and removed from the address bar (and so from history).
const token = (() => {
  const url = new URL(location.href), given = url.searchParams.get('token');
  if (given) {
    sessionStorage.setItem('dc-operator-token', given);
    url.searchParams.delete('token');
    history.replaceState(null, '', url.pathname + url.search + url.hash);
  }
  return given || sessionStorage.getItem('dc-operator-token') || '';
})();
const auth = { Authorization: `Bearer ${token}` };
const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------------------------------------------
// Levels: CWA's colours. A level named in CWA's scales takes its colour; any other level takes the colour of its
// CAP severity. Rank 1 yellow … 4 purple; the level filter and the legend use the same ranks.
const LEVELS = [
  null,
  { key: 'yellow', zh: '黃', en: 'Yellow', fill: '#fdd835', ink: '#000', note: '大雨 · 三級 · 土石流黃色' },
  { key: 'orange', zh: '橙', en: 'Orange', fill: '#fb8c00', ink: '#000', note: '豪雨 · 二級' },
  { key: 'red', zh: '紅', en: 'Red', fill: '#e53935', ink: '#fff', note: '大豪雨 · 一級 · 土石流紅色' },
  { key: 'purple', zh: '紫', en: 'Purple', fill: '#8e24aa', ink: '#fff', note: '超大豪雨' },
];
const LEVEL_RANK = { '大雨': 1, '豪雨': 2, '大豪雨': 3, '超大豪雨': 4, '三級警戒': 1, '二級警戒': 2, '一級警戒': 3,
  '土石流黃色警戒': 1, '土石流紅色警戒': 3 };
const SEVERITY_RANK = { Unknown: 1, Minor: 1, Moderate: 2, Severe: 3, Extreme: 4 };
const rankOf = (a) => LEVEL_RANK[a.level] || SEVERITY_RANK[a.severity] || 1;
const levelOf = (a) => LEVELS[rankOf(a)];
const HAZARDS = {
  heavy_rain: '豪雨 Heavy rain', debris_flow: '土石流 Debris flow', river_level: '河川水位 River level',
  road_flooding: '道路淹水 Road flooding', air_quality: '空氣品質 Air quality', earthquake: '地震 Earthquake',
  sensor_silent: '感測器失聯 Sensor silent', gas_leak: '氣體外洩 Gas leak', typhoon: '颱風 Typhoon',
  landslide: '崩塌 Landslide', road_blocked: '道路阻斷 Road blocked', sensor_fault: '感測器故障 Sensor fault',
  hazmat_geofence: '危險物品車輛 Hazmat vehicle',
};
const hazardName = (event) => HAZARDS[event] || event;
const ACTIVE = new Set(['raised', 'updated']);
const isActive = (a) => ACTIVE.has(a.state);
const SENSOR_COLOUR = { online: '#2e7d32', offline: '#9e9e9e', unknown: '#9e9e9e', alarm: '#c62828' };

// ---------------------------------------------------------------------------------------------------------------
// Model: what the socket told us, plus every alert version seen (for the timeline and the detail panel).
const model = {
  zones: new Map(), sensors: new Map(), alerts: new Map(), reports: new Map(), external: new Map(),
  versions: new Map(),   // alert id -> Map(version -> {version, sent, ms, state, level, severity, headline, cap})
  broadcasts: [], atlas: null, scope: null, operator: null, tileUrl: '', mode: '',
  air: { on_air: {}, history: [] },  // the on-air ledger (GET /api/v1/broadcasts): per carrier, and recent stops
  selected: null,        // the alert in the detail panel
  replayAt: null,        // ms: the map shows the state at that time; null: live
  history: null,         // sensor id -> [[ts, value]] for the last 24 h (loaded when the timeline is first used)
};
const SCOPES = ['read', 'operate', 'admin'];
const mayOperate = () => SCOPES.indexOf(model.scope) >= 1;

function remember(a) {
  if (!model.versions.has(a.id)) model.versions.set(a.id, new Map());
  const known = model.versions.get(a.id).get(a.version);
  model.versions.get(a.id).set(a.version, {
    version: a.version, sent: a.sent, ms: Date.parse(a.sent) || (known && known.ms) || Date.now(), state: a.state,
    level: a.level, severity: a.severity, headline: a.headline, cap: a.cap, mode: a.mode, event: a.event,
    area_id: a.area_id, held: a.held || '', approved_by: a.approved_by || '',
  });
}

// ---------------------------------------------------------------------------------------------------------------
// The map.
const map = L.map('map', { center: [23.7, 120.95], zoom: 8, minZoom: 6, maxZoom: 18, keyboard: true,
  zoomSnap: 0.5, worldCopyJump: false, maxBounds: [[18.5, 115], [28.5, 126.5]] });
map.fitBounds(DCBasemap.TAIWAN);
window.dcMap = map;  // for tests and for operators' consoles
// Carriers' cells under the alert areas (an alert's area stays clickable over them); the geofence over everything
// but the markers, never catching the pointer.
map.createPane('dcCells').style.zIndex = 380;
const geofencePane = map.createPane('dcGeofence');
geofencePane.style.zIndex = 450; geofencePane.style.pointerEvents = 'none';
// Cause and effect (a road blocked by a landslide): arrows over the areas and the geofence, under the markers.
map.createPane('dcLinks').style.zIndex = 460;
const layers = {
  zones: L.layerGroup().addTo(map), alerts: L.layerGroup().addTo(map), geofence: L.layerGroup().addTo(map),
  links: L.layerGroup().addTo(map),
  partners: L.layerGroup().addTo(map), reports: L.layerGroup().addTo(map), sensors: L.layerGroup().addTo(map),
};
const layerControl = L.control.layers(null, {
  '區域 Zones': layers.zones, '警報區 Alert areas': layers.alerts, '地理圍欄 Geofence (IE 46)': layers.geofence,
  '因果 Cause → effect': layers.links,
  '夥伴警報 Partner warnings': layers.partners, '民眾回報 Reports': layers.reports, '感測器 Sensors': layers.sensors,
}, { collapsed: true, position: 'topright' }).addTo(map);
// One layer per carrier (made when the ledger first names it): the cells its broadcasts were written to.
const carrierLayers = new Map();
const CARRIER_COLOURS = ['#0d47a1', '#00838f', '#5d4037', '#455a64', '#283593'];
function carrierLayer(name) {
  if (!carrierLayers.has(name)) {
    const layer = L.layerGroup().addTo(map);
    carrierLayers.set(name, layer);
    layerControl.addOverlay(layer, `細胞 Cells — ${name}`);
  }
  return carrierLayers.get(name);
}
const carrierColour = (name) => { carrierLayer(name); return CARRIER_COLOURS[[...carrierLayers.keys()].indexOf(name) % CARRIER_COLOURS.length]; };
// The panel's switches follow the layer control (and the other way round: they call the same addLayer/removeLayer).
map.on('overlayadd overlayremove', () => {
  for (const cb of document.querySelectorAll('input[data-layer]')) {
    const l = cb.dataset.layer === 'geofence' ? layers.geofence : carrierLayers.get(cb.dataset.layer);
    if (l) cb.checked = map.hasLayer(l);
  }
});
L.control.scale({ metric: true, imperial: false }).addTo(map);

const legend = L.control({ position: 'bottomleft' });
legend.onAdd = () => {
  // A <details>, so that an operator can fold it away from the coast it covers (keyboard: its summary is a button).
  const outer = L.DomUtil.create('details', 'legend');
  outer.id = 'legend'; outer.open = true;
  const summary = document.createElement('summary'); summary.textContent = '圖例 Legend'; outer.appendChild(summary);
  const box = document.createElement('div'); outer.appendChild(box);
  const row = (cls, style, text) => {
    const line = document.createElement('div'), i = document.createElement('i');
    if (cls) i.className = cls;
    Object.assign(i.style, style);
    line.append(i, text);
    box.appendChild(line);
  };
  const h = (text) => { const t = document.createElement('h4'); t.textContent = text; box.appendChild(t); };
  h('警報等級 Alert level (CWA)');
  for (const l of LEVELS.slice(1)) row('', { background: l.fill }, `${l.zh} ${l.en} — ${l.note}`);
  const other = document.createElement('small');
  other.textContent = '其他依 CAP 嚴重度 Others by CAP severity: Moderate 橙 · Severe 紅 · Extreme 紫';
  box.appendChild(other);
  h('感測器 Sensors');
  row('dot', { background: SENSOR_COLOUR.online }, '正常 Online');
  row('dot', { background: SENSOR_COLOUR.alarm }, '警戒中 In an alert');
  row('dot', { background: SENSOR_COLOUR.offline }, '離線/未知 Offline/unknown');
  h('其他 Other');
  row('', { background: '#ab47bc' }, '民眾回報群集 Report cluster');
  row('dash', {}, '夥伴機關警報 Partner warning');
  row('cell', {}, '細胞 播送中 Cell on the air');
  row('cell stopped', {}, '細胞 已停止 Cell stopped');
  row('fence', {}, '地理圍欄 Geofence sent to phones');
  row('link', {}, '起因 → 道路 Hazard → the road it blocked');
  row('', { background: '#5c7c99', opacity: .4 }, '監測區域 Watched zone');
  L.DomEvent.disableClickPropagation(outer);
  return outer;
};
legend.addTo(map);

const replayBanner = L.DomUtil.create('div', '', $('map'));
replayBanner.id = 'replay-banner';
replayBanner.hidden = true;

// Text as a DOM node, for Leaflet tooltips (a string would be parsed as HTML).
function textNode(lines) {
  const div = document.createElement('div');
  lines.filter(Boolean).forEach((line, i) => { if (i) div.appendChild(document.createElement('br')); div.append(String(line)); });
  return div;
}

// ---------------------------------------------------------------------------------------------------------------
// Filters (county, hazard, level, ended): the list and the map show only what passes.
const filters = { county: '', hazard: '', level: 0, ended: false };
function countyOfPoint(lat, lon) {
  const c = DCBasemap.countyAt(model.atlas, lat, lon);
  return c ? c.code : '';
}
function countyOfAlert(a) {
  const z = model.zones.get(a.area_id);
  if (z && z.geocode && z.geocode.length >= 5) return z.geocode.slice(0, 5);
  const c = centreOf(a.area || (z && z.area));
  return c ? countyOfPoint(c[0], c[1]) : '';
}
function centreOf(geometry) {
  if (!geometry || !geometry.type) return null;
  try { const b = L.geoJSON(geometry).getBounds(); return b.isValid() ? [b.getCenter().lat, b.getCenter().lng] : null; }
  catch (_) { return null; }
}
const passesCounty = (code) => !filters.county || code === filters.county;
function passes(a) {
  if (!filters.ended && !isActive(a)) return false;
  if (filters.hazard && a.event !== filters.hazard) return false;
  if (filters.level && rankOf(a) < filters.level) return false;
  return passesCounty(countyOfAlert(a));
}
for (const [id, key] of [['f-county', 'county'], ['f-hazard', 'hazard'], ['f-level', 'level']])
  $(id).onchange = () => {
    filters[key] = key === 'level' ? Number($(id).value) : $(id).value;
    if (key === 'county') zoomToCounty(filters.county);
    render();
  };
$('f-ended').onchange = () => { filters.ended = $('f-ended').checked; render(); };
function zoomToCounty(code) {
  const f = model.atlas && model.atlas.counties.features.find((c) => c.properties.COUNTYCODE === code);
  if (f) map.fitBounds(L.geoJSON(f).getBounds(), { padding: [20, 20] }); else map.fitBounds(DCBasemap.TAIWAN);
}
function fillHazards() {
  const sel = $('f-hazard'), have = new Set([...sel.options].map((o) => o.value));
  const events = new Set([...model.alerts.values()].map((a) => a.event));
  for (const e of [...events].sort()) if (!have.has(e)) {
    const o = document.createElement('option'); o.value = e; o.textContent = hazardName(e); sel.appendChild(o);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Drawing. The demo's scale (tens of zones and sensors) redraws everything on a change; zones are built once.
const zonePaths = new Map();
const hexes = new Map();   // zone id -> GeoJSON of its H3 cells (the alert's area as shaded)
function drawZones() {
  layers.zones.clearLayers(); zonePaths.clear();
  for (const z of model.zones.values()) {
    if (!z.area) continue;
    const layer = L.geoJSON(z.area, { style: { color: '#345', weight: 1, fillColor: '#5c7c99', fillOpacity: .05 } });
    layer.bindTooltip(textNode([z.name, z.name_en, z.kind]), { sticky: true });
    // Not a Tab stop (Chrome makes any shape with a tooltip one): zones are many, and their alerts are in the list.
    layer.eachLayer((l) => l.on('add', () => { const el = l.getElement(); if (el) { el.dataset.zone = z.id; el.setAttribute('tabindex', '-1'); } }));
    layer.addTo(layers.zones);
    zonePaths.set(z.id, layer);
    // A road segment: its centre line over the buffer, so the road itself is seen.
    if (z.segment && z.segment.type) {
      L.geoJSON(z.segment, { interactive: false, style: { color: '#37474f', weight: 3, opacity: .8, className: 'dc-road' } })
        .eachLayer((l) => l.on('add', () => { const el = l.getElement(); if (el) el.dataset.road = z.id; }))
        .addTo(layers.zones);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Cause and effect: an alert a hazard caused (`caused_by`: a road blocked by the landslide beside it) is drawn as an
// arrow from the cause's area to the nearest point of the road's centre line, in the effect's level colour.
const zoneName = (id) => { const z = model.zones.get(id); return z ? [z.name, z.name_en].filter(Boolean).join(' ') : id; };
const causeOf = (a) => (a && a.caused_by && typeof a.caused_by.area_id === 'string' ? a.caused_by : null);
// The point of a (multi)line nearest to `from` ([lat, lon]), in a local flat projection (a few km: exact enough).
function nearestOnLine(geometry, from) {
  const lines = geometry.type === 'LineString' ? [geometry.coordinates] : geometry.type === 'MultiLineString' ? geometry.coordinates : [];
  const k = Math.cos(from[0] * Math.PI / 180);
  let best = null, bestD = Infinity;
  for (const line of lines) for (let i = 0; i + 1 < line.length; i++) {
    const [ax, ay] = [line[i][0] * k, line[i][1]], [bx, by] = [line[i + 1][0] * k, line[i + 1][1]], [px, py] = [from[1] * k, from[0]];
    const dx = bx - ax, dy = by - ay, len = dx * dx + dy * dy;
    const t = len ? Math.max(0, Math.min(1, ((px - ax) * dx + (py - ay) * dy) / len)) : 0;
    const x = ax + t * dx, y = ay + t * dy, d = (x - px) ** 2 + (y - py) ** 2;
    if (d < bestD) { bestD = d; best = [y, x / k]; }
  }
  return best;
}
// One SVG arrowhead per level colour, defined in the links pane's own SVG (Leaflet gives each pane its renderer).
const SVG_NS = 'http://www.w3.org/2000/svg';
function arrowHead(path, level) {
  const svg = path.ownerSVGElement;
  if (!svg) return;
  const id = `dc-arrow-${level.key}`;
  if (!svg.querySelector(`#${id}`)) {
    const defs = svg.querySelector('defs') || svg.insertBefore(document.createElementNS(SVG_NS, 'defs'), svg.firstChild);
    const marker = document.createElementNS(SVG_NS, 'marker');
    for (const [k, v] of Object.entries({ id, viewBox: '0 0 10 10', refX: '9', refY: '5', markerWidth: '5', markerHeight: '5', orient: 'auto' })) marker.setAttribute(k, v);
    const tip = document.createElementNS(SVG_NS, 'path');
    tip.setAttribute('d', 'M0,0 L10,5 L0,10 z'); tip.setAttribute('fill', level.fill); tip.setAttribute('stroke', '#222'); tip.setAttribute('stroke-width', '.6');
    marker.appendChild(tip); defs.appendChild(marker);
  }
  path.setAttribute('marker-end', `url(#${id})`);
}
function drawLinks() {
  layers.links.clearLayers();
  for (const a of shownAlerts()) {
    const c = causeOf(a);
    if (!c || !isActive(a) || !passes(a)) continue;
    const causing = c.alert ? model.alerts.get(c.alert) : null;
    const road = model.zones.get(a.area_id);
    const from = centreOf((model.zones.get(c.area_id) || {}).area || (causing && causing.area));
    if (!from) continue;
    const to = (road && road.segment && nearestOnLine(road.segment, from)) || centreOf(a.area || (road && road.area));
    if (!to) continue;
    const l = levelOf(a);
    const line = L.polyline([from, to], { pane: 'dcLinks', color: l.fill, weight: 4, opacity: .95, dashArray: '8 5',
      className: 'dc-cause-link' });
    const metres = typeof c.distance_m === 'number' ? `${Math.round(c.distance_m)} m` : '';
    line.bindTooltip(textNode([`${hazardName(c.event)} → ${hazardName(a.event)}`, `${zoneName(c.area_id)} → ${a.area_name || zoneName(a.area_id)}`, metres]), { sticky: true });
    line.on('click', () => select(a.id, false));
    line.on('add', () => {
      const el = line.getElement();
      if (!el) return;
      el.dataset.alert = a.id; el.dataset.cause = c.alert || ''; el.dataset.causeZone = c.area_id; el.dataset.zone = a.area_id;
      el.setAttribute('tabindex', '-1');
      arrowHead(el, l);
    });
    line.addTo(layers.links);
  }
}

// The alerts to draw: live, the book's latest versions; replaying, each alert's version as of that time.
function shownAlerts() {
  if (model.replayAt === null) return [...model.alerts.values()];
  const out = [];
  for (const [id, versions] of model.versions) {
    let best = null;
    for (const v of versions.values()) if (v.ms <= model.replayAt && (!best || v.version > best.version)) best = v;
    if (best) out.push({ ...(model.alerts.get(id) || {}), ...best, id });
  }
  return out;
}

function drawAlerts() {
  layers.alerts.clearLayers();
  // One shape per area, in the colour of its worst alert (translucent shapes stacked would blend into a colour no
  // level has); the others of that area are in the list and in the shape's tooltip.
  const worstByZone = new Map(), othersByZone = new Map();
  for (const a of shownAlerts()) {
    if (!isActive(a) || !passes(a)) continue;
    const w = worstByZone.get(a.area_id);
    if (!w || rankOf(a) > rankOf(w)) worstByZone.set(a.area_id, a);
    if (!othersByZone.has(a.area_id)) othersByZone.set(a.area_id, []);
    othersByZone.get(a.area_id).push(a);
  }
  for (const a of worstByZone.values()) {
    const l = levelOf(a), z = model.zones.get(a.area_id);
    const geometry = hexes.get(a.area_id) || a.area || (z && z.area);
    if (!geometry) continue;
    const layer = L.geoJSON(geometry, {
      style: { color: l.fill, weight: 2, fillColor: l.fill, fillOpacity: .45, className: `dc-alert level-${l.key}` },
    });
    const lines = othersByZone.get(a.area_id).sort((p, q) => rankOf(q) - rankOf(p))
      .map((x) => `${levelOf(x).zh} ${x.headlines ? x.headlines['zh-TW'] : x.headline} · v${x.version} · ${x.state}`);
    layer.bindTooltip(textNode(lines), { sticky: true });
    layer.on('click', () => select(a.id, false));
    layer.eachLayer((p) => p.on('add', () => {
      const el = p.getElement();
      if (el) { el.dataset.alert = a.id; el.dataset.level = l.key; el.dataset.zone = a.area_id; el.setAttribute('tabindex', '-1'); }
    }));
    layer.addTo(layers.alerts);
  }
  // The watched zones take the colour of their worst alert.
  for (const [id, layer] of zonePaths) {
    const a = worstByZone.get(id), l = a && levelOf(a);
    layer.setStyle(a ? { color: l.fill, weight: 2.5, fillColor: l.fill, fillOpacity: .2 }
      : { color: '#345', weight: 1, fillColor: '#5c7c99', fillOpacity: .05 });
  }
}

function alarmedSensors() {
  const set = new Set();
  for (const a of shownAlerts()) if (isActive(a)) (a.sensors || []).forEach((s) => set.add(s));
  return set;
}
function sensorState(s, alarmed) {
  if (model.replayAt !== null && model.history) {
    const pts = model.history.get(s.id);
    if (!pts) return 'unknown';
    const near = pts.some(([ts]) => Math.abs(ts - model.replayAt) <= 30 * 60e3);
    return alarmed.has(s.id) ? 'alarm' : near ? 'online' : 'offline';
  }
  return alarmed.has(s.id) ? 'alarm' : s.status === 'online' ? 'online' : s.status === 'offline' ? 'offline' : 'unknown';
}
function valueAt(id) {
  const pts = model.history && model.history.get(id);
  if (!pts || model.replayAt === null) return null;
  let best = null;
  for (const p of pts) if (p[0] <= model.replayAt) best = p;
  return best;
}
function drawSensors() {
  // Every socket frame redraws the sensors: a keyboard user on one keeps the focus (and their place in the Tab order).
  const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.sensor : null;
  layers.sensors.clearLayers();
  const alarmed = alarmedSensors();
  for (const s of model.sensors.values()) {
    if (s.retired || typeof s.lat !== 'number') continue;
    if (!passesCounty(countyOfPoint(s.lat, s.lon))) continue;
    const state = sensorState(s, alarmed), at = valueAt(s.id);
    const m = L.circleMarker([s.lat, s.lon], { radius: 7, color: '#fff', weight: 1.5, fillColor: SENSOR_COLOUR[state],
      fillOpacity: 1, className: `dc-sensor sensor-${state}` });
    const latest = s.latest ? Object.entries(s.latest).map(([k, v]) => `${k} ${typeof v === 'object' ? JSON.stringify(v) : v}`).join(' · ') : '';
    m.bindTooltip(textNode([`${s.id} · ${s.kind}`, s.agency, state, at ? `${new Date(at[0]).toLocaleTimeString()} → ${at[1]}` : latest]));
    m.on('click', () => showSensor(s.id));
    // Sensors are Tab stops: Enter shows their last 24 h, as a click does.
    m.on('add', () => {
      const el = m.getElement();
      if (!el) return;
      el.dataset.sensor = s.id; el.dataset.state = state;
      el.setAttribute('tabindex', '0'); el.setAttribute('role', 'button'); el.setAttribute('aria-label', `${s.id} ${s.kind} ${state}`);
      el.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); showSensor(s.id); } });
      if (focused === s.id) el.focus({ preventScroll: true });
    });
    m.addTo(layers.sensors);
  }
}

function drawReports() {
  layers.reports.clearLayers();
  const list = $('reports'); list.textContent = '';
  for (const r of model.reports.values()) {
    if (r.state === 'dismissed' || typeof r.lat !== 'number' || !passesCounty(countyOfPoint(r.lat, r.lon))) continue;
    const size = Math.min(22, 9 + 2.5 * Math.log2(r.count || 1));
    const icon = L.divIcon({ className: 'dc-report', iconSize: [size, size],
      html: Object.assign(document.createElement('div'), { style: `width:${size}px;height:${size}px;background:${r.state === 'verified' ? '#6a1b9a' : '#ab47bc'};border:2px solid #fff;box-shadow:0 0 2px #000` }) });
    const m = L.marker([r.lat, r.lon], { icon, keyboard: false, title: '' });
    m.bindTooltip(textNode([`${r.category} ×${r.count}`, r.state, r.last_text || r.text]));
    m.on('add', () => { const el = m.getElement(); if (el) { el.dataset.report = r.id; el.setAttribute('tabindex', '-1'); } });
    m.addTo(layers.reports);
    const li = document.createElement('li'); li.textContent = `${r.category} ×${r.count} · ${r.state}`; list.appendChild(li);
  }
  if (!list.children.length) list.textContent = '—';
}

function drawPartners() {
  layers.partners.clearLayers();
  const list = $('partners'); list.textContent = '';
  for (const e of model.external.values()) {
    // A partner's warning (inbound ExternalAlert): its own geometry, the zones and geocodes it names.
    const geometry = e.geometry && e.geometry.type ? e.geometry : null;
    const zones = e.zone_ids || [];
    const county = (e.geocodes || [])[0] || (zones.length ? (model.zones.get(zones[0]) || {}).geocode : null);
    if (filters.county && !(county ? county.startsWith(filters.county) : (() => { const c = centreOf(geometry); return c && passesCounty(countyOfPoint(c[0], c[1])); })())) continue;
    // Its own polygon when it gave one, else the outlines of the zones it was resolved to.
    const shapes = geometry ? [geometry] : zones.map((z) => (model.zones.get(z) || {}).area).filter(Boolean);
    for (const shape of shapes) {
      const layer = L.geoJSON(shape, { style: { color: '#6a1b9a', weight: 2.5, dashArray: '7 5', fill: true, fillOpacity: .05, className: 'dc-partner' } });
      layer.bindTooltip(textNode([`${e.source || ''}: ${e.headline_zh || e.headline || e.event || ''}`, e.headline_en, e.status]), { sticky: true });
      layer.eachLayer((p) => p.on('add', () => { const el = p.getElement(); if (el) { el.dataset.external = e.id; el.setAttribute('tabindex', '-1'); } }));
      layer.addTo(layers.partners);
    }
    const li = document.createElement('li');
    li.textContent = `${e.source || '?'} · ${e.headline_zh || e.headline || e.event || e.id} · ${e.severity || ''} ${e.status || ''}`;
    list.appendChild(li);
  }
  if (!list.children.length) list.textContent = '—';
}

// Dissemination and the air know public warnings (`W-…`, one per hazard and place), not the rules' alerts: the
// operator frame names an alert's warning in `public.warning`; the snapshot's alerts carry no such note, so the
// snapshot's and later `public_warning` frames' contributors say which warning each alert is behind.
const warningFor = new Map();  // alert id -> public warning id
function learnWarning(w) { for (const c of w.contributors || []) warningFor.set(c.alert_id, w.id); }
function warningOf(a) { return (a.public && a.public.warning) || warningFor.get(a.id) || a.id; }
function alertOfWarning(id) {
  for (const a of model.alerts.values()) if (warningOf(a) === id) return a;
  return model.alerts.get(id);
}

// The cells each carrier's broadcasts reached (the on-air ledger, footprints from the carriers' cell sites): the
// selected alert's, on the air and stopped; with no alert selected, everything on the air now. Fetched again only
// when the ledger's entries for it change (sensor frames redraw the map often).
const cellsDrawn = new Map();  // carrier -> key of what its layer shows
function airEntries(carrier, warning) {
  const live = (model.air.on_air[carrier] || []).filter((e) => !warning || e.alert_id === warning);
  const stopped = warning ? (model.air.history || []).filter((e) => e.carrier === carrier && e.alert_id === warning) : [];
  return live.concat(stopped);
}
function drawCells() {
  const a = model.selected && model.alerts.get(model.selected);
  const warning = a ? warningOf(a) : null;
  for (const carrier of Object.keys(model.air.on_air || {})) {
    const layer = carrierLayer(carrier);
    // Replaying, the ledger says what is on the air now, not then: no cells.
    const entries = model.replayAt === null ? airEntries(carrier, warning) : [];
    const key = `${warning}|${filters.county}|${filters.hazard}|${filters.level}|${filters.ended}|` +
      entries.map((e) => `${e.serial}:${e.state}:${e.cells.length}`).join(',');
    if (cellsDrawn.get(carrier) === key) continue;
    cellsDrawn.set(carrier, key);
    if (!entries.length) { layer.clearLayers(); continue; }
    getJson(`/api/v1/carriers/${encodeURIComponent(carrier)}/cells${warning ? '?alert=' + encodeURIComponent(warning) : ''}`)
      .then((fc) => { if (cellsDrawn.get(carrier) === key) drawCarrierCells(carrier, layer, fc, !warning); })
      .catch(() => cellsDrawn.delete(carrier));
  }
}
function drawCarrierCells(carrier, layer, fc, filtered) {
  layer.clearLayers();
  const colour = carrierColour(carrier);
  const features = (fc.features || []).filter((f) => {
    if (!filtered) return true;
    const a = alertOfWarning(f.properties.alert_id);
    return !a || passes(a);
  });
  if (!features.length) return;
  L.geoJSON({ type: 'FeatureCollection', features }, {
    pane: 'dcCells',
    style: (f) => {
      const live = f.properties.state === 'on_air' || f.properties.state === 'writing';
      return { color: colour, weight: live ? 1.4 : 1, opacity: live ? .9 : .55, dashArray: live ? null : '3 4',
        fillColor: colour, fillOpacity: live ? .14 : .03, className: `dc-cell state-${f.properties.state}` };
    },
    onEachFeature: (f, l) => {
      const p = f.properties;
      l.bindTooltip(textNode([`${carrier} · ${p.cell}`, `${AIR_STATE[p.state] || p.state} · serial ${p.serial} · ${p.message_ids.join('/')}`,
        `TAC ${p.tac} · ${Math.round(p.range_m)} m · ${p.beamwidth_deg >= 360 ? 'omni' : Math.round(p.azimuth_deg) + '°'}`]), { sticky: true });
      l.on('add', () => {
        const el = l.getElement();
        if (el) { el.dataset.carrier = carrier; el.dataset.cell = p.cell; el.dataset.state = p.state; el.dataset.alert = p.alert_id; el.setAttribute('tabindex', '-1'); }
      });
    },
  }).addTo(layer);
}
const AIR_STATE = { writing: '寫入中 writing', on_air: '播送中 ON AIR', stopping: '停止中 stopping', stopped: '已停止 stopped' };

// The selected alert's Warning Area Coordinates (SBc-AP IE 46) as a phone decodes them, over its area.
let geofenceKey = null, geofenceData = null;
function drawGeofence() {
  const a = model.selected && model.alerts.get(model.selected);
  const warning = a && warningOf(a);
  const latest = warning && model.replayAt === null && model.broadcasts.find((b) => b.alert_id === warning && b.kind === 'write_replace' && !b.error);
  const key = latest ? `${warning}:${latest.version}:${latest.serial}:${latest.area_id}` : null;
  if (key === geofenceKey) return;
  geofenceKey = key; geofenceData = null;
  layers.geofence.clearLayers();
  const shown = $('detail-geofence');
  if (shown) renderGeofence(shown);
  if (!key) return;
  getJson(`/api/v1/broadcasts/${encodeURIComponent(warning)}/warning-area`).then((w) => {
    if (geofenceKey !== key) return;
    geofenceData = w;
    L.geoJSON(w.geometry, { pane: 'dcGeofence', interactive: false,
      style: { color: '#111', weight: 2.2, dashArray: '10 4 2 4', fill: false, className: 'dc-geofence' } })
      .eachLayer((l) => l.on('add', () => { const el = l.getElement(); if (el) { el.dataset.alert = warning; el.dataset.zone = w.zone; } }))
      .addTo(layers.geofence);
    const box = $('detail-geofence');
    if (box) renderGeofence(box);
  }).catch(() => { if (geofenceKey === key) geofenceKey = null; });
}

// ---------------------------------------------------------------------------------------------------------------
// The alert list: one button per alert, arrow keys move between them, Enter opens the detail panel.
function renderList() {
  const list = $('alerts');
  // The list is rebuilt on changes: keep the keyboard focus on the alert it was on.
  const focused = list.contains(document.activeElement) ? document.activeElement.dataset.alertId : null;
  list.textContent = '';
  const alerts = shownAlerts().filter(passes).sort((p, q) => (isActive(q) - isActive(p)) || rankOf(q) - rankOf(p) || String(q.sent).localeCompare(String(p.sent)));
  $('alert-count').textContent = `(${alerts.length})`;
  for (const a of alerts) {
    const l = levelOf(a), li = document.createElement('li'), b = document.createElement('button');
    b.type = 'button'; b.className = `alert ${a.severity} ${a.state}`; b.dataset.alertId = a.id; b.dataset.level = l.key;
    b.dataset.rule = a.rule || '';
    b.style.setProperty('--level', l.fill); b.style.setProperty('--ink', l.ink);
    if (model.selected === a.id) b.setAttribute('aria-current', 'true');
    const chip = document.createElement('span'); chip.className = 'chip'; chip.textContent = `${l.zh} ${l.en}`; b.appendChild(chip);
    if (a.mode && a.mode !== 'Actual') { const d = document.createElement('span'); d.className = 'drill'; d.textContent = a.mode === 'Exercise' ? '演練 DRILL' : '測試 TEST'; b.append(d, ' '); }
    if (a.held) { const h = document.createElement('span'); h.className = 'held'; h.textContent = '未公開 held'; b.append(h, ' '); }
    const t = document.createElement('b'); t.textContent = a.headlines ? a.headlines['zh-TW'] : a.headline; b.appendChild(t);
    if (a.headlines) { b.appendChild(document.createElement('br')); b.append(a.headlines.en); }
    const meta = document.createElement('div'); meta.className = 'meta';
    meta.textContent = `${a.state} · v${a.version} · ${hazardName(a.event)} · ${a.sent}${a.acknowledged_by ? ' · ack ' + a.acknowledged_by : ''}`;
    b.appendChild(meta);
    b.onclick = () => select(a.id, true);
    b.onkeydown = (ev) => {
      const items = [...list.querySelectorAll('button.alert')], i = items.indexOf(b);
      if (ev.key === 'ArrowDown' && items[i + 1]) { items[i + 1].focus(); ev.preventDefault(); }
      if (ev.key === 'ArrowUp' && items[i - 1]) { items[i - 1].focus(); ev.preventDefault(); }
    };
    li.appendChild(b); list.appendChild(li);
    if (focused === a.id) b.focus();
  }
  if (!alerts.length) { const li = document.createElement('li'); li.textContent = '沒有符合的警報 No alerts match'; list.appendChild(li); }
}

function render() {
  fillHazards();
  drawAlerts(); drawLinks(); drawSensors(); drawReports(); drawPartners(); drawCells(); drawGeofence(); renderList(); renderOnAir();
  // The panel is rebuilt only when its alert changed: a note being typed survives sensor updates.
  const a = model.selected && model.alerts.get(model.selected);
  if (a && detailKey(a) !== model.detailKey) renderDetail();
}
const detailKey = (a) => `${a.id}:${a.version}:${a.state}:${(a.comments || []).length}:${a.acknowledged_by}:${a.approved_by}:${model.scope}`;

// ---------------------------------------------------------------------------------------------------------------
// The detail panel: the alert, its history, its CAP messages, its deliveries with outcomes, its broadcasts per
// carrier, and the actions the token's scope allows.
function select(id, fly) {
  model.selected = id;
  const a = model.alerts.get(id);
  if (fly && a) {
    const g = hexes.get(a.area_id) || a.area || (model.zones.get(a.area_id) || {}).area;
    if (g) { const b = L.geoJSON(g).getBounds(); if (b.isValid()) map.fitBounds(b, { maxZoom: 13, padding: [40, 40] }); }
  }
  renderList(); renderDetail(true); drawCells(); drawGeofence();
}

function el(tag, text, cls) { const e = document.createElement(tag); if (text !== undefined && text !== null) e.textContent = String(text); if (cls) e.className = cls; return e; }
function table(head, rows) {
  const t = el('table'), tr = el('tr');
  head.forEach((h) => tr.appendChild(el('th', h)));
  t.appendChild(tr);
  for (const r of rows) { const row = el('tr'); r.forEach((c) => { const td = el('td'); if (c instanceof Node) td.appendChild(c); else td.textContent = c === null || c === undefined ? '' : String(c); row.appendChild(td); }); t.appendChild(row); }
  return t;
}
const when = (ms) => (ms ? new Date(ms).toLocaleString('zh-TW', { hour12: false }) : '');
const outcome = (status) => {
  const s = String(status || '');
  return el('span', s, /delivered|acked|ack|ok|sent/i.test(s) ? 'ok' : /dead|fail|error|refused/i.test(s) ? 'bad' : 'wait');
};

function renderDetail(focus) {
  const box = $('detail'), a = model.alerts.get(model.selected);
  if (!a) { box.hidden = true; return; }
  box.hidden = false; box.textContent = '';
  model.detailKey = detailKey(a);
  box.dataset.alertId = a.id;
  const l = levelOf(a);
  const top = el('div');
  const close = el('button', '✕ 關閉 Close'); close.type = 'button'; close.style.float = 'right';
  close.onclick = closeDetail; top.appendChild(close);
  const chip = el('span', `${l.zh} ${l.en}`, 'chip'); chip.style.setProperty('--level', l.fill); chip.style.setProperty('--ink', l.ink);
  top.appendChild(chip);
  if (a.mode && a.mode !== 'Actual') top.appendChild(el('span', a.mode === 'Exercise' ? '演練 DRILL' : '測試 TEST', 'drill'));
  box.appendChild(top);
  box.appendChild(el('h3', a.headlines ? a.headlines['zh-TW'] : a.headline));
  if (a.headlines) box.appendChild(el('div', a.headlines.en));
  box.appendChild(table(['', ''], [
    ['狀態 State', `${a.state} · v${a.version}`],
    ['等級 Level', `${a.level} (${a.severity} · ${a.urgency} · ${a.certainty})`],
    ['災害 Hazard', `${hazardName(a.event)} · rule ${a.rule}`],
    ['區域 Area', `${a.area_name} (${a.area_id})`],
    ['發布 Sent', a.sent], ['觀測 Observed', a.observed || ''],
    ['數值 Value', a.value], ['感測器 Sensors', (a.sensors || []).join(', ')],
    ['確認 Ack', a.acknowledged_by || '—'], ['核准 Approved', a.approved_by || '—'],
    ['取消 Cancelled', a.cancelled_by || '—'], ['未公開 Held', a.held || '—'],
  ]));
  renderCause(a, box);

  // Actions: only those this token's scope allows; a read token sees none (and the socket would refuse them).
  const actions = el('div', null, 'actions');
  actions.id = 'actions';
  if (mayOperate() && isActive(a)) {
    for (const [cmd, label] of [['ack', '確認 Acknowledge'], ['approve', '核准發布 Approve'], ['cancel', '取消 Cancel']]) {
      const b = el('button', label); b.type = 'button'; b.dataset.action = cmd;
      b.onclick = () => {
        if (cmd === 'cancel' && !confirm('取消這個警報？ Cancel this alert for everyone?')) return;
        command({ type: cmd, id: a.id });
      };
      actions.appendChild(b);
    }
    const note = el('input'); note.type = 'text'; note.maxLength = 500; note.placeholder = '備註 Note'; note.setAttribute('aria-label', '備註 Note');
    const add = el('button', '加註 Comment'); add.type = 'button'; add.dataset.action = 'comment';
    add.onclick = () => { if (note.value.trim()) { command({ type: 'comment', id: a.id, text: note.value }); note.value = ''; } };
    actions.append(note, add);
  } else if (!mayOperate()) {
    actions.appendChild(el('small', '此權杖僅能檢視 This token may watch, not act (read scope).'));
  }
  box.appendChild(actions);
  const result = el('div'); result.id = 'action-result'; result.setAttribute('role', 'status'); box.appendChild(result);

  // History: every version seen (socket and CAP feed) and operators' notes.
  box.appendChild(el('h3', '歷程 History'));
  const versions = [...(model.versions.get(a.id) || new Map()).values()].sort((p, q) => q.version - p.version);
  const hist = table(['v', '時間 Sent', '狀態 State', '等級 Level', 'CAP'], versions.map((v) => {
    // Only our own CAP paths become links (`/cap/<id>.<version>.xml`): nothing from a frame becomes a script URL.
    // A version held from the public has no released CAP message: no link to a 404.
    const ok = !v.held && typeof v.cap === 'string' && /^\/cap\/[\w.-]+\.xml$/.test(v.cap);
    const link = el('a', ok ? v.cap.slice(5) : '');
    if (ok) { link.href = v.cap; link.target = '_blank'; link.rel = 'noopener'; }
    return [`v${v.version}`, v.sent, `${v.state}${v.held ? ' · 未公開 held' : ''}${v.approved_by ? ' · 核准 ' + v.approved_by : ''}`, v.level || v.severity || '', link];
  }));
  hist.id = 'history'; box.appendChild(hist);
  if ((a.comments || []).length) {
    box.appendChild(el('h3', '備註 Notes'));
    box.appendChild(table(['時間 At', '誰 By', '內容 Text'], a.comments.map((c) => [c.at, c.by, c.text])));
  }

  // Broadcasts (carriers) and deliveries (webhooks, carriers, push) with outcomes.
  const bc = el('div'); bc.id = 'detail-broadcasts'; box.appendChild(el('h3', '細胞廣播 Cell broadcast')); box.appendChild(bc);
  const dl = el('div'); dl.id = 'deliveries'; box.appendChild(el('h3', '傳送 Deliveries')); box.appendChild(dl);
  renderBroadcastsOf(a, bc);
  loadDeliveries(a, dl);
  loadVersions(a);
  if (focus) box.focus();
}
// Cause and effect in the panel: what caused this alert (a link selects the causing alert while it is known), and
// the alerts this one caused.
function alertLink(id, text) {
  const link = el('a', text);
  link.href = `/?alert=${encodeURIComponent(id)}`; link.dataset.alertId = id;
  link.onclick = (ev) => { ev.preventDefault(); select(id, true); };
  return link;
}
function renderCause(a, box) {
  const c = causeOf(a);
  if (c) {
    const p = el('p'); p.id = 'detail-cause';
    p.appendChild(el('b', '起因 Caused by: '));
    const what = `${hazardName(c.event)} · ${zoneName(c.area_id)}${typeof c.distance_m === 'number' ? ` · ${Math.round(c.distance_m)} m` : ''} · rule ${c.rule}`;
    if (c.alert && model.alerts.has(c.alert)) p.appendChild(alertLink(c.alert, what));
    else p.append(what, el('small', c.alert ? ` (${c.alert})` : ' （已結束 ended）'));
    box.appendChild(p);
  }
  const effects = [...model.alerts.values()].filter((x) => isActive(x) && causeOf(x) && causeOf(x).alert === a.id);
  if (effects.length) {
    const p = el('p'); p.id = 'detail-effects';
    p.appendChild(el('b', '導致 Led to: '));
    effects.forEach((x, i) => { if (i) p.append(' · '); p.appendChild(alertLink(x.id, `${hazardName(x.event)} · ${x.area_name || zoneName(x.area_id)}`)); });
    box.appendChild(p);
  }
}
// Earlier versions of an alert the page did not see live. The CAP archive holds public warnings (`W-…`, one chain
// per hazard and place), not the rules' alert versions: a version not seen on the socket is listed without a time, and
// the public side is the warning's own CAP chain (linked from the versions seen live). At most the last 30.
const versionsLoaded = new Set();
async function loadVersions(a) {
  const key = `${a.id}:${a.version}`;
  if (versionsLoaded.has(key)) return;
  versionsLoaded.add(key);
  if (!model.versions.has(a.id)) model.versions.set(a.id, new Map());
  const known = model.versions.get(a.id);
  let added = false;
  for (let v = Math.max(1, a.version - 30); v < a.version; v++) {
    if (known.has(v)) continue;
    known.set(v, { version: v, sent: '', ms: NaN, state: '較早版本 earlier version (not seen live)', area_id: a.area_id });
    added = true;
  }
  if (added && model.selected === a.id) { model.detailKey = null; renderDetail(); }
  if (added) renderTimeline();
}
function closeDetail() {
  const id = model.selected; model.selected = null; $('detail').hidden = true; renderList(); drawCells(); drawGeofence();
  const b = document.querySelector(`button.alert[data-alert-id="${CSS.escape(id || '')}"]`); if (b) b.focus();
}
document.addEventListener('keydown', (ev) => { if (ev.key === 'Escape' && model.selected) closeDetail(); });

// The carrier panel: per carrier, where the alert's broadcast stands on its air (the on-air ledger: serial, message
// identifiers, state, cells, on the air since) and its targeting figures, cell level beside geofenced (what a phone
// that checks its position against the Warning Area Coordinates experiences). Each carrier's switch shows or hides its
// cells on the map (the same layer as the map's layer control).
const hex4 = (n) => `0x${Number(n).toString(16).padStart(4, '0')}`;
const km2 = (v) => (typeof v === 'number' ? v.toFixed(2) : '—');
const metres = (v) => (typeof v === 'number' ? String(Math.round(v)) : '—');
function field(name, value, cls) { const td = el('td', value, cls); td.dataset.field = name; return td; }
function row(head, ...cells) { const tr = el('tr'); tr.appendChild(el('th', head)); cells.forEach((c) => tr.appendChild(c)); return tr; }
function figure(name, value, text) { const td = el('td', text); td.dataset.figure = name; if (typeof value === 'number') td.dataset.value = String(value); return td; }
function latestEntry(carrier, warning) {
  const newest = (list) => list.sort((p, q) => (q.queued_ms || 0) - (p.queued_ms || 0))[0];
  return newest((model.air.on_air[carrier] || []).filter((e) => e.alert_id === warning))
    || newest((model.air.history || []).filter((e) => e.carrier === carrier && e.alert_id === warning));
}
function carrierCard(carrier, warning, mine) {
  const entry = latestEntry(carrier, warning);
  const writes = mine.filter((b) => b.kind === 'write_replace');
  const record = (entry && writes.find((b) => b.serial === entry.serial && b.message_ids[0] === entry.message_ids[0])) || writes[0];
  const part = record && (record.carriers || []).find((c) => c.carrier === carrier);
  if (!entry && !part) return null;
  const card = el('section', null, 'carrier'); card.dataset.carrier = carrier;
  card.style.setProperty('--carrier', carrierColour(carrier));
  const head = el('div', null, 'carrier-head'), label = el('label'), cb = el('input');
  cb.type = 'checkbox'; cb.dataset.layer = carrier; cb.checked = map.hasLayer(carrierLayer(carrier));
  cb.setAttribute('aria-label', `在地圖顯示 ${carrier} 的細胞 Show ${carrier}'s cells on the map`);
  cb.onchange = () => { const l = carrierLayer(carrier); if (cb.checked) map.addLayer(l); else map.removeLayer(l); };
  label.append(cb, ' ', el('b', carrier));
  const state = entry ? entry.state : part.status === 'failed' ? 'failed' : 'pending';
  const badge = el('span', AIR_STATE[state] || (state === 'failed' ? '失敗 failed' : '排隊 queued'), `air-state ${state}`);
  badge.dataset.state = state;
  head.append(label, ' ', badge);
  card.appendChild(head);
  const air = el('table', null, 'air');
  if (entry) {
    air.append(
      row('序號 Serial', field('serial', `${hex4(entry.serial)} (${entry.serial}) · code ${entry.message_code} · update ${entry.update_number}`)),
      row('訊息代碼 Message ID', field('message-ids', entry.message_ids.join(' / '))),
      row('細胞 Cells', field('cells', entry.cells.length)),
      row('播送自 On air since', field('on-air-since', entry.on_air_ms ? when(entry.on_air_ms) : `— (${AIR_STATE[entry.state] || entry.state} since ${when(entry.queued_ms)})`)),
    );
    if (entry.stopped_ms) air.append(row('停止 Stopped', field('stopped', when(entry.stopped_ms))));
    if (entry.write_failed || entry.stop_failed) air.append(row('注意 Note', field('failed', entry.stop_failed ? '停止失敗 stop went to dead letters: replay it' : '寫入失敗 write went to dead letters', 'bad')));
  } else {
    air.append(row('細胞 Cells', field('cells', part.cells)));
    if (part.detail || record.error) air.append(row('細節 Detail', field('detail', String(part.detail || record.error).slice(0, 160), 'bad')));
  }
  card.appendChild(air);
  const t = part && part.targeting;
  if (t) {
    const g = t.geofenced;
    const fig = el('table', null, 'overshoot');
    const top = el('tr'); ['', '溢出 Overshoot', '最遠 Farthest', 'WEA'].forEach((h) => top.appendChild(el('th', h)));
    const wea = (ok) => el('td', ok ? '✓' : '✗', ok ? 'ok' : 'bad');
    const cellRow = row('細胞層級 Cell level', figure('overshoot_km2', t.overshoot_km2, `${km2(t.overshoot_km2)} km²`),
      figure('farthest_overshoot_m', t.farthest_overshoot_m, `${metres(t.farthest_overshoot_m)} m`), wea(t.meets_wea));
    cellRow.dataset.level = 'cell';
    fig.append(top, cellRow);
    if (g) {
      const fenced = row('地理圍欄 Geofenced', figure('overshoot_km2', g.overshoot_km2, `${km2(g.overshoot_km2)} km²`),
        figure('farthest_overshoot_m', g.farthest_overshoot_m, `${metres(g.farthest_overshoot_m)} m`), wea(g.meets_wea));
      fenced.dataset.level = 'geofenced';
      fig.appendChild(fenced);
    }
    card.appendChild(fig);
    const note = `涵蓋 Covers ${(t.covered_share * 100).toFixed(0)}% of ${km2(t.area_km2)} km² · WEA ≤ 161 m` +
      (part.warning_area_octets ? ` · IE 46 ${part.warning_area_octets} octets` : ' · 未送地理圍欄 no geofence sent');
    card.appendChild(el('small', note));
  } else if (part && part.delivery_id !== null && record.kind === 'write_replace') {
    card.appendChild(el('small', '涵蓋計算中 Targeting figures on their way…'));
  }
  return card;
}
function renderGeofence(box) {
  box.textContent = '';
  const label = el('label'), cb = el('input');
  cb.type = 'checkbox'; cb.dataset.layer = 'geofence'; cb.checked = map.hasLayer(layers.geofence);
  cb.onchange = () => { if (cb.checked) map.addLayer(layers.geofence); else map.removeLayer(layers.geofence); };
  label.append(cb, ' ', el('b', '地理圍欄 Geofence (IE 46)'));
  box.appendChild(label);
  const a = model.selected && model.alerts.get(model.selected);
  const w = geofenceData && a && geofenceData.alert_id === warningOf(a) ? geofenceData : null;
  if (!w) { box.append(geofenceKey ? ' …' : ' — 無 none (no write-replace in memory)'); return; }
  const sent = (w.sent_by || []).map((s) => s.carrier);
  const text = el('div', `${w.vertices} 頂點 vertices · ${w.octets} octets · ≤ ${metres(w.worst_displacement_m)} m 外擴 beyond the zone · ` +
    (sent.length ? `送出 sent by ${sent.join(', ')}` : '未送出 not sent (carriers opted out)'));
  text.dataset.field = 'geofence'; box.appendChild(text);
}
let broadcastsKey = null;
function renderBroadcastsOf(a, box) {
  const warning = warningOf(a);
  const mine = model.broadcasts.filter((b) => b.alert_id === a.id || b.alert_id === warning);
  const carriers = [...new Set(Object.keys(model.air.on_air || {}).concat(mine.flatMap((b) => (b.carriers || []).map((c) => c.carrier))))];
  // Rebuilt only when what it shows changed: a keyboard user on a switch keeps the focus through the 5 s polls.
  const key = JSON.stringify([a.id, mine, carriers.map((c) => latestEntry(c, warning) || null)]);
  if (key === broadcastsKey && box.childElementCount) return;
  broadcastsKey = key;
  box.textContent = '';
  if (!model.broadcastsLoaded) { box.textContent = '…'; return; }
  if (!mine.length && !carriers.some((c) => latestEntry(c, warning))) { box.textContent = '無 None (not broadcast, or not held in memory any more)'; return; }
  for (const c of carriers) { const card = carrierCard(c, warning, mine); if (card) box.appendChild(card); }
  const fence = el('div'); fence.id = 'detail-geofence'; box.appendChild(fence); renderGeofence(fence);
  if (mine[0] && mine[0].texts && mine[0].texts.length) box.appendChild(el('div', mine[0].texts.join(' / '), 'texts'));
  // Every broadcast planned for it (writes and stops, each carrier's outcome), folded away.
  const rows = [];
  for (const b of mine) for (const c of b.carriers || []) {
    const who = el('div'); who.append(el('b', c.carrier), el('div', `${b.kind} · ${b.class} · ${b.reason || ''}`));
    const result = el('div'); result.appendChild(outcome(c.status));
    if (c.attempts > 1) result.append(` ×${c.attempts}`);
    if (c.detail || b.error) result.appendChild(el('div', String(c.detail || b.error).slice(0, 120)));
    rows.push([`v${b.version}`, who, c.cells, `${hex4(b.serial)}`, result]);
  }
  if (rows.length) {
    const more = el('details'); more.appendChild(el('summary', `每次廣播 Each broadcast (${mine.length})`));
    const t = table(['v', '電信 Carrier', '細胞 Cells', '序號 Serial', '結果 Outcome'], rows);
    t.className = 'carriers'; more.appendChild(t); box.appendChild(more);
  }
}
async function loadDeliveries(a, box, quiet) {
  if (!quiet) box.textContent = '…';
  try {
    const subs = await getJson('/api/v1/subscribers');
    const targets = (subs.subscribers || []).map((s) => s.name);
    for (const b of model.broadcasts) for (const c of b.carriers || []) targets.push(`cbc:${c.carrier}`);
    const rows = [];
    for (const target of [...new Set(targets)]) {
      const log = await getJson(`/api/v1/subscribers/${encodeURIComponent(target)}/deliveries`).catch(() => ({ deliveries: [] }));
      for (const d of log.deliveries || []) if (d.alert_id === a.id || d.alert_id === warningOf(a)) rows.push(d);
    }
    if (model.selected !== a.id) return;
    box.textContent = '';
    if (!rows.length) { box.textContent = '無 None yet'; return; }
    rows.sort((p, q) => q.enqueued_ms - p.enqueued_ms);
    box.appendChild(table(['對象 Target', 'v', '結果 Outcome', '時間 At', '細節 Detail'], rows.map((d) => {
      let replay = '';
      if (mayOperate() && /dead/i.test(String(d.status))) {
        replay = el('button', '重送 Replay'); replay.type = 'button';
        replay.onclick = async () => {
          const r = await fetch(`/api/v1/subscribers/${encodeURIComponent(d.target)}/deliveries/${d.id}/replay`, { method: 'POST', headers: auth });
          say(r.ok ? '已重新排入 Replay queued' : `replay: ${(await r.json()).message}`); loadDeliveries(a, box);
        };
      }
      const result = el('div'); result.appendChild(outcome(d.status));
      result.append(`${d.http_status ? ' · ' + d.http_status : ''}${d.attempts > 1 ? ' · ×' + d.attempts : ''}`);
      const detail = el('div', (d.detail || '').slice(0, 200));
      if (replay) detail.appendChild(replay);
      return [d.target, `v${d.version}`, result, when(d.last_attempt_ms || d.enqueued_ms), detail];
    })));
    box.querySelector('table').classList.add('deliveries');
  } catch (e) {
    box.textContent = `無法取得 Unavailable: ${e.message}`;
  }
}
// What is on the air now, per carrier (the on-air ledger): every serial written and not seen stopped.
let onAirKey = null;
function renderOnAir() {
  const box = $('onair');
  // Rebuilt only when the ledger changed (every socket frame renders): a keyboard user on a link keeps the focus.
  const key = JSON.stringify([model.air.on_air, [...model.alerts.values()].map((a) => `${a.id}:${a.version}`)]);
  if (key === onAirKey) return;
  onAirKey = key; box.textContent = '';
  const carriers = Object.keys(model.air.on_air || {});
  if (!carriers.length) { box.textContent = '無 Nothing broadcast'; return; }
  const rows = [];
  for (const carrier of carriers) {
    const entries = model.air.on_air[carrier] || [];
    if (!entries.length) { rows.push([carrier, '—', '', '']); continue; }
    for (const e of entries) {
      const a = alertOfWarning(e.alert_id);
      const badge = el('span', AIR_STATE[e.state] || e.state, e.state === 'on_air' ? 'onair' : 'wait');
      const what = a ? el('a', a.headlines ? a.headlines['zh-TW'] : a.headline) : el('span', e.alert_id);
      if (a) { what.href = '#'; what.onclick = (ev) => { ev.preventDefault(); select(a.id, true); }; }
      rows.push([carrier, badge, what, `${hex4(e.serial)} · ${e.message_ids.join('/')} · ${e.cells.length} cells${e.on_air_ms ? ' · ' + when(e.on_air_ms) : ''}`]);
    }
  }
  const t = table(['電信 Carrier', '', '警報 Alert', ''], rows); t.id = 'onair-table'; box.appendChild(t);
}

// ---------------------------------------------------------------------------------------------------------------
// Sensors: a click shows the last 24 h from the store (history API).
async function showSensor(id) {
  const s = model.sensors.get(id), box = $('sensor');
  box.textContent = `${id} · ${s.kind} · ${s.agency || ''} · ${s.status}`;
  const metric = Object.keys(s.latest || {})[0];
  if (!metric) return;
  const to = Date.now(), from = to - 24 * 3600e3;
  const j = await getJson(`/api/v1/sensors/${encodeURIComponent(id)}/readings?metric=${encodeURIComponent(metric)}&from=${from}&to=${to}&step=600000`).catch(() => null);
  const pts = j ? points(j, metric) : [];
  if (!pts.length) { box.append(' — 無紀錄 no history'); return; }
  const max = Math.max(...pts.map((p) => p[1]), 1e-9), NS = 'http://www.w3.org/2000/svg';
  const sv = document.createElementNS(NS, 'svg'), pl = document.createElementNS(NS, 'polyline');
  sv.setAttribute('viewBox', '0 0 300 90'); sv.setAttribute('preserveAspectRatio', 'none'); sv.setAttribute('class', 'spark');
  pl.setAttribute('points', pts.map(([t, v]) => `${((t - from) / (to - from) * 300).toFixed(1)},${(88 - v / max * 84).toFixed(1)}`).join(' '));
  pl.setAttribute('fill', 'none'); pl.setAttribute('stroke', '#1565c0'); pl.setAttribute('stroke-width', 1.5);
  sv.appendChild(pl); box.appendChild(document.createElement('br')); box.append(`${metric} (max ${max})`); box.appendChild(sv);
}
const points = (j, metric) => (j.points || j.buckets || []).map((p) => [p.ts, p.value ?? (metric === 'rain_mm' ? p.sum : p.mean)]).filter((p) => typeof p[1] === 'number');

// ---------------------------------------------------------------------------------------------------------------
// Timeline: the last 24 h. Alert versions come from the CAP feed (released messages in the store) and the socket;
// sensors' readings from the history API. Moving the slider replays the map at that time; Live returns.
const tl = $('tl');
const tlFrom = () => Date.now() - 24 * 3600e3;
function tlTime() { return tlFrom() + Number(tl.value) * 60e3; }
async function loadHistory() {
  if (model.history) return;
  model.history = new Map();
  const to = Date.now(), from = to - 24 * 3600e3;
  await Promise.all([...model.sensors.values()].map(async (s) => {
    const metric = Object.keys(s.latest || {})[0];
    if (!metric) return;
    const j = await getJson(`/api/v1/sensors/${encodeURIComponent(s.id)}/readings?metric=${encodeURIComponent(metric)}&from=${from}&to=${to}&step=300000`).catch(() => null);
    if (j) model.history.set(s.id, points(j, metric));
  }));
}
async function loadFeed() {
  // Released versions of every alert, from the CAP feed: each entry links `/cap/<alert id>.<version>.xml` (`alert.cap`).
  try {
    const r = await fetch('/cap/feed.atom', { headers: auth });
    if (!r.ok) return;
    const xml = new DOMParser().parseFromString(await r.text(), 'application/xml');
    for (const entry of xml.getElementsByTagName('entry')) {
      const text = (tag) => { const n = entry.getElementsByTagName(tag)[0]; return n ? n.textContent : ''; };
      const link = [...entry.getElementsByTagName('link')].map((n) => n.getAttribute('href') || '').find((h) => h.endsWith('.xml')) || '';
      const file = decodeURIComponent(link.split('/').pop() || '').replace(/\.xml$/, '');
      const m = /^(.*)\.(\d+)$/.exec(file), cap = `/cap/${file}.xml`;
      if (!m) continue;
      const [, id, v] = m, version = Number(v);
      if (!model.versions.has(id)) model.versions.set(id, new Map());
      const known = model.versions.get(id);
      if (known.has(version)) continue;
      const title = text('title'), updated = text('updated');
      const current = model.alerts.get(id) || {};
      const level = Object.keys(LEVEL_RANK).sort((p, q) => q.length - p.length).find((name) => title.includes(name));
      known.set(version, { version, sent: updated, ms: Date.parse(updated), state: /解除|Cleared/i.test(title) ? 'cleared' : /取消|Cancel/i.test(title) ? 'cancelled' : version === 1 ? 'raised' : 'updated',
        level: level || current.level, severity: current.severity, headline: title, cap, event: current.event, area_id: current.area_id });
    }
  } catch (_) { /* the feed is optional: live frames still fill the timeline */ }
}
function renderTimeline() {
  const list = $('tl-events'); list.textContent = '';
  const from = tlFrom(), events = [];
  for (const [id, versions] of model.versions) for (const v of versions.values())
    if (v.ms >= from) events.push({ ms: v.ms, id, v });  // NaN (a held version's time is unknown) never passes
  events.sort((p, q) => q.ms - p.ms);
  for (const e of events.slice(0, 60)) {
    const li = el('li', `${new Date(e.ms).toLocaleTimeString('zh-TW', { hour12: false })} v${e.v.version} ${e.v.state} ${e.v.level || ''} ${(model.zones.get(e.v.area_id) || {}).name || e.v.area_id || ''}`);
    li.dataset.alertId = e.id; li.dataset.version = e.v.version;
    li.style.setProperty('--level', LEVELS[LEVEL_RANK[e.v.level] || SEVERITY_RANK[e.v.severity] || 1].fill);
    list.appendChild(li);
  }
}
function setReplay(ms) {
  model.replayAt = ms;
  $('tl-live').disabled = ms === null;
  replayBanner.hidden = ms === null;
  if (ms !== null) replayBanner.textContent = `回放 Replay ${new Date(ms).toLocaleString('zh-TW', { hour12: false })}`;
  $('tl-time').textContent = ms === null ? '即時 live' : new Date(ms).toLocaleTimeString('zh-TW', { hour12: false });
  if (ms === null) tl.value = tl.max;
  render();
}
tl.oninput = async () => {
  await loadHistory();
  setReplay(Number(tl.value) >= Number(tl.max) ? null : tlTime());
};
$('tl-live').onclick = () => setReplay(null);
let playing = null;
$('tl-play').onclick = async () => {
  if (playing) { clearInterval(playing); playing = null; $('tl-play').textContent = '▶ 回放 Replay'; return; }
  await loadHistory(); await loadFeed(); renderTimeline();
  tl.value = 0; setReplay(tlTime());
  $('tl-play').textContent = '❚❚ 暫停 Pause';
  playing = setInterval(() => {
    tl.value = Number(tl.value) + 15;
    if (Number(tl.value) >= Number(tl.max)) { clearInterval(playing); playing = null; $('tl-play').textContent = '▶ 回放 Replay'; setReplay(null); }
    else setReplay(tlTime());
  }, 250);
};

// ---------------------------------------------------------------------------------------------------------------
// Talking to the server.
async function getJson(path) {
  const r = await fetch(path, { headers: auth });
  if (!r.ok) throw new Error(`${r.status}`);
  return r.json();
}
function say(text) { const r = $('action-result'); if (r) r.textContent = text; }
let ws = null;
function command(frame) { if (ws && ws.readyState === 1) ws.send(JSON.stringify(frame)); else say('未連線 Not connected'); }
let broadcastTimer = null;
function refreshBroadcasts() {
  clearTimeout(broadcastTimer);
  broadcastTimer = setTimeout(async () => {
    try {
      const j = await getJson('/api/v1/broadcasts');
      model.broadcasts = j.broadcasts || []; model.air = { on_air: j.on_air || {}, history: j.history || [] };
      model.broadcastsLoaded = true;
    } catch (_) { model.broadcasts = []; model.air = { on_air: {}, history: [] }; }
    drawCells(); drawGeofence(); renderOnAir();
    if (model.selected) {
      const a = model.alerts.get(model.selected), bc = $('detail-broadcasts'), dl = $('deliveries');
      if (a && bc) renderBroadcastsOf(a, bc);
      if (a && dl) loadDeliveries(a, dl, true);
    }
  }, 300);
}
// Deliveries and broadcasts are not on the socket: polled while the page is open.
setInterval(refreshBroadcasts, 5000);
async function loadHexes(zoneId) {
  if (!zoneId || hexes.has(zoneId)) return;
  hexes.set(zoneId, null);
  try { hexes.set(zoneId, await getJson(`/api/v1/zones/${encodeURIComponent(zoneId)}/cells`)); render(); } catch (_) { hexes.delete(zoneId); }
}

function setStatus(text, cls) { const s = $('status'); s.textContent = text; s.className = cls || ''; }
function connect() {
  ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws/operator?token=${encodeURIComponent(token)}`);
  ws.onopen = () => setStatus('即時 live', 'live');
  ws.onclose = () => { setStatus('斷線，重新連線中 disconnected — retrying', 'down'); setTimeout(connect, 2000); };
  ws.onmessage = (ev) => {
    const m = JSON.parse(ev.data);
    if (m.type === 'snapshot') {
      model.scope = m.scope || null; model.operator = m.operator || null; model.mode = m.mode || '';
      $('who').textContent = model.scope ? `${model.operator || ''} · ${model.scope}` : '';
      $('mode').textContent = model.mode && model.mode !== 'Actual' ? `${model.mode === 'Exercise' ? '演練 DRILL' : '測試 TEST'} mode` : '';
      model.tileUrl = m.tile_url || '';
      DCBasemap.tiles(map, model.tileUrl);
      model.zones = new Map(m.zones.map((z) => [z.id, z]));
      model.sensors = new Map(m.sensors.map((s) => [s.id, s]));
      model.alerts = new Map(m.alerts.map((a) => [a.id, a]));
      m.alerts.forEach(remember);
      model.reports = new Map((m.reports || []).map((r) => [r.id, r]));
      model.external = new Map((m.external_alerts || []).map((e) => [e.id, e]));
      (m.public_warnings || []).forEach(learnWarning);
      drawZones();
      m.alerts.forEach((a) => loadHexes(a.area_id));
      refreshBroadcasts(); loadFeed().then(renderTimeline);
      // CAP messages link `/?alert=<id>` (`<web>`): open that alert's panel.
      const wanted = new URLSearchParams(location.search).get('alert');
      if (wanted && model.alerts.has(wanted) && !model.selected) select(wanted, true);
    } else if (m.type === 'alert') {
      model.alerts.set(m.id, m); remember(m); loadHexes(m.area_id); refreshBroadcasts(); renderTimeline();
    } else if (m.type === 'public_warning') {
      learnWarning(m);
    } else if (m.type === 'report') {
      model.reports.set(m.id, m);
    } else if (m.type === 'external_alert') {
      if (isActive(m)) model.external.set(m.alert.id, m.alert); else model.external.delete(m.alert.id);
    } else if (m.type === 'sensor') {
      const s = model.sensors.get(m.id);
      if (s) { s.latest = m.latest; s.status = m.online === false ? 'offline' : 'online'; if (m.position) { s.lat = m.position.lat; s.lon = m.position.lon; } }
    } else if (m.type === 'result') {
      say(`${m.command}: 完成 done`);
    } else if (m.type === 'error') {
      say(`${m.command || m.reason}: ${m.message}`);
    }
    render();
  };
}
function fillCounties() {
  const sel = $('f-county');
  for (const f of [...model.atlas.counties.features].sort((p, q) => p.properties.COUNTYCODE.localeCompare(q.properties.COUNTYCODE))) {
    const o = document.createElement('option'); o.value = f.properties.COUNTYCODE;
    o.textContent = `${f.properties.COUNTYNAME} ${f.properties.COUNTYENG}`; sel.appendChild(o);
  }
}
// The basemap first, from the binary: the country is on the screen before (and without) the socket.
DCBasemap.attach(map).then((a) => { model.atlas = a; fillCounties(); render(); })
  .catch((e) => setStatus(`basemap: ${e.message}`, 'down'));
connect();
