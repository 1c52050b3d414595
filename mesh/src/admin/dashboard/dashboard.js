// The Ganglion dashboard. Polls `/admin/mesh` once a second with the admin token (kept in this
// tab's sessionStorage, sent as a bearer header) and draws the mesh. Everything shown is set as
// text, never parsed as HTML: node names, models and messages come from the mesh.
'use strict';

const TOKEN_KEY = 'ganglion.admin-token';
const POLL_MS = 1000;
const SVG = 'http://www.w3.org/2000/svg';

const $ = (id) => document.getElementById(id);
let polling = null;
let lastView = null;
let lastViewAt = 0;
// Each sign-in starts a session; answers that arrive for an earlier one are dropped.
let session = 0;
let trying = null;

// --- building DOM without HTML strings ---------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (name === 'class') node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function fillBody(table, rows) {
  const body = table.tBodies[0];
  body.replaceChildren(...rows);
}

// --- formatting -------------------------------------------------------------------------

const neurons = (micro) => {
  const value = micro / 1e6;
  return value.toLocaleString('en-US', { maximumFractionDigits: value < 10 ? 3 : 1 });
};
const ms = (value) => (value === null || value === undefined ? '—' : `${value < 10 ? value.toFixed(1) : Math.round(value)} ms`);
const rate = (value) => (value === null || value === undefined ? '—' : value < 10 ? value.toFixed(2) : value.toFixed(1));
const bytes = (n) => {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
};
const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;
const clock = (atMs) => new Date(atMs).toLocaleTimeString('en-GB', { hour12: false });
const duration = (seconds) => {
  seconds = Math.max(0, Math.round(seconds));
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  return h > 0 ? `${h} h ${m} min` : `${m} min ${seconds % 60} s`;
};

// --- the admin token ----------------------------------------------------------------------

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function authorized(options = {}) {
  return { ...options, headers: { ...(options.headers || {}), Authorization: `Bearer ${token()}` } };
}

function showSignIn(message) {
  session += 1;
  clearTimeout(polling);
  polling = null;
  lastView = null;
  if (trying) trying.abort();
  $('board').hidden = true;
  $('sign-out').hidden = true;
  $('sign-in').hidden = false;
  $('answering').textContent = '';
  $('freshness').textContent = '';
  $('sign-in-error').textContent = message || '';
  // Nothing drawn from an earlier session stays in the page.
  for (const id of ['topology', 'nodes', 'accounts', 'try-output', 'try-facts', 'try-model']) $(id).replaceChildren();
  for (const id of ['traffic', 'routes', 'cache', 'errors']) fillBody($(id), []);
  for (const id of ['topology-count', 'cache-ratio', 'reset']) $(id).textContent = '';
  $('try-key').value = '';
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  showSignIn(message);
}

$('sign-in-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const value = $('token').value.trim();
  $('token').value = '';
  if (!value) return;
  if (!/^[\x21-\x7e]+$/.test(value)) {
    showSignIn('A token is printable ASCII without spaces.');
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, value);
  start();
});
$('sign-out').addEventListener('click', () => signOut(''));

// --- polling ------------------------------------------------------------------------------

async function poll(mine) {
  try {
    const response = await fetch('/admin/mesh', authorized({ cache: 'no-store', signal: AbortSignal.timeout(5000) }));
    if (mine !== session) return;
    if (response.status === 401) {
      signOut('The node refused this token.');
      return;
    }
    if (response.ok) {
      const view = await response.json();
      if (mine !== session) return;
      lastView = view;
      lastViewAt = Date.now();
      $('sign-in').hidden = true;
      $('board').hidden = false;
      $('sign-out').hidden = false;
      render(view);
    }
  } catch (e) {
    // The node is unreachable; the freshness line says how old the picture is.
    console.warn('dashboard: no mesh view', e);
  }
  if (mine !== session) return;
  showFreshness();
  if (token()) polling = setTimeout(() => poll(mine), POLL_MS);
}

function showFreshness() {
  if (!lastView) return;
  const age = (Date.now() - lastViewAt) / 1000;
  const line = $('freshness');
  line.textContent = age < 2.5 ? 'live' : `stale: last update ${Math.round(age)} s ago`;
  line.className = age < 2.5 ? 'live' : 'stale';
  $('reset').textContent = `resets in ${duration(lastView.resets_in_s - age)} (00:00 UTC)`;
}
setInterval(showFreshness, 1000);

function start() {
  if (!token()) {
    showSignIn('');
    return;
  }
  session += 1;
  clearTimeout(polling);
  poll(session);
}

// --- drawing ------------------------------------------------------------------------------

function render(view) {
  $('answering').textContent = `answered by ${view.node}`;
  // One part that cannot be drawn leaves the others standing (and says so in the console).
  for (const draw of [drawTopology, drawNodes, drawRequests, drawCache, drawAccounts, drawErrors, offerModels]) {
    try {
      draw(view);
    } catch (e) {
      console.error(`dashboard: ${draw.name} failed`, e);
    }
  }
}

// Each pair of nodes once, with the RTT each side measured (their mean).
function linksOf(view) {
  const pairs = new Map();
  for (const node of view.nodes) {
    for (const link of node.links) {
      const [a, b] = [node.name, link.peer].sort();
      const key = `${a}|${b}`;
      const pair = pairs.get(key) || { a, b, rtts: [], connected: true };
      pair.rtts.push(link.rtt_ms);
      pair.connected = pair.connected && link.state === 'connected';
      pairs.set(key, pair);
    }
  }
  return [...pairs.entries()].map(([key, p]) => ({ key, ...p, rtt: p.rtts.reduce((x, y) => x + y, 0) / p.rtts.length }));
}

function drawTopology(view) {
  const names = [...view.nodes.map((n) => n.name), ...view.unreachable.map((u) => u.name)];
  const reachable = new Set(view.nodes.map((n) => n.name));
  const count = names.length;
  $('topology-count').textContent = `${view.nodes.length} reporting` + (view.unreachable.length ? `, ${view.unreachable.length} unreachable` : '');
  // Nodes on a circle that grows with their number; past a dozen, RTTs show on hover only.
  const [cx, cy, radius] = [0, 0, count > 1 ? Math.max(120, count * 9) : 0];
  const place = new Map(names.map((name, i) => {
    const angle = -Math.PI / 2 + (2 * Math.PI * i) / count;
    const [cos, sin] = [Math.cos(angle), Math.sin(angle)];
    return [name, { x: cx + radius * cos, y: cy + radius * sin, cos, sin }];
  }));
  const labelled = count <= 12;
  // The drawing is scaled to fit the panel: text and dots grow with it, so that they keep
  // their size on screen (through a CSS variable: the page's policy allows no inline style).
  const width = Math.max(640, 2 * radius + 240);
  const height = Math.max(260, 2 * radius + 140);
  const unit = Math.max(1, height / 520);
  const dot = Math.max(7 * unit, Math.min(24, 260 / count));
  const topology = $('topology');
  topology.setAttribute('viewBox', `${-width / 2} ${-height / 2} ${width} ${height}`);
  topology.style.maxWidth = `${width}px`;
  topology.style.setProperty('--u', unit.toFixed(3));
  topology.classList.toggle('dense', !labelled);
  const shapes = [];
  for (const link of linksOf(view)) {
    const [p, q] = [place.get(link.a), place.get(link.b)];
    if (!p || !q) continue;
    const line = svg('line', {
      x1: p.x, y1: p.y, x2: q.x, y2: q.y,
      class: link.connected ? 'link' : 'link connecting',
      'data-link': link.key,
    });
    line.append(svg('title', {}, `${link.a} ↔ ${link.b}: ${link.rtt.toFixed(2)} ms`));
    shapes.push(line);
    if (labelled) {
      shapes.push(svg('text', { x: (p.x + q.x) / 2, y: (p.y + q.y) / 2 - 4, class: 'rtt', 'data-rtt': link.key }, `${link.rtt.toFixed(2)} ms`));
    }
  }
  for (const name of names) {
    const { x, y, cos, sin } = place.get(name);
    const node = reachable.has(name) ? view.nodes.find((n) => n.name === name) : null;
    const busy = node ? node.models.reduce((sum, m) => sum + m.queued + m.in_flight, 0) : 0;
    const group = svg('g', { class: `topo-node${node ? '' : ' unreachable'}${name === view.node ? ' self' : ''}`, 'data-node': name });
    group.append(svg('circle', { cx: x, cy: y, r: dot }));
    if (busy > 0 && labelled) group.append(svg('text', { x, y: y + 4, class: 'busy' }, String(busy)));
    if (labelled) {
      group.append(svg('text', { x, y: y + dot + 14 * unit, class: 'name' }, name));
    } else {
      // Many nodes: each name points away from the circle, so that neighbours do not overlap.
      const out = dot + 4 * unit;
      const anchor = cos > 0.15 ? 'start' : cos < -0.15 ? 'end' : 'middle';
      group.append(svg('text', {
        x: x + out * cos, y: y + out * sin + 4 * unit + (anchor === 'middle' ? 8 * unit * Math.sign(sin) : 0),
        class: 'name', 'text-anchor': anchor,
      }, name));
    }
    group.append(svg('title', {}, node ? `${name}: ${busy} queued or running` : `${name}: unreachable`));
    shapes.push(group);
  }
  $('topology').replaceChildren(...shapes);
}

function drawNodes(view) {
  const cards = view.nodes.map((node) => {
    const hw = node.hardware;
    const memory = hw.memory_limit ? `${bytes(hw.memory_limit)} (limit) of ${bytes(hw.memory_total)}` : bytes(hw.memory_total);
    const models = node.models.map((m) => {
      const hosted = m.state === 'hosted';
      const detail = hosted
        ? `queue ${m.queued} · running ${m.in_flight}/${m.concurrency} · done ${m.completed}`
        : (m.reason || m.state);
      return el('li', { class: hosted ? 'hosted' : 'not-hosted', 'data-model': m.id },
        el('span', { class: 'model-id' }, m.id), ' ', el('span', { class: 'state' }, m.state), el('br'),
        el('span', { class: 'muted' }, detail),
        m.worker ? el('br') : null, m.worker ? el('span', { class: 'muted worker' }, m.worker) : null);
    });
    return el('article', { class: `node${node.name === view.node ? ' self' : ''}`, 'data-node': node.name },
      el('h3', {}, node.name, node.name === view.node ? el('span', { class: 'muted' }, ' (this node)') : null),
      el('p', { class: 'muted' }, `${hw.cores} cores · ${memory}${hw.accelerators.length ? ' · ' + hw.accelerators.join(', ') : ''} · up ${duration(node.uptime_s)} · v${node.version}`),
      el('p', { class: 'muted cpu' }, `CPU: ${node.cpu.features.join(' ') || 'x86-64 baseline'} · llama.cpp kernels: ${node.cpu.variant}`),
      el('ul', { class: 'models' }, ...models));
  });
  for (const gone of view.unreachable) {
    cards.push(el('article', { class: 'node unreachable', 'data-node': gone.name },
      el('h3', {}, gone.name), el('p', { class: 'error' }, `unreachable: ${gone.reason}`)));
  }
  $('nodes').replaceChildren(...cards);
}

function drawRequests(view) {
  const traffic = [];
  for (const node of view.nodes) {
    for (const t of node.activity.traffic) {
      traffic.push(el('tr', { 'data-model': t.model, 'data-node': node.name },
        el('td', {}, t.model), el('td', {}, node.name), el('td', {}, rate(t.requests_per_s)),
        el('td', {}, ms(t.first_token_p50_ms)), el('td', {}, ms(t.first_token_p95_ms)),
        el('td', {}, rate(t.tokens_per_s)), el('td', {}, t.failed)));
    }
  }
  fillBody($('traffic'), traffic);
  const recent = view.nodes.flatMap((n) => n.activity.requests).sort((a, b) => b.at_ms - a.at_ms).slice(0, 30);
  fillBody($('routes'), recent.map((r) => {
    const route = r.cache === 'HIT' ? `${r.entry}, from the cache` : r.path.length ? r.path.join(' → ') : `${r.entry} (did not run)`;
    return el('tr', { 'data-id': r.id, class: r.outcome === 'ok' ? '' : 'failed' },
      el('td', {}, clock(r.at_ms)), el('td', {}, r.model), el('td', {}, r.account || '—'),
      el('td', { class: 'route' }, route), el('td', {}, Math.max(0, r.path.length - 1)),
      el('td', { class: `cache ${(r.cache || '').toLowerCase()}` }, r.cache || '—'),
      el('td', {}, neurons(r.micro_neurons)), el('td', {}, ms(r.first_token_ms)),
      el('td', {}, r.outcome));
  }));
}

function drawCache(view) {
  let [hits, misses] = [0, 0];
  fillBody($('cache'), view.nodes.map((node) => {
    const c = node.cache;
    hits += c.hits;
    misses += c.misses;
    const lookups = c.hits + c.misses;
    return el('tr', { 'data-node': node.name },
      el('td', {}, node.name),
      el('td', {}, lookups ? `${Math.round((100 * c.hits) / lookups)} % of ${lookups}` : c.shards ? '—' : 'no shards'),
      el('td', {}, c.entries), el('td', {}, `${bytes(c.bytes)} / ${bytes(c.capacity_bytes)}`), el('td', {}, c.evictions));
  }));
  const lookups = hits + misses;
  $('cache-ratio').textContent = lookups ? `${Math.round((100 * hits) / lookups)} % hits across the mesh` : '';
}

function drawAccounts(view) {
  const rows = view.accounts.map((a) => {
    const unlimited = a.limit_micro === null;
    const share = unlimited ? 0 : a.limit_micro > 0 ? a.micro_neurons / a.limit_micro : 1;
    const level = unlimited ? 'unlimited' : share < 0.6 ? 'green' : share < 0.9 ? 'amber' : 'red';
    const of = unlimited ? ' (unlimited)' : ` of ${neurons(a.limit_micro)}${a.limit_known ? '' : ' (free allocation)'}`;
    const fill = el('div', { class: `fill ${level}` });
    // Through the CSSOM: the page's policy allows no inline style attributes.
    fill.style.width = `${Math.min(100, 100 * share).toFixed(1)}%`;
    const bar = el('div', { class: 'bar', role: 'meter', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': Math.round(100 * Math.min(share, 1)) }, fill);
    return el('div', { class: 'account', 'data-account': a.account, 'data-level': level },
      el('div', { class: 'account-line' }, el('strong', {}, a.account), ' ',
        el('span', { class: 'muted' }, `${neurons(a.micro_neurons)}${of} Neurons · ${plural(a.requests, 'request')} · ${a.cached_requests} cached`)),
      bar);
  });
  $('accounts').replaceChildren(...(rows.length ? rows : [el('p', { class: 'muted' }, 'No Neurons used today.')]));
}

function drawErrors(view) {
  const errors = view.nodes.flatMap((n) => n.activity.errors).sort((a, b) => b.at_ms - a.at_ms).slice(0, 10);
  if (!errors.length) {
    fillBody($('errors'), [el('tr', {}, el('td', { colspan: 5, class: 'muted' }, 'No errors.'))]);
    return;
  }
  fillBody($('errors'), errors.map((e) => el('tr', { 'data-code': e.outcome },
    el('td', {}, clock(e.at_ms)), el('td', { class: 'code' }, e.outcome), el('td', {}, e.entry),
    el('td', {}, e.model), el('td', { class: 'message' }, e.message || ''))));
}

function offerModels(view) {
  const select = $('try-model');
  const ids = [...new Set(view.nodes.flatMap((n) => n.models.map((m) => m.id)))].sort();
  const current = [...select.options].map((o) => o.value);
  if (ids.join('\n') === current.join('\n')) return;
  const chosen = select.value;
  select.replaceChildren(...ids.map((id) => el('option', { value: id }, id)));
  if (ids.includes(chosen)) select.value = chosen;
}

// --- try it -------------------------------------------------------------------------------

function showFacts(facts) {
  $('try-facts').replaceChildren(...facts.flatMap(([name, value]) => [
    el('dt', {}, name), el('dd', { 'data-fact': name.toLowerCase() }, value),
  ]));
}

// Reads server-sent events from a fetch response: calls `handle(event, data)` for each.
async function readEvents(response, handle) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, '\n');
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) name = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      if (data.length) handle(name, JSON.parse(data.join('\n')));
    }
  }
}

$('try').addEventListener('submit', async (event) => {
  event.preventDefault();
  const send = $('try-send');
  const output = $('try-output');
  send.disabled = true;
  output.textContent = '';
  output.className = '';
  showFacts([['Status', 'running…']]);
  const started = performance.now();
  try {
    const body = {
      model: $('try-model').value,
      key: $('try-key').value.trim(),
      prompt: $('try-prompt').value,
    };
    const maxTokens = parseInt($('try-max-tokens').value, 10);
    if (maxTokens > 0) body.max_tokens = maxTokens;
    trying = new AbortController();
    const response = await fetch('/admin/try', authorized({
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
      signal: trying.signal,
    }));
    if (response.status === 401) {
      signOut('The node refused this token.');
      return;
    }
    if (!response.ok) {
      const error = await response.json().catch(() => ({}));
      showFacts([['Error', `${error.code || response.status}: ${error.message || error.error || response.statusText}`]]);
      return;
    }
    await readEvents(response, (name, data) => {
      if (name === 'delta') {
        output.textContent += data.text;
      } else if (name === 'final') {
        if (data.output && data.output.text !== undefined) output.textContent = data.output.text;
        else if (data.output && data.output.dimensions) output.textContent = `${data.output.dimensions}-dimensional vector: [${data.output.head.map((v) => v.toFixed(4)).join(', ')}, …]`;
        else if (data.output && data.output.labels) output.textContent = data.output.labels.map((l) => `${l.label} ${l.score.toFixed(3)}`).join(', ') || '(no label)';
        showFacts([
          ['Route', data.route.path.join(' → ')],
          ['Executed by', data.cache.status === 'HIT' ? 'nobody: from the cache' : data.route.executed_by],
          ['Hops', String(data.route.hops)],
          ['Cache', data.cache.status + (data.cache.shard ? ` (shard ${data.cache.shard})` : '')],
          ['Neurons', data.neurons],
          ['Tokens', `${data.usage.input_tokens} in, ${data.usage.output_tokens} out`],
          ['First token', ms(data.timings.first_token_ms)],
          ['Total', ms(data.timings.total_ms)],
          ['Request', data.id],
        ]);
      } else if (name === 'error') {
        output.className = 'error';
        showFacts([['Error', `${data.code}: ${data.message}`], ['After', ms(performance.now() - started)]]);
      }
    });
  } catch (e) {
    if (e.name !== 'AbortError') showFacts([['Error', `the node could not be reached: ${e.message}`]]);
  } finally {
    trying = null;
    send.disabled = false;
  }
});

start();
