// Push opt-in for the citizens' app (/app): alerts reach the phone while the app is closed (Web Push, /sw.js).
// Loaded by app.html; it needs nothing from the page but a container `#push-optin`, and reads the places, language
// and client id the page keeps in localStorage ('places', 'lang', 'report-client-id'). The websocket keeps working
// without push; this only adds to it.
(function () {
  'use strict';
  const box = document.getElementById('push-optin');
  if (!box) return;
  const zh = () => (localStorage.getItem('lang') || (navigator.language.startsWith('zh') ? 'zh-TW' : 'en')) !== 'en';
  const say = (z, e) => (zh() ? z : e);
  const status = document.createElement('span');
  const button = document.createElement('button');
  button.type = 'button';
  button.id = 'push-toggle';
  status.id = 'push-status';
  status.style.fontSize = '.8rem';
  status.style.marginLeft = '.4rem';
  box.append(button, status);
  const opened = document.createElement('div');
  opened.id = 'push-opened';
  box.append(opened);

  // Installable: the manifest link, added here so that app.html needs no more than the script tag.
  if (!document.querySelector('link[rel="manifest"]')) {
    const link = document.createElement('link');
    link.rel = 'manifest';
    link.href = '/manifest.webmanifest';
    document.head.append(link);
  }

  if (!('serviceWorker' in navigator) || !('PushManager' in window) || !('Notification' in window)) {
    button.hidden = true;
    status.textContent = say('此瀏覽器不支援推播；開著 App 仍會收到警報', 'This browser has no push: alerts arrive while the app is open');
    return;
  }

  const b64ToBytes = (b64) => {
    const s = atob((b64 + '='.repeat((4 - (b64.length % 4)) % 4)).replace(/-/g, '+').replace(/_/g, '/'));
    return Uint8Array.from(s, (c) => c.charCodeAt(0));
  };
  const sameKey = (sub, key) => {
    const k = sub.options && sub.options.applicationServerKey;
    if (!k) return true;
    const a = new Uint8Array(k), b = b64ToBytes(key);
    return a.length === b.length && a.every((x, i) => x === b[i]);
  };
  const places = () => JSON.parse(localStorage.getItem('places') || '[]');
  const lang = () => (zh() ? 'zh-TW' : 'en');
  let reg = null, key = null, synced = '';

  async function send(sub) {
    const body = Object.assign(sub.toJSON(), { places: places(), lang: lang() });
    const client = localStorage.getItem('report-client-id');
    if (client) body.client_id = client;
    if (!body.places.length) { status.textContent = say('先新增地點', 'Add a place first'); return false; }
    const r = await fetch('/api/v1/push/subscriptions', {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
    });
    const answer = await r.json().catch(() => ({}));
    if (!r.ok) { status.textContent = answer.message || `HTTP ${r.status}`; return false; }
    synced = JSON.stringify([body.places, body.lang]);
    // The closed app's service worker checks an alert's geofence against these places (it cannot read localStorage).
    if (window.DCGeofence) await window.DCGeofence.savePlaces(body.places).catch(() => {});
    status.textContent = answer.zones
      ? say('推播已開啟', 'Push alerts on')
      : say('推播已開啟（地點目前不在任何警戒區）', 'Push on (your places are in no alert zone yet)');
    return true;
  }

  async function render() {
    const sub = reg && (await reg.pushManager.getSubscription());
    button.textContent = sub ? say('關閉推播通知', 'Turn push alerts off') : say('開啟推播通知', 'Turn push alerts on');
    button.dataset.on = sub ? '1' : '';
    return sub;
  }

  button.onclick = async () => {
    try {
      const current = await reg.pushManager.getSubscription();
      if (current) {
        await fetch('/api/v1/push/subscriptions', {
          method: 'DELETE', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ endpoint: current.endpoint }),
        });
        await current.unsubscribe();
        status.textContent = say('推播已關閉', 'Push alerts off');
      } else {
        if ((await Notification.requestPermission()) !== 'granted') {
          status.textContent = say('未允許通知', 'Notifications not allowed');
          return;
        }
        const sub = await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: b64ToBytes(key) });
        await send(sub);
      }
    } catch (e) {
      status.textContent = say('推播失敗：', 'Push failed: ') + e.message;
    }
    render();
  };

  // A tapped notification while the app is open: show which alert it was.
  navigator.serviceWorker.addEventListener('message', (ev) => {
    if (ev.data && ev.data.type === 'open-alert') showOpened(ev.data.id, ev.data.title, ev.data.is_real);
  });
  function showOpened(id, title, isReal) {
    opened.textContent = '';
    const strong = document.createElement('strong');
    strong.textContent = title || id;
    opened.dataset.alert = id;
    if (isReal === false) opened.append(say('【演練】', '[Drill] '));
    opened.append(strong);
    history.replaceState(null, '', '#alert=' + encodeURIComponent(id));
  }
  const fromHash = /^#alert=(.+)$/.exec(location.hash);
  if (fromHash) { opened.dataset.alert = decodeURIComponent(fromHash[1]); }

  (async () => {
    try {
      const r = await fetch('/api/v1/push/key');
      if (!r.ok) { box.hidden = true; return; }   // push is not enabled on this server
      key = (await r.json()).public_key;
      reg = await navigator.serviceWorker.register('/sw.js');
      let sub = await render();
      // After a VAPID key rotation: subscribe again under the new key (the old subscription keeps working until then).
      if (sub && !sameKey(sub, key) && Notification.permission === 'granted') {
        await sub.unsubscribe();
        sub = await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: b64ToBytes(key) });
      }
      if (sub) await send(sub);
      render();
      // Places and language live in the page's localStorage: follow their changes.
      setInterval(async () => {
        const s = reg && (await reg.pushManager.getSubscription());
        if (s && JSON.stringify([places(), lang()]) !== synced) send(s);
      }, 2000);
    } catch (e) {
      status.textContent = say('推播無法使用：', 'Push unavailable: ') + e.message;
    }
  })();
})();
