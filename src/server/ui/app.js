// reg's dashboard: every register live from /v1/watch, change requests, services, stats.
// Plain JS, no build step. Data goes through `api()`, which adds the bearer token when the
// registry asks for one (401 shows the sign-in form). The register list is virtualized: only
// the rows on screen exist in the DOM, and events re-render at most once per frame.
'use strict';

const ROW = 28;                 // px, as --row in app.css
const FLASH_MS = 1200;          // a changed row flashes this long
const GONE_MS = 1500;           // a removed row stays (struck through) this long, then leaves
const TTL_REFRESH_MS = 3000;    // re-read the TTLs of the rows on screen this often
const STATS_MS = 2000;          // /metrics poll
const HISTORY_POINTS = 120;     // numeric values kept per register for the chart
const HISTORY_NAMES = 2000;     // registers with a chart history, at most
const BATCH_NAMES = 200;        // names per detail request

const $ = (id) => document.getElementById(id);

const state = {
  token: sessionStorage.getItem('reg.token') || '',
  entries: new Map(),   // name -> {value, metadata, revision, created, expiresAt, flashUntil, gone}
  names: [],            // every name, sorted
  view: [],             // the names the filter shows
  viewDirty: true,
  filter: '',
  prefix: '',
  selected: null,
  index: 0,             // the revision the page is at
  history: new Map(),   // name -> [[time, number], ...]
  needDetail: new Set(),
  watch: null,          // AbortController of the watch stream
  services: null,       // AbortController of the services loop
  treeDirty: true,
  renderQueued: false,
  lastRequests: null,
  generation: 0,        // bumped on every (re)start, so an old loop stops
};

// What the browser test and the 100k measurement read.
window.__reg = { loaded: false, loadMs: 0, events: 0, renders: 0, renderMs: [], removed: [], sent: [] };

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.token) headers.Authorization = 'Bearer ' + state.token;
  const response = await fetch(path, Object.assign({}, options, { headers, cache: 'no-store' }));
  if (response.status === 401 && !options.quiet) {
    showLogin(await errorText(response));
    throw new Unauthorized('unauthorized');
  }
  return response;
}

async function errorText(response) {
  try { return (await response.json()).error || response.statusText; } catch (_) { return response.statusText; }
}

function setStatus(kind, text) {
  $('status-dot').className = 'dot ' + kind;
  $('status-text').textContent = text;
}

// ---- sign-in ----

function showLogin(reason) {
  $('login-reason').textContent = state.token ? 'The registry refused the token: ' + reason : reason;
  $('login').hidden = false;
  setStatus('down', 'sign-in needed');
  $('token').focus();
}

$('login-form').addEventListener('submit', (event) => {
  event.preventDefault();
  state.token = $('token').value.trim();
  sessionStorage.setItem('reg.token', state.token);
  $('login').hidden = true;
  $('logout').hidden = !state.token;
  start();
});

$('logout').addEventListener('click', () => {
  state.token = '';
  sessionStorage.removeItem('reg.token');
  location.reload();
});

// ---- Go durations (expires_in) ----

const UNITS = { ns: 1e-6, us: 1e-3, 'µs': 1e-3, 'μs': 1e-3, ms: 1, s: 1000, m: 60000, h: 3600000 };

function parseDuration(text) {
  if (typeof text !== 'string') return null;
  let ms = 0, matched = false;
  for (const m of text.matchAll(/([0-9]*\.?[0-9]+)(ns|us|µs|μs|ms|s|m|h)/g)) {
    ms += parseFloat(m[1]) * UNITS[m[2]];
    matched = true;
  }
  return matched || text === '0' ? ms : null;
}

function formatLeft(ms) {
  if (ms == null) return '';
  const s = Math.max(0, ms) / 1000;
  if (s < 60) return s.toFixed(1) + 's';
  if (s < 3600) return Math.floor(s / 60) + 'm' + Math.floor(s % 60) + 's';
  return Math.floor(s / 3600) + 'h' + Math.floor((s % 3600) / 60) + 'm';
}

// ---- the register set ----

function insertName(name) {
  let lo = 0, hi = state.names.length;
  while (lo < hi) { const mid = (lo + hi) >> 1; if (state.names[mid] < name) lo = mid + 1; else hi = mid; }
  state.names.splice(lo, 0, name);
}

function removeName(name) {
  let lo = 0, hi = state.names.length;
  while (lo < hi) { const mid = (lo + hi) >> 1; if (state.names[mid] < name) lo = mid + 1; else hi = mid; }
  if (state.names[lo] === name) state.names.splice(lo, 1);
}

function record(name, valueText) {
  if (!/^-?[0-9]/.test(valueText)) return;
  const number = Number(valueText);
  if (!Number.isFinite(number)) return;
  let points = state.history.get(name);
  if (!points) {
    if (state.history.size >= HISTORY_NAMES) state.history.delete(state.history.keys().next().value);
    points = [];
    state.history.set(name, points);
  }
  points.push([Date.now(), number]);
  if (points.length > HISTORY_POINTS) points.shift();
}

function put(name, value, metadata, revision, created, expiresIn, flash) {
  let entry = state.entries.get(name);
  if (!entry || entry.gone) {
    if (!entry) insertName(name);
    entry = { created: created ?? revision };
    state.entries.set(name, entry);
    state.viewDirty = state.treeDirty = true;
  }
  entry.value = value;
  entry.metadata = metadata;
  entry.revision = revision;
  if (created != null) entry.created = created;
  entry.gone = null;
  if (expiresIn != null) entry.expiresAt = Date.now() + expiresIn;
  if (flash) entry.flashUntil = Date.now() + FLASH_MS;
  record(name, value);
}

function gone(name, kind, revision) {
  const entry = state.entries.get(name);
  if (!entry || entry.gone) return;
  entry.gone = kind;
  entry.revision = revision;
  window.__reg.removed.push({ name, kind });
  setTimeout(() => {
    const now = state.entries.get(name);
    if (now && now.gone) {
      state.entries.delete(name);
      removeName(name);
      state.viewDirty = state.treeDirty = true;
      if (state.selected === name) select(null);
      queueRender();
    }
  }, GONE_MS);
}

// ---- loading and following ----

async function load() {
  const started = performance.now();
  const response = await api('/consumer?detail=true');
  if (!response.ok) throw new Error(await errorText(response));
  const index = Number(response.headers.get('x-reg-index') || 0);
  const body = await response.json();
  state.entries.clear();
  state.names = [];
  for (const [name, r] of Object.entries(body.registers || {})) {
    state.entries.set(name, {
      value: JSON.stringify(r.value), metadata: r.metadata ? JSON.stringify(r.metadata) : '',
      revision: r.revision, created: r.created,
      expiresAt: r.expires_in != null ? Date.now() + parseDuration(r.expires_in) : null,
    });
    state.names.push(name);
    record(name, JSON.stringify(r.value));
  }
  state.names.sort();
  state.index = index;
  state.viewDirty = state.treeDirty = true;
  queueRender();
  window.__reg.loadMs = performance.now() - started;
  window.__reg.loaded = true;
}

async function follow(generation) {
  let delay = 1000;
  while (generation === state.generation) {
    const controller = new AbortController();
    state.watch = controller;
    try {
      const response = await api('/v1/watch?index=' + state.index, { signal: controller.signal });
      if (!response.ok) throw new Error(await errorText(response));
      setStatus('live', 'live');
      delay = 1000;
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = '';
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          if (await onBlock(block, generation) === 'restart') return;
        }
      }
    } catch (error) {
      if (error instanceof Unauthorized || generation !== state.generation) return;
    }
    if (generation !== state.generation) return;
    setStatus('down', 'reconnecting…');
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 10000);
  }
}

async function onBlock(block, generation) {
  let event = 'message', data = '';
  for (const line of block.split('\n')) {
    if (line.startsWith(':')) continue;
    if (line.startsWith('event: ')) event = line.slice(7);
    else if (line.startsWith('data: ')) data += line.slice(6);
  }
  if (!data) return;
  const payload = JSON.parse(data);
  window.__reg.events++;
  if (event === 'set') {
    put(payload.name, JSON.stringify(payload.value),
      payload.metadata ? JSON.stringify(payload.metadata) : '', payload.revision, null, null, true);
    state.needDetail.add(payload.name);
    state.index = Math.max(state.index, payload.revision);
  } else if (event === 'delete' || event === 'expire') {
    gone(payload.name, event, payload.revision);
    state.index = Math.max(state.index, payload.revision);
  } else if (event === 'resync') {
    // The stream fell behind; it replays what changed since. Nothing to do but follow.
  }
  queueRender();
}

// Detail (TTL left, creation) for names that changed, and for the rows on screen.
async function detailLoop(generation) {
  let last = 0;
  while (generation === state.generation) {
    await new Promise((resolve) => setTimeout(resolve, 300));
    const names = new Set(state.needDetail);
    state.needDetail.clear();
    if (Date.now() - last > TTL_REFRESH_MS) {
      last = Date.now();
      for (const name of visibleNames()) names.add(name);
    }
    const list = [...names].filter((name) => state.entries.has(name));
    for (let i = 0; i < list.length; i += BATCH_NAMES) {
      const query = list.slice(i, i + BATCH_NAMES).map((n) => 'name=' + encodeURIComponent(n)).join('&');
      try {
        const response = await api('/consumer?detail=true&' + query, { quiet: true });
        if (!response.ok) continue;
        const body = await response.json();
        for (const [name, r] of Object.entries(body.registers || {})) {
          const entry = state.entries.get(name);
          if (entry && !entry.gone && r.revision >= entry.revision) {
            entry.created = r.created;
            entry.expiresAt = Date.now() + parseDuration(r.expires_in);
          }
        }
        queueRender();
      } catch (_) { /* the next round tries again */ }
    }
  }
}

// ---- the list ----

function visibleNames() {
  const list = $('list');
  const first = Math.max(0, Math.floor(list.scrollTop / ROW) - 5);
  const count = Math.ceil(list.clientHeight / ROW) + 10;
  return state.view.slice(first, first + count);
}

function refreshView() {
  if (!state.viewDirty) return;
  state.viewDirty = false;
  const filter = state.filter.toLowerCase();
  if (!filter && !state.prefix) {
    state.view = state.names;
  } else {
    state.view = state.names.filter((name) =>
      name.startsWith(state.prefix) && (!filter || name.toLowerCase().includes(filter)));
  }
}

function queueRender() {
  if (state.renderQueued) return;
  state.renderQueued = true;
  requestAnimationFrame(render);
}

function render() {
  state.renderQueued = false;
  const started = performance.now();
  refreshView();
  const list = $('list');
  $('spacer').style.height = state.view.length * ROW + 'px';
  const first = Math.max(0, Math.floor(list.scrollTop / ROW) - 5);
  const count = Math.ceil(list.clientHeight / ROW) + 10;
  const rows = $('rows');
  rows.style.top = first * ROW + 'px';
  const fragment = document.createDocumentFragment();
  const now = Date.now();
  for (const name of state.view.slice(first, first + count)) {
    const entry = state.entries.get(name);
    if (!entry) continue;
    const row = document.createElement('div');
    row.className = 'row' + (name === state.selected ? ' sel' : '') +
      (entry.gone ? ' gone' : entry.flashUntil > now ? ' set' : '');
    row.dataset.name = name;
    row.append(cell('name', name), cell('value', entry.value),
      cell('ttl', entry.gone ? entry.gone : formatLeft(entry.expiresAt != null ? entry.expiresAt - now : null)),
      cell('rev', String(entry.revision)));
    fragment.append(row);
  }
  rows.replaceChildren(fragment);
  $('count').textContent = state.view.length === state.names.length
    ? `${state.names.length} registers`
    : `${state.view.length} of ${state.names.length} registers`;
  if (state.treeDirty) renderTree();
  renderDetail();
  const took = performance.now() - started;
  window.__reg.renders++;
  window.__reg.renderMs.push(took);
  if (window.__reg.renderMs.length > 500) window.__reg.renderMs.shift();
}

function cell(kind, text) {
  const span = document.createElement('span');
  span.className = kind;
  span.textContent = text;
  return span;
}

$('list').addEventListener('scroll', queueRender, { passive: true });
$('rows').addEventListener('click', (event) => {
  const row = event.target.closest('.row');
  if (row) select(row.dataset.name);
});
$('filter').addEventListener('input', () => {
  state.filter = $('filter').value;
  state.viewDirty = true;
  $('list').scrollTop = 0;
  queueRender();
});

// ---- the prefix tree ----

let treeBuilt = 0;
function renderTree() {
  // Rebuilt at most once a second: O(registers).
  if (Date.now() - treeBuilt < 1000 && state.names.length > 5000) return;
  treeBuilt = Date.now();
  state.treeDirty = false;
  const top = new Map();
  for (const name of state.names) {
    const parts = name.split(/(?<=[./])/);
    const first = parts[0];
    const node = top.get(first) || { count: 0, children: new Map() };
    node.count++;
    if (parts.length > 2) {
      const second = first + parts[1];
      node.children.set(second, (node.children.get(second) || 0) + 1);
    }
    top.set(first, node);
  }
  const tree = $('tree');
  const items = [];
  for (const [prefix, node] of [...top].sort().slice(0, 300)) {
    items.push(treeItem(prefix, node.count, false));
    if (state.prefix.startsWith(prefix)) {
      for (const [child, count] of [...node.children].sort().slice(0, 200)) {
        items.push(treeItem(child, count, true));
      }
    }
  }
  tree.replaceChildren(...items);
  $('tree-clear').hidden = !state.prefix;
}

function treeItem(prefix, count, sub) {
  const li = document.createElement('li');
  li.className = (sub ? 'sub' : '') + (state.prefix === prefix ? ' on' : '');
  li.append(document.createTextNode(prefix), Object.assign(document.createElement('span'), { className: 'n', textContent: count }));
  li.addEventListener('click', () => {
    state.prefix = state.prefix === prefix ? '' : prefix;
    state.viewDirty = state.treeDirty = true;
    treeBuilt = 0;
    $('list').scrollTop = 0;
    queueRender();
  });
  return li;
}

$('tree-clear').addEventListener('click', () => {
  state.prefix = '';
  state.viewDirty = state.treeDirty = true;
  treeBuilt = 0;
  queueRender();
});

// ---- detail, chart, change requests ----

function select(name) {
  state.selected = name;
  $('detail').hidden = !name;
  $('detail-empty').hidden = !!name;
  if (name) {
    const entry = state.entries.get(name);
    $('editor').value = entry ? pretty(entry.value) : '';
    checkEditor();
    $('send-result').textContent = '';
  }
  queueRender();
}

function pretty(text) {
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch (_) { return text; }
}

function renderDetail() {
  const name = state.selected;
  if (!name) return;
  const entry = state.entries.get(name);
  if (!entry) return;
  $('d-name').textContent = name;
  $('d-value').textContent = pretty(entry.value);
  $('d-metadata').textContent = entry.metadata ? pretty(entry.metadata) : '–';
  $('d-revision').textContent = entry.revision;
  $('d-created').textContent = entry.created != null ? 'revision ' + entry.created : '';
  $('d-ttl').textContent = entry.gone ? entry.gone : formatLeft(entry.expiresAt != null ? entry.expiresAt - Date.now() : null);
  const points = state.history.get(name) || [];
  $('chart-box').hidden = points.length < 2;
  if (points.length >= 2) drawChart(points);
}

function drawChart(points) {
  const values = points.map((p) => p[1]);
  const min = Math.min(...values), max = Math.max(...values);
  const t0 = points[0][0], t1 = points[points.length - 1][0];
  const span = max - min || 1, tspan = t1 - t0 || 1;
  const coords = points.map(([t, v]) => `${((t - t0) / tspan * 300).toFixed(1)},${(85 - (v - min) / span * 80).toFixed(1)}`);
  const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
  line.setAttribute('points', coords.join(' '));
  $('chart').replaceChildren(line);
  $('chart-range').textContent = `${points.length} values, ${min} … ${max}`;
}

function checkEditor() {
  const text = $('editor').value;
  try {
    JSON.parse(text);
    $('editor-check').textContent = 'valid JSON';
    $('editor-check').className = 'good';
    $('editor').classList.remove('invalid');
    $('send').disabled = !state.selected;
  } catch (error) {
    $('editor-check').textContent = 'not JSON: ' + error.message;
    $('editor-check').className = 'bad';
    $('editor').classList.add('invalid');
    $('send').disabled = true;
  }
}

$('editor').addEventListener('input', checkEditor);
$('send').addEventListener('click', async () => {
  const name = state.selected;
  let value;
  try { value = JSON.parse($('editor').value); } catch (_) { return; }
  const result = $('send-result');
  result.textContent = 'sending…';
  try {
    const response = await api('/consumer', {
      method: 'PUT',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ registers: { [name]: { value } } }),
    });
    if (response.status === 202) {
      result.textContent = 'sent: the provider gets it with its next poll';
      window.__reg.sent.push(name);
    } else {
      result.textContent = `refused (${response.status}): ${await errorText(response)}`;
    }
  } catch (error) {
    if (!(error instanceof Unauthorized)) result.textContent = 'failed: ' + error.message;
  }
});

// ---- services ----

async function servicesLoop(generation) {
  let index = 0;
  const controller = new AbortController();
  state.services = controller;
  while (generation === state.generation && !$('view-services').hidden) {
    try {
      const query = index ? `?index=${index}&wait=30s` : '';
      const response = await api('/v1/services' + query, { signal: controller.signal });
      if (!response.ok) throw new Error(await errorText(response));
      const body = await response.json();
      index = body.index;
      const lists = await Promise.all(body.services.map(async (service) => {
        const r = await api('/v1/services/' + encodeURIComponent(service.name), { signal: controller.signal });
        return r.ok ? r.json() : { service: service.name, instances: [] };
      }));
      renderServices(lists);
    } catch (error) {
      if (error instanceof Unauthorized || error.name === 'AbortError') return;
      $('services').textContent = 'Cannot list services: ' + error.message;
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }
}

function renderServices(lists) {
  const box = $('services');
  if (!lists.length) { box.textContent = 'No services registered (instances are registers svc/<service>/<id>).'; return; }
  const sections = lists.map((list) => {
    const section = document.createElement('div');
    section.className = 'service';
    section.dataset.service = list.service;
    const passing = list.instances.filter((i) => i.status === 'passing').length;
    const h2 = document.createElement('h2');
    h2.append(list.service, Object.assign(document.createElement('small'), { textContent: `${passing}/${list.instances.length} passing` }));
    const table = document.createElement('table');
    const head = table.insertRow();
    for (const title of ['instance', 'status', 'address', 'version', 'tags', 'TTL left']) {
      head.append(Object.assign(document.createElement('th'), { textContent: title }));
    }
    for (const instance of list.instances) {
      const row = table.insertRow();
      row.dataset.instance = instance.id;
      row.insertCell().textContent = instance.id;
      const status = document.createElement('span');
      status.className = 'status ' + instance.status;
      status.append(Object.assign(document.createElement('span'), { className: 'dot' }), instance.status);
      row.insertCell().append(status);
      row.insertCell().textContent = instance.address + (instance.port ? ':' + instance.port : '');
      row.insertCell().textContent = instance.version || '';
      row.insertCell().textContent = (instance.tags || []).join(', ');
      row.insertCell().textContent = formatLeft(parseDuration(instance.expires_in));
    }
    section.append(h2, table);
    return section;
  });
  box.replaceChildren(...sections);
}

for (const tab of document.querySelectorAll('.tab')) {
  tab.addEventListener('click', () => {
    const view = tab.dataset.view;
    for (const other of document.querySelectorAll('.tab')) other.classList.toggle('active', other === tab);
    $('view-registers').hidden = view !== 'registers';
    $('view-services').hidden = view !== 'services';
    if (state.services) state.services.abort();
    if (view === 'services') servicesLoop(state.generation);
    else queueRender();
  });
}

// ---- stats ----

async function statsLoop(generation) {
  while (generation === state.generation) {
    try {
      const response = await api('/metrics', { quiet: true });
      if (response.ok) {
        const metrics = parseMetrics(await response.text());
        $('stat-registers').textContent = metrics.reg_registers ?? '–';
        $('stat-parked').textContent = (metrics.reg_parked_consumer_polls || 0) +
          (metrics.reg_parked_provider_polls || 0) + (metrics.reg_parked_service_polls || 0);
        $('stat-streams').textContent = metrics.reg_watch_streams_open ?? '–';
        const now = Date.now(), total = metrics.reg_http_requests_total || 0;
        if (state.lastRequests) {
          const rate = (total - state.lastRequests[1]) / ((now - state.lastRequests[0]) / 1000);
          $('stat-rate').textContent = Math.max(0, rate).toFixed(rate < 10 ? 1 : 0);
        }
        state.lastRequests = [now, total];
      } else {
        $('stats').title = 'server stats need the admin right';
        return;
      }
    } catch (_) { /* the next round tries again */ }
    await new Promise((resolve) => setTimeout(resolve, STATS_MS));
  }
}

function parseMetrics(text) {
  const out = {};
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    const key = line.slice(0, space).replace(/\{.*\}$/, '');
    const value = Number(line.slice(space + 1));
    if (Number.isFinite(value)) out[key] = (out[key] || 0) + value;
  }
  return out;
}

// ---- start ----

async function start() {
  const generation = ++state.generation;
  if (state.watch) state.watch.abort();
  $('logout').hidden = !state.token;
  setStatus('', 'connecting…');
  try {
    await load();
  } catch (error) {
    if (!(error instanceof Unauthorized)) {
      setStatus('down', 'unreachable: ' + error.message);
      setTimeout(() => { if (generation === state.generation) start(); }, 2000);
    }
    return;
  }
  follow(generation);
  detailLoop(generation);
  statsLoop(generation);
  if (!$('view-services').hidden) servicesLoop(generation);
}

setInterval(queueRender, 1000); // TTL countdown
start();
