// clawbus console: the fleet, a live feed, conversations and message paths.
//
// One file on purpose: the page has no build step, and the CSP lets it load
// only this script.
//
// It is one script in sections, in this order, each opening with a banner
// `// --- <section> ---`:
//
//   settings        pace of polls and renders, sizes of the feed and of pages
//   small helpers   DOM elements, text and time formatting
//   state           what the page knows: the fleet, the feed, the live stream
//   API             authenticated requests, and the banners their failures raise
//   token           signing in and out; a new token restarts the loops
//   fleet polling   `/api/agents` and `/api/stats` every POLL_MS
//   live stream     `/api/stream` read with fetch, resumed with Last-Event-ID
//   feed            the live feed's rows, its filter, pause and rate
//   fleet           the fleet table, the totals and the hosts
//   rendering loop  one render per animation frame, at most every RENDER_MS
//   conversation    the history between two agents, grouped in threads
//   message path    one message's path, opened from the feed or a conversation
//   wiring          event listeners, start-up, and the hook for tests
//
// Plain ES2020, no build step, no dependencies. Everything from the API is
// data: it is put on the page with textContent only, never as HTML.
//
// Speed (1,000 agents, 1,000 messages a second): network events only update
// plain JavaScript state and ask for a render; renders run in an animation
// frame at most every RENDER_MS, write to the DOM only (no layout reads),
// update fleet cells only when their text changes, prepend feed rows in one
// fragment, cap the feed at FEED_ROWS rows and recycle the rows that fall off.

'use strict';

(() => {
  // --- settings --------------------------------------------------------------

  const TOKEN_KEY = 'clawbus.console.token';
  const POLL_MS = 2000;
  const RENDER_MS = 200;
  const FEED_ROWS = 500;
  const RECENT = 5000;
  const PREVIEW = 280;
  const CONV_LIMIT = 1000;
  const CONV_PAGES = 20;

  const $ = (selector) => document.querySelector(selector);

  // --- small helpers ---------------------------------------------------------

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // Sets text only when it changed (keeps style and layout work down).
  function setText(node, text) {
    const value = String(text);
    if (node.textContent !== value) node.textContent = value;
  }

  const numberFormat = new Intl.NumberFormat('en-US');
  const fmt = (n) => (typeof n === 'number' ? numberFormat.format(n) : '–');

  function fmtMs(ms) {
    if (typeof ms !== 'number' || !isFinite(ms)) return '–';
    if (ms < 1) return ms.toFixed(2) + ' ms';
    if (ms < 10) return ms.toFixed(1) + ' ms';
    if (ms < 1000) return Math.round(ms) + ' ms';
    if (ms < 60000) return (ms / 1000).toFixed(1) + ' s';
    return Math.round(ms / 60000) + ' min';
  }

  const pad = (n, w = 2) => String(n).padStart(w, '0');

  function clock(timestamp) {
    const date = new Date(timestamp);
    if (isNaN(date)) return String(timestamp || '');
    return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
  }

  function when(timestamp) {
    const date = new Date(timestamp);
    if (isNaN(date)) return String(timestamp || '');
    const day = `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
    return `${day} ${clock(timestamp)}`;
  }

  function ago(timestamp, now) {
    const then = Date.parse(timestamp);
    if (isNaN(then)) return '';
    const s = Math.max(0, Math.round((now - then) / 1000));
    if (s < 2) return 'just now';
    if (s < 60) return s + 's ago';
    if (s < 3600) return Math.floor(s / 60) + 'm ago';
    if (s < 86400) return Math.floor(s / 3600) + 'h ago';
    return Math.floor(s / 86400) + 'd ago';
  }

  function preview(content) {
    const text = String(content ?? '');
    const cut = text.length > PREVIEW ? text.slice(0, PREVIEW) + '…' : text;
    return cut.replace(/\s+/g, ' ');
  }

  const recipient = (to) => (to === '*' ? 'everyone' : to);

  // --- state -----------------------------------------------------------------

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || '',
    // Bumped to stop the poll and stream loops (new token, signed out).
    generation: 0,
    fleet: null,
    fleetDirty: false,
    sort: { key: 'name', desc: false },
    fleetFilter: '',
    selectedAgent: '',
    banners: new Map(),
  };

  const feed = {
    lastId: 0,
    recent: [],
    pending: [],
    reset: false,
    paused: false,
    filter: '',
    pool: [],
    count: 0,
    rate: [],
  };

  const stream = { controller: null, state: 'idle', reconnects: 0, holdMs: 0, note: '' };

  // --- API -------------------------------------------------------------------

  class AuthError extends Error {}

  function authHeaders(extra) {
    const headers = new Headers(extra || {});
    if (state.token) headers.set('Authorization', 'Bearer ' + state.token);
    return headers;
  }

  async function api(path) {
    const response = await fetch(path, { headers: authHeaders({ Accept: 'application/json' }), cache: 'no-store' });
    if (response.status === 401) {
      needToken(state.token ? 'The adapter refused this token.' : '');
      throw new AuthError('unauthorized');
    }
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) {
      const error = new Error((body && body.message) || `HTTP ${response.status}`);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  function banner(key, message) {
    if (message) state.banners.set(key, message);
    else state.banners.delete(key);
    const node = $('#banner');
    const text = [...state.banners.values()].join(' · ');
    setText(node, text);
    node.hidden = !text;
  }

  // --- token -----------------------------------------------------------------

  function stopLoops() {
    state.generation += 1;
    if (stream.controller) stream.controller.abort();
    setStreamState('idle');
  }

  function needToken(message) {
    stopLoops();
    $('#login-error').textContent = message || '';
    if (!$('#login').hidden) return;
    $('#login').hidden = false;
    const input = $('#token');
    input.value = '';
    input.focus();
  }

  function onLogin(event) {
    event.preventDefault();
    const token = $('#token').value.trim();
    if (!token) {
      $('#login-error').textContent = 'Enter a token.';
      return;
    }
    state.token = token;
    sessionStorage.setItem(TOKEN_KEY, token);
    $('#login').hidden = true;
    start();
  }

  function start() {
    stopLoops();
    const generation = state.generation;
    pollLoop(generation);
    streamLoop(generation);
  }

  // --- fleet polling ---------------------------------------------------------

  async function pollLoop(generation) {
    while (generation === state.generation) {
      const started = performance.now();
      if (!document.hidden) {
        try {
          const [agents, stats] = await Promise.all([api('/api/agents'), api('/api/stats')]);
          if (generation !== state.generation) return;
          state.fleet = { agents: agents.agents || [], stats };
          state.fleetDirty = true;
          banner('poll', '');
          schedule();
        } catch (error) {
          if (error instanceof AuthError || generation !== state.generation) return;
          banner('poll', 'Cannot read the fleet: ' + error.message);
        }
      }
      await sleep(Math.max(250, POLL_MS - (performance.now() - started)));
    }
  }

  // --- live stream (fetch + ReadableStream, so the token can be sent) --------

  function setStreamState(next, note) {
    stream.state = next;
    stream.note = note || '';
    schedule();
  }

  async function streamLoop(generation) {
    let backoff = 500;
    while (generation === state.generation) {
      const controller = new AbortController();
      stream.controller = controller;
      setStreamState(stream.reconnects ? 'reconnecting' : 'connecting');
      let retryAfter = 0;
      try {
        const headers = authHeaders({ Accept: 'text/event-stream' });
        if (feed.lastId > 0) headers.set('Last-Event-ID', String(feed.lastId));
        const response = await fetch('/api/stream', { headers, signal: controller.signal, cache: 'no-store' });
        if (response.status === 401) {
          needToken(state.token ? 'The adapter refused this token.' : '');
          return;
        }
        if (response.status === 403) {
          setStreamState('forbidden', 'The live feed needs the operator token');
          return;
        }
        if (!response.ok || !response.body) {
          retryAfter = Number(response.headers.get('Retry-After')) * 1000 || 0;
          throw new Error(`HTTP ${response.status}`);
        }
        setStreamState('live');
        backoff = 500;
        await readEvents(response.body, generation);
      } catch (error) {
        if (generation !== state.generation) return;
        if (!controller.signal.aborted) stream.note = error.message;
      }
      if (generation !== state.generation) return;
      stream.reconnects += 1;
      setStreamState('reconnecting', stream.note);
      const hold = stream.holdMs;
      stream.holdMs = 0;
      await sleep(hold || Math.max(retryAfter, backoff + Math.random() * 250));
      backoff = Math.min(backoff * 2, 10000);
    }
  }

  async function readEvents(body, generation) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done || generation !== state.generation) return;
      buffer += decoder.decode(value, { stream: true });
      if (buffer.indexOf('\r') >= 0) buffer = buffer.replace(/\r\n?/g, '\n');
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        onBlock(block);
      }
    }
  }

  function onBlock(block) {
    let event = 'message';
    const data = [];
    for (const line of block.split('\n')) {
      if (!line || line[0] === ':') continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value[0] === ' ') value = value.slice(1);
      if (field === 'event') event = value;
      else if (field === 'data') data.push(value);
    }
    if (event !== 'message' || !data.length) return;
    let message;
    try {
      message = JSON.parse(data.join('\n'));
    } catch (_) {
      return;
    }
    onMessage(message);
  }

  // --- feed ------------------------------------------------------------------

  function feedMatches(message) {
    const filter = feed.filter;
    if (!filter) return true;
    if (filter.endsWith('*')) {
      const prefix = filter.slice(0, -1);
      return message.from.startsWith(prefix) || message.to.startsWith(prefix) || message.to === '*';
    }
    return message.from === filter || message.to === filter || message.to === '*';
  }

  function onMessage(message) {
    if (typeof message.id !== 'number' || message.id <= feed.lastId) return;
    feed.lastId = message.id;
    feed.count += 1;
    feed.recent.push(message);
    if (feed.recent.length > RECENT + RECENT / 4) feed.recent.splice(0, feed.recent.length - RECENT);
    if (!feed.paused && feedMatches(message)) {
      feed.pending.push(message);
      if (feed.pending.length > FEED_ROWS * 2) feed.pending.splice(0, feed.pending.length - FEED_ROWS);
    }
    conversationSaw(message);
    schedule();
  }

  let rowPrototype = null;

  function makeFeedRow() {
    if (!rowPrototype) {
      const row = el('div', 'message');
      row.append(el('span', 'time'), el('span', 'id'));
      const route = el('span', 'route');
      route.append(el('span', 'agent from'), el('span', 'arrow', '→'), el('span', 'agent to'));
      const body = el('span', 'body');
      body.append(el('span', 'badge prio'), el('span', 'reply'), el('span', 'content'));
      row.append(route, body);
      rowPrototype = row;
    }
    return rowPrototype.cloneNode(true);
  }

  function fillFeedRow(row, message) {
    const [time, id, route, body] = row.children;
    const [from, , to] = route.children;
    const [prio, reply, content] = body.children;
    row.className = 'message' + (message.priority && message.priority !== 'normal' ? ' p-' + message.priority : '') +
      (message.to === '*' ? ' broadcast' : '') + (message.id === pathView.id ? ' selected' : '');
    row.dataset.id = message.id;
    row.dataset.from = message.from;
    row.dataset.to = message.to;
    row.dataset.thread = message.thread ?? message.id;
    if (message.reply_to != null) row.dataset.replyTo = message.reply_to;
    else delete row.dataset.replyTo;
    time.textContent = clock(message.timestamp);
    time.title = message.timestamp;
    id.textContent = '#' + message.id;
    from.textContent = message.from;
    from.dataset.agent = message.from;
    to.textContent = recipient(message.to);
    to.dataset.agent = message.to === '*' ? '' : message.to;
    prio.textContent = message.priority && message.priority !== 'normal' ? message.priority : '';
    reply.textContent = message.reply_to != null ? '↩ #' + message.reply_to : '';
    content.textContent = preview(message.content);
    return row;
  }

  function renderFeed() {
    const list = $('#feed');
    let items;
    if (feed.reset) {
      feed.reset = false;
      items = feed.paused ? [] : feed.recent.filter(feedMatches).slice(-FEED_ROWS);
      recycle(list, 0);
      if (feed.paused) {
        feed.pending = [];
        return;
      }
    } else {
      items = feed.pending.length > FEED_ROWS ? feed.pending.slice(-FEED_ROWS) : feed.pending;
    }
    feed.pending = [];
    if (!items.length) return;
    if (items.length >= FEED_ROWS) recycle(list, 0);
    const fragment = document.createDocumentFragment();
    for (let i = items.length - 1; i >= 0; i--) {
      fragment.appendChild(fillFeedRow(feed.pool.pop() || makeFeedRow(), items[i]));
    }
    list.prepend(fragment);
    recycle(list, FEED_ROWS);
  }

  // Removes rows beyond `keep`, keeping them for reuse.
  function recycle(list, keep) {
    let extra = list.childElementCount - keep;
    while (extra-- > 0) {
      const row = list.lastElementChild;
      row.remove();
      if (feed.pool.length < FEED_ROWS) feed.pool.push(row);
    }
  }

  function renderRate(now) {
    feed.rate.push([now, feed.count]);
    while (feed.rate.length > 2 && now - feed.rate[0][0] > 5000) feed.rate.shift();
    const [t0, c0] = feed.rate[0];
    const seconds = (now - t0) / 1000;
    const perSecond = seconds > 0.5 ? (feed.count - c0) / seconds : 0;
    const shown = perSecond >= 10 ? Math.round(perSecond) : Math.round(perSecond * 10) / 10;
    setText($('#feed-rate'), `${fmt(shown)} msg/s · ${fmt(feed.count)} seen` +
      (feed.filter ? ` · filter: ${feed.filter}` : ''));
  }

  function setFeedFilter(filter) {
    feed.filter = filter.trim();
    const input = $('#feed-filter');
    if (input.value !== feed.filter) input.value = feed.filter;
    feed.reset = true;
    schedule();
  }

  function togglePause() {
    feed.paused = !feed.paused;
    const button = $('#feed-pause');
    button.setAttribute('aria-pressed', String(feed.paused));
    button.textContent = feed.paused ? 'Resume' : 'Pause';
    if (!feed.paused) feed.reset = true;
    else feed.pending = [];
    schedule();
  }

  // --- fleet -----------------------------------------------------------------

  const fleetRows = new Map();
  let fleetOrder = '';
  let agentNames = '';

  function makeFleetRow(name) {
    const tr = el('tr');
    tr.dataset.agent = name;
    const cells = {};
    for (const field of ['name', 'host', 'unread', 'wake', 'latency', 'failing']) {
      const td = el('td');
      td.dataset.field = field;
      cells[field] = td;
      tr.appendChild(td);
    }
    cells.name.append(el('span', 'dot'), el('span', 'label', name));
    cells.name.title = name;
    const outcome = el('span', 'outcome');
    const since = el('span', 'ago');
    cells.wake.append(outcome, since);
    const row = { tr, cells, outcome, since, agent: null };
    fleetRows.set(name, row);
    return row;
  }

  function updateFleetRow(row, agent, now) {
    const { tr, cells } = row;
    const wakes = agent.wakes;
    const last = wakes && wakes.last;
    const failing = (wakes && wakes.failing) || 0;
    row.agent = agent;
    tr.classList.toggle('online', !!agent.online);
    tr.classList.toggle('offline', !agent.online);
    tr.classList.toggle('failing', failing > 0);
    tr.classList.toggle('selected', agent.name === state.selectedAgent);
    setText(cells.host, agent.host || '');
    setText(cells.unread, fmt(agent.unread || 0));
    cells.unread.classList.toggle('zero', !agent.unread);
    cells.unread.dataset.value = agent.unread || 0;
    if (last) {
      const good = last.outcome === 'queued' || last.outcome === 'coalesced';
      setText(row.outcome, last.outcome);
      row.outcome.className = 'outcome ' + (good ? 'ok' : 'bad');
      setText(row.since, ago(last.at, now));
      cells.wake.title = `${last.outcome} at ${last.at} by ${wakes.host}; ` +
        `${fmt(wakes.sent)} wakes answered, ${fmt(wakes.failed)} failed in all`;
    } else {
      setText(row.outcome, '');
      row.outcome.className = 'outcome';
      setText(row.since, wakes ? '' : 'never woken');
    }
    cells.wake.dataset.outcome = last ? last.outcome : '';
    setText(cells.latency, last && typeof last.latency_ms === 'number' ? fmtMs(last.latency_ms) : '–');
    setText(cells.failing, failing ? fmt(failing) : '0');
    cells.failing.classList.toggle('zero', !failing);
    cells.failing.dataset.value = failing;
  }

  const sortKeys = {
    name: () => 0,
    host: (a, b) => (a.host || '').localeCompare(b.host || ''),
    unread: (a, b) => (a.unread || 0) - (b.unread || 0),
    failing: (a, b) => failingOf(a) - failingOf(b),
    wake: (a, b) => wakeAt(a) - wakeAt(b),
    latency: (a, b) => latencyOf(a) - latencyOf(b),
  };
  const failingOf = (a) => (a.wakes && a.wakes.failing) || 0;
  const wakeAt = (a) => (a.wakes && a.wakes.last ? Date.parse(a.wakes.last.at) || 0 : 0);
  const latencyOf = (a) => (a.wakes && a.wakes.last && a.wakes.last.latency_ms) || 0;

  function renderFleet(now) {
    const { agents, stats } = state.fleet;
    renderStats(stats, agents);
    renderHosts(stats.hosts || []);

    const filter = state.fleetFilter.toLowerCase();
    const seen = new Set();
    let shown = 0;
    for (const agent of agents) {
      seen.add(agent.name);
      const row = fleetRows.get(agent.name) || makeFleetRow(agent.name);
      updateFleetRow(row, agent, now);
      const visible = !filter || agent.name.toLowerCase().includes(filter) ||
        (agent.host || '').toLowerCase().includes(filter);
      if (row.tr.hidden === visible) row.tr.hidden = !visible;
      if (visible) shown += 1;
    }
    for (const [name, row] of fleetRows) {
      if (!seen.has(name)) {
        row.tr.remove();
        fleetRows.delete(name);
      }
    }

    const { key, desc } = state.sort;
    const compare = sortKeys[key] || sortKeys.name;
    const sorted = agents.slice().sort((a, b) => {
      const order = compare(a, b) * (desc ? -1 : 1);
      return order || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
    });
    const order = sorted.map((a) => a.name).join('\n');
    if (order !== fleetOrder) {
      fleetOrder = order;
      const fragment = document.createDocumentFragment();
      for (const agent of sorted) fragment.appendChild(fleetRows.get(agent.name).tr);
      $('#fleet tbody').appendChild(fragment);
    }
    const names = agents.map((a) => a.name).sort().join('\n');
    if (names !== agentNames) {
      agentNames = names;
      const list = $('#agent-names');
      list.replaceChildren(...agents.map((a) => a.name).sort().map((name) => {
        const option = document.createElement('option');
        option.value = name;
        return option;
      }));
    }
    setText($('#fleet-count'), filter ? `${fmt(shown)} of ${fmt(agents.length)}` :
      `${fmt(agents.length)} agent${agents.length === 1 ? '' : 's'}`);
    $('#fleet-empty').hidden = agents.length > 0;
    if (!agents.length) setText($('#fleet-empty'), 'No agents registered yet.');
  }

  function renderStats(stats, agents) {
    const hosts = stats.hosts || [];
    const hostsUp = hosts.filter((h) => h.online).length;
    const unread = Object.values(stats.unread || {}).reduce((sum, n) => sum + n, 0);
    const wakes = stats.wakes || {};
    const latency = wakes.latency_ms;
    const failing = (wakes.failing || []).length;
    setText($('#stat-hosts'), hostsUp === hosts.length ? fmt(hosts.length) : `${fmt(hostsUp)} / ${fmt(hosts.length)}`);
    setText($('#stat-agents'), fmt(stats.agents ?? agents.length));
    setText($('#stat-online'), fmt(stats.online));
    setText($('#stat-unread'), fmt(unread));
    setText($('#stat-messages'), fmt(stats.messages));
    setText($('#stat-wakes'), `${fmt(wakes.sent)} / ${fmt(wakes.failed)}`);
    setText($('#stat-latency'), latency ? `${fmtMs(latency.p50)} / ${fmtMs(latency.p99)}` : '–');
    setText($('#stat-failing'), fmt(failing));
    $('#stats [data-stat="failing"]').classList.toggle('alert', failing > 0);
    $('#stats [data-stat="online"]').classList.toggle('alert', (stats.online ?? 0) < (stats.agents ?? 0));
    const health = (stats.nats && stats.nats.health) || {};
    const nats = stats.nats && stats.nats.connected ? `NATS ${health.server || 'connected'}` : 'NATS disconnected';
    setText($('#adapter'), `via ${stats.host || '?'} · ${nats}`);
    let trouble = '';
    if (stats.nats && !stats.nats.connected) {
      trouble = `Adapter ${stats.host} is not connected to NATS.`;
    } else if (health.ready === false) {
      // The adapter refuses sends until JetStream answers again (it moves to another server).
      trouble = `Adapter ${stats.host} is not ready: ${health.reason || 'JetStream does not answer'}.`;
    }
    banner('nats', trouble);
  }

  let hostsKey = '';

  function renderHosts(hosts) {
    const key = hosts.map((h) => `${h.host}\t${h.agents}\t${h.online}`).join('\n');
    if (key === hostsKey) return;
    hostsKey = key;
    const chips = hosts.map((h) => {
      const chip = el('span', 'host ' + (h.online ? 'online' : 'offline'));
      chip.dataset.host = h.host;
      chip.title = h.last_seen ? `last seen ${h.last_seen}` : '';
      chip.append(el('span', 'dot'), el('span', 'label', h.host), el('span', 'count', `${fmt(h.agents)} agent${h.agents === 1 ? '' : 's'}`));
      return chip;
    });
    $('#hosts').replaceChildren(...chips);
  }

  function onSort(event) {
    const th = event.target.closest('th[data-sort]');
    if (!th) return;
    const key = th.dataset.sort;
    if (state.sort.key === key) state.sort.desc = !state.sort.desc;
    else state.sort = { key, desc: key !== 'name' && key !== 'host' };
    for (const header of document.querySelectorAll('#fleet th')) {
      header.classList.toggle('sorted', header.dataset.sort === key);
      header.classList.toggle('desc', header.dataset.sort === key && state.sort.desc);
    }
    fleetOrder = '';
    state.fleetDirty = !!state.fleet;
    schedule();
  }

  function onFleetClick(event) {
    const tr = event.target.closest('tr[data-agent]');
    if (!tr) return;
    const name = tr.dataset.agent;
    state.selectedAgent = state.selectedAgent === name ? '' : name;
    setFeedFilter(state.selectedAgent);
    if (state.selectedAgent) {
      const a = $('#conv-a');
      const b = $('#conv-b');
      if (!a.value || a.value === name) a.value = name;
      else if (a.value !== name) b.value = name;
    }
    state.fleetDirty = !!state.fleet;
    schedule();
  }

  // --- rendering loop --------------------------------------------------------

  let renderQueued = false;
  let lastRender = 0;

  function schedule() {
    if (renderQueued) return;
    renderQueued = true;
    const wait = Math.max(0, RENDER_MS - (performance.now() - lastRender));
    setTimeout(() => requestAnimationFrame(render), wait);
  }

  function render() {
    renderQueued = false;
    lastRender = performance.now();
    const now = Date.now();
    if (state.fleetDirty && state.fleet) {
      state.fleetDirty = false;
      renderFleet(now);
    }
    if (feed.reset || feed.pending.length) renderFeed();
    renderRate(lastRender);
    const node = $('#stream-state');
    const labels = {
      idle: 'Not connected',
      connecting: 'Connecting…',
      live: 'Live',
      reconnecting: 'Reconnecting…',
      forbidden: 'Feed needs operator token',
    };
    if (node.dataset.state !== stream.state) node.dataset.state = stream.state;
    node.dataset.reconnects = stream.reconnects;
    setText(node, labels[stream.state] || stream.state);
    node.title = stream.note || (feed.lastId ? `last message #${feed.lastId}` : '');
    banner('stream', stream.state === 'forbidden' ? stream.note : '');
  }

  // --- conversation ----------------------------------------------------------

  const conv = { a: '', b: '', messages: [], generation: 0, stale: false, loading: false, truncated: false };

  function messageNode(message, side) {
    const node = el('div', 'message ' + side + (message.priority && message.priority !== 'normal' ? ' p-' + message.priority : '') +
      (message.to === '*' ? ' broadcast' : '') + (message.id === pathView.id ? ' selected' : ''));
    node.dataset.id = message.id;
    node.dataset.from = message.from;
    node.dataset.to = message.to;
    node.dataset.thread = message.thread ?? message.id;
    if (message.reply_to != null) node.dataset.replyTo = message.reply_to;
    const meta = el('div', 'meta');
    const from = el('span', 'agent from', message.from);
    from.dataset.agent = message.from;
    meta.append(from, el('span', 'arrow', '→'), el('span', 'to', recipient(message.to)));
    if (message.priority && message.priority !== 'normal') meta.append(el('span', 'badge prio', message.priority));
    if (message.reply_to != null) {
      const link = el('span', 'reply reply-link', '↩ #' + message.reply_to);
      link.dataset.target = message.reply_to;
      link.title = 'Show the message this replies to';
      meta.append(link);
    }
    const time = el('span', 'time', clock(message.timestamp));
    time.title = message.timestamp;
    meta.append(el('span', 'id', '#' + message.id), time);
    node.append(meta, el('div', 'content', message.content));
    return node;
  }

  // Groups messages into threads by following reply_to to the first message
  // found here; a reply whose parent is not in this conversation goes with
  // its thread (the server's `thread`, the root of the whole chain).
  function threads(messages) {
    const byId = new Map(messages.map((m) => [m.id, m]));
    const rootOf = new Map();
    const findRoot = (message) => {
      const path = [];
      let current = message;
      let root;
      for (;;) {
        if (rootOf.has(current.id)) {
          root = rootOf.get(current.id);
          break;
        }
        path.push(current);
        const parent = current.reply_to != null ? byId.get(current.reply_to) : undefined;
        if (!parent || path.length > messages.length) {
          root = current.reply_to != null ? (current.thread ?? current.reply_to) : current.id;
          break;
        }
        current = parent;
      }
      for (const m of path) rootOf.set(m.id, root);
      return root;
    };
    const groups = new Map();
    for (const message of messages) {
      const root = findRoot(message);
      if (!groups.has(root)) groups.set(root, []);
      groups.get(root).push(message);
    }
    const result = [];
    for (const [root, list] of groups) {
      const ids = new Set(list.map((m) => m.id));
      const children = new Map();
      const tops = [];
      for (const m of list) {
        if (m.reply_to != null && ids.has(m.reply_to)) {
          if (!children.has(m.reply_to)) children.set(m.reply_to, []);
          children.get(m.reply_to).push(m);
        } else {
          tops.push(m);
        }
      }
      const ordered = [];
      const visit = (m, depth) => {
        ordered.push([m, depth]);
        for (const child of children.get(m.id) || []) visit(child, Math.min(depth + 1, 12));
      };
      for (const top of tops) visit(top, 0);
      result.push({ root, ordered, first: list[0].id, last: list[list.length - 1] });
    }
    result.sort((x, y) => x.first - y.first);
    return result;
  }

  function renderConversation(keepScroll) {
    const box = $('#conversation');
    const previous = keepScroll ? box.scrollTop : -1;
    const side = (m) => (m.from === conv.a ? 'side-a' : 'side-b');
    const mode = $('#conv-mode').value;
    const parts = [];
    if (!conv.messages.length) {
      parts.push(el('p', 'empty', `No messages between ${conv.a} and ${conv.b} in the retention window.`));
    } else if (mode === 'timeline') {
      const list = el('div', 'timeline');
      for (const m of conv.messages) list.appendChild(messageNode(m, side(m)));
      parts.push(list);
    } else {
      for (const thread of threads(conv.messages)) {
        const group = el('div', 'thread');
        group.dataset.thread = thread.root;
        const head = el('div', 'thread-head');
        const count = thread.ordered.length;
        head.append(el('span', 'title', `Thread #${thread.root}`), el('span', null, `${count} message${count === 1 ? '' : 's'}`),
          el('span', null, '· last ' + clock(thread.last.timestamp)));
        group.appendChild(head);
        for (const [m, depth] of thread.ordered) {
          const node = messageNode(m, side(m));
          node.dataset.depth = depth;
          node.style.setProperty('--depth', String(depth));
          group.appendChild(node);
        }
        parts.push(group);
      }
    }
    const count = conv.messages.length;
    setText($('#conv-note'), `${fmt(count)} message${count === 1 ? '' : 's'} between ${conv.a} and ${conv.b}` +
      (conv.truncated ? ' (the latest)' : '') + ' · live');
    box.replaceChildren(...parts);
    box.dataset.state = 'loaded';
    box.dataset.a = conv.a;
    box.dataset.b = conv.b;
    box.scrollTop = previous >= 0 ? previous : box.scrollHeight;
  }

  async function fetchHistory(a, b, after) {
    const messages = [];
    let truncated = false;
    for (let page = 0; page < CONV_PAGES; page++) {
      const query = `agent=${encodeURIComponent(a)}&with=${encodeURIComponent(b)}&limit=${CONV_LIMIT}` +
        (after ? `&after=${after}` : '');
      const body = await api('/api/history?' + query);
      const got = body.messages || [];
      messages.push(...got);
      if (got.length < CONV_LIMIT) break;
      after = got[got.length - 1].id;
      if (page === CONV_PAGES - 1) truncated = true;
    }
    return { messages, truncated };
  }

  async function loadConversation(event) {
    if (event) event.preventDefault();
    const a = $('#conv-a').value.trim();
    const b = $('#conv-b').value.trim();
    const box = $('#conversation');
    if (!a || !b) {
      box.replaceChildren(el('p', 'empty', 'Pick two agents.'));
      return;
    }
    const generation = ++conv.generation;
    conv.a = a;
    conv.b = b;
    conv.stale = false;
    box.dataset.state = 'loading';
    box.replaceChildren(el('p', 'empty', 'Loading…'));
    try {
      const { messages, truncated } = await fetchHistory(a, b, 0);
      if (generation !== conv.generation) return;
      conv.messages = messages.length > CONV_LIMIT ? messages.slice(-CONV_LIMIT) : messages;
      conv.truncated = truncated || messages.length > CONV_LIMIT;
      renderConversation(false);
    } catch (error) {
      if (generation !== conv.generation || error instanceof AuthError) return;
      conv.a = '';
      conv.b = '';
      box.dataset.state = 'error';
      box.replaceChildren(el('p', 'empty error', error.message));
      setText($('#conv-note'), '');
    }
  }

  // A stored message between the two shown: fetch what is new (at most once
  // a second, from the last id shown).
  function conversationSaw(message) {
    if (!conv.a || conv.stale) return;
    const { a, b } = conv;
    const between = (message.from === a && (message.to === b || message.to === '*')) ||
      (message.from === b && (message.to === a || message.to === '*'));
    if (between) conv.stale = true;
  }

  async function refreshConversation() {
    if (!conv.stale || conv.loading || !conv.a) return;
    conv.stale = false;
    conv.loading = true;
    const generation = conv.generation;
    try {
      const after = conv.messages.length ? conv.messages[conv.messages.length - 1].id : 0;
      const { messages } = await fetchHistory(conv.a, conv.b, after);
      if (generation !== conv.generation || !messages.length) return;
      const box = $('#conversation');
      // Layout is read once here, outside the render loop (at most once a second).
      const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
      conv.messages = conv.messages.concat(messages);
      if (conv.messages.length > CONV_LIMIT) {
        conv.messages = conv.messages.slice(-CONV_LIMIT);
        conv.truncated = true;
      }
      renderConversation(!atBottom);
    } catch (_) {
      // The next message between the two tries again.
    } finally {
      conv.loading = false;
    }
  }

  function onConversationClick(event) {
    const link = event.target.closest('.reply-link');
    if (link) {
      const target = $(`#conversation .message[data-id="${CSS.escape(link.dataset.target)}"]`);
      if (target) {
        target.classList.remove('flash');
        void target.offsetWidth;
        target.classList.add('flash');
        target.scrollIntoView({ block: 'nearest' });
      } else {
        openPath(Number(link.dataset.target));
      }
      return;
    }
    const message = event.target.closest('.message[data-id]');
    if (message) openPath(Number(message.dataset.id));
  }

  // --- message path ----------------------------------------------------------

  const pathView = { id: 0, generation: 0, timer: 0 };

  function markSelected() {
    for (const node of document.querySelectorAll('.message.selected')) node.classList.remove('selected');
    for (const node of document.querySelectorAll(`#feed .message[data-id="${pathView.id}"], #conversation .message[data-id="${pathView.id}"]`)) {
      node.classList.add('selected');
    }
  }

  async function openPath(id) {
    if (!id) return;
    clearTimeout(pathView.timer);
    const generation = ++pathView.generation;
    const changed = pathView.id !== id;
    pathView.id = id;
    markSelected();
    const box = $('#path');
    if (changed) {
      box.dataset.id = id;
      box.dataset.state = 'loading';
      box.replaceChildren(el('p', 'empty', `Loading #${id}…`));
    }
    try {
      const body = await api('/api/messages/' + id);
      if (generation !== pathView.generation) return;
      renderPath(body);
      const path = body.path || {};
      const direct = body.message && body.message.to !== '*';
      const complete = !direct || (path.woken && path.acknowledged);
      setText($('#path-note'), complete ? '' : 'watching…');
      if (!complete) pathView.timer = setTimeout(() => openPath(id), POLL_MS);
    } catch (error) {
      if (generation !== pathView.generation || error instanceof AuthError) return;
      box.dataset.state = 'error';
      const text = error.status === 404 ? `Message #${id} is not stored (never sent, or expired).` : error.message;
      box.replaceChildren(el('p', 'empty error', text));
      setText($('#path-note'), '');
    }
  }

  function step(name, label, done, detail, na) {
    const item = el('li', 'step ' + (na ? 'na' : done ? 'done' : 'pending'));
    item.dataset.step = name;
    item.append(el('div', 'label', label), el('div', 'when', detail));
    return item;
  }

  function renderPath(body) {
    const message = body.message;
    const path = body.path || {};
    const box = $('#path');
    const broadcast = message.to === '*';
    const title = el('div', 'path-title');
    const from = el('span', 'from', message.from);
    from.dataset.field = 'from';
    const to = el('span', 'to', recipient(message.to));
    to.dataset.field = 'to';
    title.append(el('span', 'id', '#' + message.id), from, el('span', 'arrow', '→'), to);
    if (message.priority && message.priority !== 'normal') {
      title.classList.add('p-' + message.priority);
      title.append(el('span', 'badge prio', message.priority));
    }

    const fields = el('dl', 'fields');
    const add = (label, value) => {
      fields.append(el('dt', null, label));
      const dd = el('dd');
      if (value instanceof Node) dd.append(value);
      else dd.textContent = value;
      fields.append(dd);
      return dd;
    };
    add('Sent', when(message.timestamp)).title = message.timestamp;
    if (message.reply_to != null) {
      const link = el('span', 'reply reply-link', '↩ #' + message.reply_to);
      link.dataset.target = message.reply_to;
      add('Reply to', link).dataset.field = 'reply_to';
    }
    add('Thread', `#${message.thread ?? message.id} · ${message.hops || 0} hop${message.hops === 1 ? '' : 's'} deep`);

    const steps = el('ol', 'steps');
    steps.append(step('stored', 'Stored', !!path.stored, path.stored ? when(path.stored) : ''));
    if (broadcast) {
      steps.append(step('woken', 'Woken', false, 'tracked per recipient for direct messages only', true));
      steps.append(step('acknowledged', 'Acknowledged', false, 'read per recipient', true));
    } else {
      const woken = path.woken;
      steps.append(step('woken', woken ? `Woken by ${woken.by}` : 'Not woken yet', !!woken,
        woken ? `last wake of ${message.to} ${when(woken.last_wake_at)}` : `no wake of ${message.to} covers it yet`));
      const acked = path.acknowledged;
      steps.append(step('acknowledged', acked ? `Acknowledged by ${message.to}` : 'Unread', !!acked,
        acked ? `read mark written ${when(acked.mark_written_at)}` : `waiting for ${message.to} to acknowledge`));
    }

    const content = el('pre', 'content', message.content);
    const actions = el('div', 'actions');
    if (!broadcast) {
      const show = el('button', null, 'Show conversation');
      show.type = 'button';
      show.dataset.action = 'conversation';
      actions.append(show);
    }
    const filter = el('button', null, `Feed: ${message.from}`);
    filter.type = 'button';
    filter.dataset.action = 'filter';
    actions.append(filter);

    box.dataset.id = message.id;
    box.dataset.state = 'loaded';
    box.dataset.from = message.from;
    box.dataset.to = message.to;
    box.replaceChildren(title, fields, content, steps, actions);
  }

  function onPathClick(event) {
    const link = event.target.closest('.reply-link');
    if (link) {
      openPath(Number(link.dataset.target));
      return;
    }
    const button = event.target.closest('button[data-action]');
    if (!button) return;
    const box = $('#path');
    if (button.dataset.action === 'conversation') {
      $('#conv-a').value = box.dataset.from;
      $('#conv-b').value = box.dataset.to;
      loadConversation();
    } else if (button.dataset.action === 'filter') {
      setFeedFilter(box.dataset.from);
    }
  }

  function onFeedClick(event) {
    const agent = event.target.closest('.agent[data-agent]');
    if (agent && agent.dataset.agent) {
      setFeedFilter(feed.filter === agent.dataset.agent ? '' : agent.dataset.agent);
      return;
    }
    const row = event.target.closest('.message[data-id]');
    if (row) openPath(Number(row.dataset.id));
  }

  // --- wiring ----------------------------------------------------------------

  function init() {
    $('#login-form').addEventListener('submit', onLogin);
    $('#signout').addEventListener('click', () => {
      sessionStorage.removeItem(TOKEN_KEY);
      state.token = '';
      needToken('');
    });
    $('#fleet thead').addEventListener('click', onSort);
    $('#fleet tbody').addEventListener('click', onFleetClick);
    $('#fleet-filter').addEventListener('input', (event) => {
      state.fleetFilter = event.target.value.trim();
      state.fleetDirty = !!state.fleet;
      schedule();
    });
    $('#feed').addEventListener('click', onFeedClick);
    $('#feed-filter').addEventListener('input', (event) => setFeedFilter(event.target.value));
    $('#feed-pause').addEventListener('click', togglePause);
    $('#conv-form').addEventListener('submit', loadConversation);
    $('#conv-mode').addEventListener('change', () => {
      if (conv.a && conv.b) renderConversation(false);
    });
    $('#conversation').addEventListener('click', onConversationClick);
    $('#path').addEventListener('click', onPathClick);
    setInterval(refreshConversation, 1000);
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden) schedule();
    });
    start();
  }

  // For tests and debugging from the devtools console: cut the live stream
  // as a network drop would; it reconnects with Last-Event-ID after `holdMs`.
  window.clawbusConsole = Object.freeze({
    dropStream(holdMs) {
      stream.holdMs = Math.max(0, Number(holdMs) || 0);
      if (stream.controller) stream.controller.abort();
    },
    lastId: () => feed.lastId,
  });

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
