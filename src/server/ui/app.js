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
const BATCH_NAMES = 200;        // names per detail request, at most
const BATCH_BYTES = 16 * 1024;  // ... and bytes of names (the server takes 60 KiB of URL)
const SILENCE_MS = 45000;       // no byte on the watch stream this long (3 keep-alives): reconnect
const KEEP = 500;               // entries kept in each window.__reg log

const $ = (id) => document.getElementById(id);

const state = {
  token: sessionStorage.getItem('reg.token') || '',
  entries: new Map(),   // name -> {value, metadata, revision, created, expiresAt, flashUntil, gone, goneAt}
  names: [],            // every name, sorted (new names wait in `added` until the next frame)
  added: [],            // names created since the last frame
  goneCount: 0,         // entries marked gone and not yet swept
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

// reg keeps numbers exactly as written (12345678901234567890, 1.0); `JSON.parse` would round
// them. Where the browser has JSON.rawJSON (Chromium 114+, Firefox 135+), a number whose text
// a JS number would not write back the same is kept as its source text, so JSON.stringify
// writes it unchanged (revisions and ordinary numbers stay numbers).
const exactNumbers = typeof JSON.rawJSON === 'function'
  ? (key, value, context) => (typeof value === 'number' && context && context.source != null &&
      String(value) !== context.source ? JSON.rawJSON(context.source) : value)
  : undefined;

function parseExact(text) {
  return JSON.parse(text, exactNumbers);
}

function log(list, item) {
  list.push(item);
  if (list.length > KEEP) list.shift();
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.token) headers.Authorization = 'Bearer ' + state.token;
  const response = await fetch(path, Object.assign({}, options, { headers, cache: 'no-store' }));
  // 401: no or unknown token; 403 on a read: a token that may read nothing. Either way the
  // page cannot show anything: ask for (another) token.
  if ((response.status === 401 || (response.status === 403 && options.read)) && !options.quiet) {
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
  // Nothing stays readable behind the form.
  state.generation++;
  if (state.watch) state.watch.abort();
  if (state.services) state.services.abort();
  state.entries.clear();
  state.names = [];
  state.added = [];
  state.view = [];
  state.history.clear();
  state.selected = null;
  $('detail').hidden = true;
  $('detail-empty').hidden = false;
  $('rows').replaceChildren();
  $('services').replaceChildren();
  state.viewDirty = state.treeDirty = true;
  queueRender();
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

// New names wait in `state.added` and are merged once per frame (one sort, not a splice per
// name: a fleet of 100,000 coming up at once stays linear-ish). Removed names are swept
// together by `sweep`.
function mergeAdded() {
  if (!state.added.length) return;
  const added = state.added;
  state.added = [];
  if (added.length === 1 && state.names.length) {
    const name = added[0];
    let lo = 0, hi = state.names.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (state.names[mid] < name) lo = mid + 1; else hi = mid; }
    state.names.splice(lo, 0, name);
  } else {
    state.names = state.names.concat(added).sort();
  }
}

function sweep() {
  if (!state.goneCount) return;
  const now = Date.now();
  let removed = false;
  for (const [name, entry] of state.entries) {
    if (entry.gone && entry.goneAt + GONE_MS <= now) {
      state.entries.delete(name);
      state.history.delete(name);
      state.goneCount--;
      removed = true;
      if (state.selected === name) select(null);
    }
  }
  if (removed) {
    mergeAdded();
    state.names = state.names.filter((name) => state.entries.has(name));
    state.viewDirty = state.treeDirty = true;
    queueRender();
  }
}

// Numeric values seen since the page opened, for the chart: a name moves to the newest slot
// on each value, the selected one is never dropped, and a removed one is forgotten.
function record(name, valueText) {
  if (!/^-?[0-9]/.test(valueText)) return;
  const number = Number(valueText);
  if (!Number.isFinite(number)) return;
  let points = state.history.get(name);
  if (points) {
    state.history.delete(name);
  } else {
    points = [];
    if (state.history.size >= HISTORY_NAMES) {
      for (const oldest of state.history.keys()) {
        if (oldest !== state.selected) { state.history.delete(oldest); break; }
      }
    }
  }
  state.history.set(name, points);
  points.push([Date.now(), number]);
  if (points.length > HISTORY_POINTS) points.shift();
}

function put(name, value, metadata, revision, created, expiresIn, flash) {
  let entry = state.entries.get(name);
  if (!entry || entry.gone) {
    if (!entry) state.added.push(name);
    else state.goneCount--;
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
  entry.goneAt = Date.now();
  entry.revision = revision;
  state.goneCount++;
  log(window.__reg.removed, { name, kind });
}

// ---- loading and following ----

// Every register, replacing what the page had (at start, after a reconnect, after a resync
// that could not account for every removal). False when a newer start took over meanwhile.
async function load(generation) {
  const started = performance.now();
  const response = await api('/consumer?detail=true', { read: true });
  if (!response.ok) throw new Error(await errorText(response));
  const index = Number(response.headers.get('x-reg-index') || 0);
  const body = parseExact(await response.text());
  if (generation !== state.generation) return false;
  const entries = new Map();
  for (const [name, r] of Object.entries(body.registers || {})) {
    const left = parseDuration(r.expires_in);
    entries.set(name, {
      value: JSON.stringify(r.value), metadata: r.metadata ? JSON.stringify(r.metadata) : '',
      revision: r.revision, created: r.created,
      expiresAt: left != null ? Date.now() + left : null,
    });
  }
  state.entries = entries;
  state.names = [...entries.keys()].sort();
  state.added = [];
  state.goneCount = 0;
  if (state.selected != null && !entries.has(state.selected)) select(null);
  state.index = index;
  state.viewDirty = state.treeDirty = true;
  queueRender();
  window.__reg.loadMs = performance.now() - started;
  window.__reg.loaded = true;
  return true;
}

async function follow(generation) {
  let delay = 1000;
  let first = true;
  while (generation === state.generation) {
    const controller = new AbortController();
    state.watch = controller;
    let silence = null;
    const quiet = () => {
      clearTimeout(silence);
      silence = setTimeout(() => controller.abort(), SILENCE_MS);
    };
    try {
      // After a break, read everything again: a replay from the old index cannot say what was
      // removed before the server's history (or before a restart without a data dir).
      if (!first && !(await load(generation))) return;
      first = false;
      const response = await api('/v1/watch?index=' + state.index, { signal: controller.signal, read: true });
      if (!response.ok) throw new Error(await errorText(response));
      setStatus('live', 'live');
      delay = 1000;
      quiet();
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = '';
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        quiet();
        buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          if (onBlock(block) === 'reload') throw new Error('removals may be missing');
        }
      }
    } catch (error) {
      if (error instanceof Unauthorized || generation !== state.generation) return;
    } finally {
      clearTimeout(silence);
    }
    if (generation !== state.generation) return;
    setStatus('down', 'reconnecting…');
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 10000);
  }
}

// One SSE block (RFC: `field:` with an optional space; `data` lines joined with newlines).
function onBlock(block) {
  let event = 'message', data = null;
  for (const line of block.split('\n')) {
    if (line.startsWith(':')) {
      // The server says it cannot replay every removal: read everything again.
      if (line.includes('may be missing')) return 'reload';
      continue;
    }
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') event = value;
    else if (field === 'data') data = data == null ? value : data + '\n' + value;
  }
  if (data == null) return;
  const payload = parseExact(data);
  window.__reg.events++;
  if (event === 'set') {
    put(payload.name, JSON.stringify(payload.value),
      payload.metadata ? JSON.stringify(payload.metadata) : '', payload.revision, null, null, true);
    state.needDetail.add(payload.name);
    state.index = Math.max(state.index, payload.revision);
  } else if (event === 'delete' || event === 'expire') {
    gone(payload.name, event, payload.revision);
    state.index = Math.max(state.index, payload.revision);
  }
  // `resync`: the stream fell behind and replays what changed since; nothing to do but follow.
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
      if (state.selected != null) names.add(state.selected);
    }
    const list = [...names].filter((name) => state.entries.has(name));
    const batches = [];
    let batch = [], bytes = 0;
    for (const name of list) {
      const part = 'name=' + encodeURIComponent(name);
      if (batch.length && (batch.length >= BATCH_NAMES || bytes + part.length > BATCH_BYTES)) {
        batches.push(batch);
        batch = [];
        bytes = 0;
      }
      batch.push(part);
      bytes += part.length + 1;
    }
    if (batch.length) batches.push(batch);
    for (const parts of batches) {
      const query = parts.join('&');
      try {
        const response = await api('/consumer?detail=true&' + query, { quiet: true });
        if (!response.ok) continue;
        const body = await response.json();
        for (const [name, r] of Object.entries(body.registers || {})) {
          const entry = state.entries.get(name);
          const left = parseDuration(r.expires_in);
          if (entry && !entry.gone && r.revision >= entry.revision && left != null) {
            entry.created = r.created;
            entry.expiresAt = Date.now() + left;
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
  mergeAdded();
  if (!state.viewDirty) return;
  state.viewDirty = false;
  const filter = state.filter.toLowerCase();
  if (!filter && !state.prefix) {
    state.view = state.names;
  } else {
    state.view = state.names.filter((name) =>
      (state.prefix.endsWith('\u0000') ? name === state.prefix.slice(0, -1) : name.startsWith(state.prefix)) &&
      (!filter || name.toLowerCase().includes(filter)));
  }
}

function queueRender() {
  if (state.renderQueued) return;
  state.renderQueued = true;
  requestAnimationFrame(render);
}

// The rows on screen are a pool of elements kept across frames: a frame only changes the
// text and classes that differ, so a click (pointerdown to pointerup) lands on the same
// element, and a flash animation runs once per change.
function rowElement(index) {
  const rows = $('rows');
  while (rows.children.length <= index) {
    const row = document.createElement('div');
    row.append(cell('name', ''), cell('value', ''), cell('ttl', ''), cell('rev', ''));
    rows.append(row);
  }
  return rows.children[index];
}

function setText(element, text) {
  if (element.textContent !== text) element.textContent = text;
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
  const now = Date.now();
  const shown = state.view.slice(first, first + count);
  let used = 0;
  for (const name of shown) {
    const entry = state.entries.get(name);
    if (!entry) continue;
    const row = rowElement(used++);
    row.hidden = false;
    const base = 'row' + (name === state.selected ? ' sel' : '') + (entry.gone ? ' gone' : '');
    const flash = !entry.gone && entry.flashUntil > now ? String(entry.flashUntil) : '';
    if (row.dataset.name !== name || row.dataset.flash !== flash) {
      row.className = base;
      if (flash) {
        void row.offsetWidth; // restart the animation for this change only
        row.classList.add('set');
      }
      row.dataset.flash = flash;
    } else {
      row.classList.toggle('sel', name === state.selected);
      row.classList.toggle('gone', !!entry.gone);
    }
    row.dataset.name = name;
    const [nameCell, valueCell, ttlCell, revCell] = row.children;
    setText(nameCell, name);
    setText(valueCell, entry.value);
    setText(ttlCell, entry.gone ? entry.gone : formatLeft(entry.expiresAt != null ? entry.expiresAt - now : null));
    setText(revCell, String(entry.revision));
  }
  for (let i = used; i < rows.children.length; i++) {
    rows.children[i].hidden = true;
    rows.children[i].dataset.name = '';
  }
  setText($('count'), state.view.length === state.names.length
    ? `${state.names.length} registers`
    : `${state.view.length} of ${state.names.length} registers`);
  if (state.treeDirty) renderTree();
  renderDetail();
  const took = performance.now() - started;
  window.__reg.renders++;
  log(window.__reg.renderMs, took);
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
  if (row && !row.hidden) select(row.dataset.name);
});
$('filter').addEventListener('input', () => {
  state.filter = $('filter').value;
  state.viewDirty = true;
  $('list').scrollTop = 0;
  queueRender();
});

// ---- the prefix tree ----

// The names' first two levels, split after each `.` and `/`. A name that is a whole level
// (`foo` beside `foo.x`) gets an entry of its own that matches it exactly (a prefix ending
// in NUL, which no filter text holds).
function levels(name) {
  const parts = name.match(/[^./]*(?:[./]|$)/g).filter((part) => part !== '');
  return parts;
}

const byFirst = (a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0);

let treeBuilt = 0;
function renderTree() {
  // Rebuilt at most once a second: O(registers).
  if (Date.now() - treeBuilt < 1000 && state.names.length > 5000) return;
  treeBuilt = Date.now();
  state.treeDirty = false;
  const top = new Map();
  for (const name of state.names) {
    const parts = levels(name);
    const whole = parts.length === 1;
    const first = whole ? name + '\u0000' : parts[0];
    const node = top.get(first) || { count: 0, children: new Map() };
    node.count++;
    if (!whole) {
      const second = parts.length === 2 ? name + '\u0000' : first + parts[1];
      node.children.set(second, (node.children.get(second) || 0) + 1);
    }
    top.set(first, node);
  }
  const items = [];
  for (const [prefix, node] of [...top].sort(byFirst).slice(0, 300)) {
    items.push(treeItem(prefix, node.count, false));
    if (state.prefix.startsWith(prefix) && !prefix.endsWith('\u0000')) {
      for (const [child, count] of [...node.children].sort(byFirst).slice(0, 200)) {
        items.push(treeItem(child, count, true));
      }
    }
  }
  $('tree').replaceChildren(...items);
  $('tree-clear').hidden = !state.prefix;
}

function treeItem(prefix, count, sub) {
  const li = document.createElement('li');
  li.className = (sub ? 'sub' : '') + (state.prefix === prefix ? ' on' : '');
  li.dataset.prefix = prefix;
  li.append(document.createTextNode(prefix.replace('\u0000', '')),
    Object.assign(document.createElement('span'), { className: 'n', textContent: count }));
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
  $('detail').hidden = name == null;
  $('detail-empty').hidden = name != null;
  if (name != null) {
    const entry = state.entries.get(name);
    if (entry && !state.history.has(name)) record(name, entry.value);
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
  if (name == null) return;
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
    $('send').disabled = state.selected == null;
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
  const text = $('editor').value;
  // Checked here, but sent as typed: parsing and printing again would change numbers reg
  // keeps exactly (12345678901234567890, 1.0).
  try { JSON.parse(text); } catch (_) { return; }
  const result = $('send-result');
  result.textContent = 'sending…';
  try {
    const response = await api('/consumer', {
      method: 'PUT',
      headers: { 'Content-Type': 'application/json' },
      body: '{"registers":{' + JSON.stringify(name) + ':{"value":' + text + '}}}',
    });
    if (response.status === 202) {
      result.textContent = 'sent: the provider gets it with its next poll';
      log(window.__reg.sent, name);
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
      // Without the per-register gauges: a few lines, whatever the registry's size.
      const response = await api('/metrics?registers=false', { quiet: true });
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
        $('stats').title = response.status === 401 || response.status === 403
          ? 'server stats need the admin right' : 'stats: ' + response.status;
        if (response.status === 401 || response.status === 403) return;
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
  if (state.services) state.services.abort();
  $('logout').hidden = !state.token;
  setStatus('', 'connecting…');
  try {
    if (!(await load(generation))) return;
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
setInterval(sweep, 250);        // removed registers leave
start();
