// The dashboard's script (served as /ui/app.js; docs/dashboard.md). It reads
// only the JSON API: GET /v1/stats once a second, GET /v1/queues every few
// seconds, a queue's dead tasks, a task, and POSTs retry and delete.
//
// Everything the server sends (queue names, payloads, errors) is hostile: it
// reaches the page only as text (textContent, or strings given to append(),
// which become text nodes), never as markup.
'use strict';

(() => {
  const POLL_MS = 1000;
  const QUEUES_POLL_MS = 5000;
  const HISTORY_POINTS = 120; // per latency plot: two minutes at one a second
  const AXIS_POINTS_MIN = 30; // a young plot fills from the right, then scrolls
  const PLOTS_MAX = 8; // the busiest (protocol, operation) pairs
  const DEAD_PAGE = 20;
  const SHOWN_CHARS_MAX = 300; // of a payload or error in the table (all of it in the tooltip)
  const TOKEN_KEY = 'tqx-token';
  const EVENTS = ['enqueued', 'leased', 'completed', 'failed', 'dead'];
  const STATES = ['waiting', 'delayed', 'ready', 'leased', 'completed', 'dead', 'cancelled'];

  const $ = (id) => document.getElementById(id);

  // An element with attributes and children; strings become text nodes.
  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
    node.append(...children.map((child) => (child instanceof Node ? child : String(child))));
    return node;
  }

  function shortened(text) {
    return text.length > SHOWN_CHARS_MAX ? text.slice(0, SHOWN_CHARS_MAX) + '…' : text;
  }

  // ---- formatting ---------------------------------------------------------

  const count = (n) => (n === null || n === undefined ? '–' : Number(n).toLocaleString('en-US'));

  function rate(n) {
    if (n === null || n === undefined) return '–';
    return n >= 100 ? Math.round(n).toLocaleString('en-US') : n.toFixed(1);
  }

  function seconds(s) {
    if (s === null || s === undefined) return '–';
    if (s < 0.001) return (s * 1e6).toFixed(0) + ' µs';
    if (s < 1) return (s * 1e3).toFixed(s < 0.01 ? 2 : 1) + ' ms';
    if (s < 120) return s.toFixed(1) + ' s';
    if (s < 7200) return (s / 60).toFixed(1) + ' min';
    return (s / 3600).toFixed(1) + ' h';
  }

  function bytes(n) {
    if (n === null || n === undefined) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let unit = 0;
    while (n >= 1024 && unit < units.length - 1) {
      n /= 1024;
      unit += 1;
    }
    return (unit === 0 ? n.toFixed(0) : n.toFixed(1)) + ' ' + units[unit];
  }

  function setStatus(text, ok) {
    const status = $('status');
    status.textContent = text;
    status.className = 'status ' + (ok ? 'live' : 'error');
  }

  // ---- the API, with the token if one was given ---------------------------

  const token = () => sessionStorage.getItem(TOKEN_KEY);

  // {status, ok, body}; body is the parsed JSON, or null. A 401 shows the
  // token form. Throws only when the server cannot be reached.
  async function api(method, path) {
    const headers = {};
    if (token()) headers.Authorization = 'Bearer ' + token();
    const response = await fetch(path, { method, headers, cache: 'no-store' });
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (response.status === 401) askForToken(body);
    return { status: response.status, ok: response.ok, body };
  }

  // `code: message` of an error reply, or its status.
  function problem(reply) {
    const error = reply.body && reply.body.error;
    return error ? error.code + ': ' + error.message : 'HTTP ' + reply.status;
  }

  function askForToken(body) {
    $('auth').hidden = false;
    const refused = token() ? 'The server refused this token' : 'The server needs an API token';
    const why = body && body.error ? ' (' + body.error.message + ')' : '';
    $('auth-message').textContent =
      refused + why + '. An admin token shows every queue; it is kept in this tab only (sessionStorage).';
  }

  $('token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const value = $('token').value.trim();
    // What the server accepts in a Bearer header (docs/http-api.md#authentication).
    if (!/^[\x21-\x7e]{1,128}$/.test(value)) {
      $('auth-message').textContent = 'A token is 1 to 128 visible ASCII characters (tqx_ and 64 hex digits).';
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, value);
    $('token').value = '';
    $('auth').hidden = true;
    refreshQueues();
  });

  $('token-forget').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    askForToken(null);
  });

  // ---- statistics, once a second ------------------------------------------

  let previous = null; // the last /v1/stats, for rates
  const history = new Map(); // "protocol op" -> [{p50, p99, p999}]

  async function poll() {
    try {
      let reply;
      try {
        reply = await api('GET', '/v1/stats');
      } catch (error) {
        setStatus('cannot reach the server (' + error.message + ')', false);
        return;
      }
      if (reply.ok && reply.body) {
        showStats(reply.body);
        setStatus('live', true);
      } else {
        setStatus(problem(reply), false);
      }
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  function showStats(stats) {
    $('server').textContent =
      'v' + stats.version + ' · ' + stats.durability + ' · up ' + seconds(stats.uptime_seconds) +
      (stats.metrics_enabled ? '' : ' · --no-metrics: no rates or latency');
    // Seconds between this poll and the last, by the server's clock.
    const elapsed = previous ? stats.uptime_seconds - previous.uptime_seconds : 0;
    showRates(stats, elapsed);
    showQueues(stats);
    showLatency(stats);
    showConnections(stats.connections);
    showWal(stats.wal, elapsed);
    showCheckpoint(stats.checkpoint, stats.process);
    previous = stats;
  }

  function showRates(stats, elapsed) {
    for (const event of EVENTS) {
      const now = stats.task_events[event];
      const before = previous ? previous.task_events[event] : null;
      // No rate before two polls, nor across a restart (counters went back).
      const shown = elapsed > 0 && before !== null && now >= before ? rate((now - before) / elapsed) : '–';
      $('rate-' + event).textContent = shown;
    }
  }

  function showQueues(stats) {
    const rows = stats.queues.map((queue) => {
      const cells = STATES.map((state) => {
        const n = queue.counts[state];
        const attributes = { class: state + (state === 'dead' && n > 0 ? ' dead-some' : '') };
        return el('td', attributes, count(n));
      });
      return el('tr', { 'data-queue': queue.name }, el('td', { class: 'name' }, queue.name), ...cells);
    });
    $('queues').replaceChildren(...rows);
    const hidden = stats.queues_count - stats.queues.filter((q) => q.name !== '_other').length;
    $('queues-count').textContent =
      stats.queues_count + (stats.queues_count === 1 ? ' queue' : ' queues') +
      (hidden > 0 ? ' (the first 100 by name, then the rest as _other)' : '');
  }

  function showLatency(stats) {
    for (const entry of stats.latency) {
      const key = entry.protocol + ' ' + entry.op;
      const points = history.get(key) || [];
      points.push({ p50: entry.p50_seconds, p99: entry.p99_seconds, p999: entry.p999_seconds });
      if (points.length > HISTORY_POINTS) points.shift();
      history.set(key, points);
    }
    const busiest = stats.latency
      .slice()
      .sort((a, b) => b.count - a.count)
      .slice(0, PLOTS_MAX)
      .sort((a, b) => (a.protocol + a.op < b.protocol + b.op ? -1 : 1));
    const figures = busiest.map((entry) => {
      const key = entry.protocol + ' ' + entry.op;
      const canvas = el('canvas');
      const caption = el('figcaption', {},
        el('b', {}, key), ' ',
        el('span', { class: 'p50' }, seconds(entry.p50_seconds)), ' · ',
        el('span', { class: 'p99' }, seconds(entry.p99_seconds)), ' · ',
        el('span', { class: 'p999' }, seconds(entry.p999_seconds)));
      const points = history.get(key);
      return el('figure', { class: 'plot', 'data-op': key, 'data-points': points.length }, caption, canvas);
    });
    $('latency').replaceChildren(...figures);
    if (figures.length === 0) $('latency').append(el('p', { class: 'note' }, 'no request executed yet'));
    for (const figure of figures) draw(figure.querySelector('canvas'), history.get(figure.dataset.op));
  }

  // Three lines (p50, p99, p999) on a shared linear scale from 0 to the
  // highest point shown, which is written in the corner.
  function draw(canvas, points) {
    // One canvas pixel per CSS pixel: sharp lines.
    canvas.width = canvas.clientWidth || 260;
    canvas.height = canvas.clientHeight || 64;
    const context = canvas.getContext('2d');
    const width = canvas.width;
    const height = canvas.height;
    const top = Math.max(...points.map((p) => p.p999), 1e-6);
    const style = getComputedStyle(document.documentElement);
    context.clearRect(0, 0, width, height);
    context.fillStyle = style.getPropertyValue('--muted');
    context.font = '10px system-ui, sans-serif';
    context.fillText(seconds(top), 4, 11);
    const step = width / (Math.min(HISTORY_POINTS, Math.max(points.length, AXIS_POINTS_MIN)) - 1);
    const left = width - (points.length - 1) * step;
    for (const quantile of ['p50', 'p99', 'p999']) {
      context.strokeStyle = style.getPropertyValue('--' + quantile);
      context.lineWidth = 1.5;
      context.beginPath();
      points.forEach((point, i) => {
        const x = left + i * step;
        const y = height - 2 - (point[quantile] / top) * (height - 16);
        if (i === 0) context.moveTo(x, y);
        else context.lineTo(x, y);
      });
      context.stroke();
    }
  }

  function showConnections(connections) {
    const rows = Object.entries(connections).map(([protocol, c]) => {
      const closed = c.closed_by_server;
      const shed = closed.request_deadline + closed.write_deadline + closed.idle_timeout;
      return el('tr', { 'data-protocol': protocol },
        el('td', {}, protocol), el('td', {}, count(c.open)), el('td', {}, count(c.accepted)),
        el('td', {}, count(c.refused)), el('td', {}, count(closed.pruned)), el('td', {}, count(shed)));
    });
    $('connections').replaceChildren(...rows);
  }

  // A definition list from [term, value] pairs.
  function list(id, pairs) {
    $(id).replaceChildren(...pairs.flatMap(([term, value]) => [el('dt', {}, term), el('dd', {}, value)]));
  }

  function showWal(wal, elapsed) {
    if (wal === null) {
      list('wal', [['memory mode', 'no log']]);
      return;
    }
    const syncRate = elapsed > 0 && previous.wal && wal.syncs >= previous.wal.syncs
      ? rate((wal.syncs - previous.wal.syncs) / elapsed) + ' /s' : '–';
    const sync = wal.sync_latency;
    list('wal', [
      ['syncs', count(wal.syncs)],
      ['syncs per second', syncRate],
      ['records per sync (mean)', wal.batch_records_mean === null ? '–' : wal.batch_records_mean.toFixed(2)],
      ['bytes written', bytes(wal.bytes)],
      ['fsync p50', seconds(sync.p50_seconds)],
      ['fsync p99', seconds(sync.p99_seconds)],
      ['fsync p999', seconds(sync.p999_seconds)],
      ['fsync max', seconds(sync.max_seconds)],
    ]);
  }

  function showCheckpoint(checkpoint, process) {
    const processPairs = [
      ['resident memory', bytes(process.resident_bytes)],
      ['open files', count(process.open_fds) + ' of ' + count(process.max_fds)],
    ];
    if (checkpoint === null) {
      list('checkpoint', [['memory mode', 'no checkpoints'], ...processPairs]);
      return;
    }
    const age = checkpoint.last_success_age_seconds;
    list('checkpoint', [
      ['last success', age === null ? 'none yet' : seconds(age) + ' ago'],
      ['last duration', seconds(checkpoint.last_duration_seconds)],
      ['increments', count(checkpoint.increments)],
      ['flushes', count(checkpoint.flushes)],
      ['RocksDB files', bytes(checkpoint.rocksdb_sst_bytes)],
      ['RocksDB memtables', bytes(checkpoint.rocksdb_memtable_bytes)],
      ...processPairs,
    ]);
  }

  // ---- dead letters ----------------------------------------------------------

  let deadQueue = '';
  let deadCursor = null;
  let deadLoads = 0; // a newer load makes an older one's answer stale

  async function refreshQueues() {
    try {
      const reply = await api('GET', '/v1/queues');
      if (!reply.ok || !reply.body) {
        $('dead-message').textContent = 'queues: ' + problem(reply);
        return;
      }
      const select = $('dead-queue');
      // Rebuilt only when something changed, so an open list stays open.
      const signature = JSON.stringify(reply.body.queues.map((queue) => [queue.name, queue.counts.dead]));
      if (signature === select.dataset.signature) return;
      select.dataset.signature = signature;
      const options = reply.body.queues.map((queue) => {
        const option = el('option', {}, queue.name + ' (' + count(queue.counts.dead) + ' dead)');
        option.value = queue.name;
        return option;
      });
      const chosen = deadQueue;
      select.replaceChildren(el('option', { value: '' }, '(choose a queue)'), ...options);
      select.value = chosen;
      // First visit: show the first queue that has dead letters.
      if (!chosen && !select.dataset.touched) {
        const first = reply.body.queues.find((queue) => queue.counts.dead > 0);
        if (first) chooseQueue(first.name);
      }
    } catch (error) {
      $('dead-message').textContent = 'queues: ' + error.message;
    }
  }

  function chooseQueue(name) {
    $('dead-queue').value = name;
    deadQueue = name;
    loadDead(true);
  }

  $('dead-queue').addEventListener('change', (event) => {
    event.target.dataset.touched = 'yes';
    chooseQueue(event.target.value);
  });
  $('dead-refresh').addEventListener('click', () => {
    loadDead(true);
    refreshQueues();
  });
  $('dead-more').addEventListener('click', () => loadDead(false));

  // The first page (fresh) or the next one (following the cursor).
  async function loadDead(fresh) {
    const load = ++deadLoads;
    const tbody = $('dead-tasks');
    if (fresh) {
      tbody.replaceChildren();
      deadCursor = null;
    }
    $('dead-more').hidden = true;
    if (!deadQueue) {
      $('dead-message').textContent = '';
      return;
    }
    let path = '/v1/queues/' + encodeURIComponent(deadQueue) + '/tasks?state=dead&limit=' + DEAD_PAGE;
    if (deadCursor) path += '&cursor=' + encodeURIComponent(deadCursor);
    $('dead-message').textContent = 'loading…';
    try {
      const reply = await api('GET', path);
      if (load !== deadLoads) return;
      if (!reply.ok || !reply.body) {
        $('dead-message').textContent = problem(reply);
        return;
      }
      tbody.append(...reply.body.tasks.map(deadRow));
      deadCursor = reply.body.next_cursor;
      $('dead-more').hidden = deadCursor === null;
      $('dead-message').textContent =
        tbody.rows.length + ' shown' + (deadCursor === null ? '' : '; More loads the next page');
    } catch (error) {
      if (load === deadLoads) $('dead-message').textContent = error.message;
    }
  }

  // Bytes that are JSON come back as JSON; others as base64 beside a null.
  function storedText(value, base64) {
    if (value === null && typeof base64 === 'string') return 'base64: ' + base64;
    return JSON.stringify(value);
  }

  function deadRow(task) {
    const payload = storedText(task.payload, task.payload_base64);
    const error = task.error === null ? '' : task.error;
    const retry = el('button', { type: 'button', class: 'retry' }, 'Retry');
    const remove = el('button', { type: 'button', class: 'delete' }, 'Delete');
    const actions = el('td', { class: 'actions' }, retry, ' ', remove);
    const row = el('tr', { 'data-id': task.id },
      // updated_at_ms: for a dead task, when it died.
      el('td', { class: 'id', title: 'died ' + new Date(task.updated_at_ms).toISOString() }, task.id),
      el('td', { class: 'attempts' }, task.attempts + ' of ' + task.max_attempts),
      el('td', { class: 'error', title: error }, shortened(error)),
      el('td', { class: 'payload', title: payload }, shortened(payload)),
      actions);
    const act = async (verb, done) => {
      retry.disabled = true;
      remove.disabled = true;
      try {
        const reply = await api('POST', '/v1/tasks/' + encodeURIComponent(task.id) + '/' + verb);
        if (reply.ok) {
          row.classList.add('done');
          actions.replaceChildren(el('span', { class: 'outcome' }, done(reply.body)));
          return;
        }
        actions.append(el('div', { class: 'outcome' }, problem(reply)));
      } catch (error) {
        actions.append(el('div', { class: 'outcome' }, error.message));
      }
      retry.disabled = false;
      remove.disabled = false;
    };
    retry.addEventListener('click', () => act('retry', (body) => 'retried: ' + body.state));
    remove.addEventListener('click', () => act('delete', () => 'deleted'));
    return row;
  }

  // ---- one task by id --------------------------------------------------------

  $('lookup-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const id = $('lookup-id').value.trim();
    const message = $('lookup-message');
    const result = $('lookup-result');
    result.textContent = '';
    if (!/^[0-9]{1,20}$/.test(id)) {
      message.textContent = 'a task id is a decimal number';
      return;
    }
    message.textContent = 'loading…';
    try {
      const reply = await api('GET', '/v1/tasks/' + id);
      message.textContent = reply.ok ? '' : problem(reply);
      if (reply.ok) result.textContent = JSON.stringify(reply.body, null, 2);
    } catch (error) {
      message.textContent = error.message;
    }
  });

  // ---- start -----------------------------------------------------------------

  poll();
  refreshQueues();
  setInterval(refreshQueues, QUEUES_POLL_MS);
})();
