// The dashboard: the organization's factories as charts of actual against
// goal, and its sprockets as a table, kept current by GET /v1/stream.
// The token stays in this tab's session storage and goes in the
// Authorization header only: EventSource cannot send headers, so the
// stream is read with fetch().
'use strict';

(() => {
  const TOKEN = 'sprockets-token';
  const PUBLIC = 'public'; // stored instead of a token: public reads
  const POINTS = 720; // the most points a chart asks for
  const $ = (sel) => document.querySelector(sel);

  let credential = sessionStorage.getItem(TOKEN) || '';
  let generation = 0; // bumped on every sign-out: older loops stop
  let abort = null; // stops the stream's fetch
  let lastEventId = '';
  const factories = new Map(); // id -> {meta, time, actual, goal, el, svg}
  const sprockets = new Map(); // id -> {data, row}

  class Refused extends Error {}

  async function api(path, opts = {}) {
    const headers = Object.assign({}, opts.headers);
    if (credential !== PUBLIC) headers.Authorization = 'Bearer ' + credential;
    const res = await fetch(path, Object.assign({}, opts, { headers, cache: 'no-store' }));
    if (res.status === 401 || res.status === 403) throw new Refused(await problem(res));
    if (!res.ok) throw new Error(await problem(res));
    return res;
  }

  async function problem(res) {
    try {
      const p = await res.json();
      return p.detail || p.title || String(res.status);
    } catch {
      return res.status + ' ' + res.statusText;
    }
  }

  function status(state, text) {
    document.body.dataset.state = state;
    $('#status').textContent = text || '';
  }

  function signOut(message) {
    generation++;
    if (abort) abort.abort();
    credential = '';
    sessionStorage.removeItem(TOKEN);
    factories.clear();
    sprockets.clear();
    lastEventId = '';
    $('#factories').replaceChildren();
    $('#sprockets tbody').replaceChildren();
    $('#signin-error').textContent = message || '';
    status('signin');
  }

  // ---- The stream -------------------------------------------------------

  // follow reads the stream until sign-out, reconnecting with
  // Last-Event-ID. Everything is read after the stream's ready (or reset)
  // event, so no change falls between the read and the stream.
  async function follow(gen) {
    status('loading', 'connecting…');
    while (gen === generation) {
      abort = new AbortController();
      try {
        const headers = lastEventId ? { 'Last-Event-ID': lastEventId } : {};
        const res = await api('/v1/stream', { headers, signal: abort.signal });
        for await (const ev of events(res.body)) {
          if (gen !== generation) return;
          if (ev.event === 'ready' || ev.event === 'reset') {
            // The position counts only once everything is read: a resume
            // after a failed read reads again.
            await loadAll(gen);
            lastEventId = ev.id;
            status('live', 'live');
            continue;
          }
          if (ev.id) lastEventId = ev.id;
          if (ev.event === 'end') {
            const reason = JSON.parse(ev.data).reason;
            if (reason === 'unauthenticated' || reason === 'forbidden') {
              signOut('Signed out: the token no longer reads this organization (' + reason + ').');
              return;
            }
            break; // the service could not go on (it may be restarting): reconnect
          } else if (ev.data) {
            apply(ev.event, JSON.parse(ev.data), gen);
          }
        }
      } catch (e) {
        abort.abort(); // the stream's connection, if a read failed
        if (gen !== generation) return;
        if (e instanceof Refused) {
          signOut('The token was refused: ' + e.message);
          return;
        }
        status(document.body.dataset.state, 'reconnecting… (' + e.message + ')');
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  }

  // events parses Server-Sent Events from a response body.
  async function* events(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value.replace(/\r\n?/g, '\n');
      let end;
      while ((end = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        const ev = { event: 'message', data: '', id: '' };
        for (const line of block.split('\n')) {
          if (line.startsWith(':')) continue;
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          const val = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
          if (field === 'event') ev.event = val;
          else if (field === 'data') ev.data += (ev.data ? '\n' : '') + val;
          else if (field === 'id') ev.id = val;
        }
        if (ev.id || ev.data) yield ev;
      }
    }
  }

  function apply(type, d, gen) {
    switch (type) {
      case 'sprocket.created':
      case 'sprocket.updated':
        upsertSprocket(d);
        break;
      case 'sprocket.deleted':
        removeSprocket(d);
        break;
      case 'factory.created':
        if (!factories.has(d.id)) {
          addFactory(d);
          loadChart(d.id, gen).catch(() => {});
        }
        break;
      case 'factory.updated':
        renameFactory(d);
        break;
      case 'factory.deleted':
        removeFactory(d);
        break;
      case 'factory.samples':
        appendSamples(d.factory_id, d.chart_data);
        break;
      case 'factory.rebuilt':
        renameFactory(d);
        loadChart(d.id, gen).catch(() => {});
        break;
    }
  }

  // ---- Reading everything -------------------------------------------------

  async function pages(first, most) {
    const out = [];
    let url = first;
    while (url && out.length < most) {
      const body = await (await api(url)).json();
      out.push(...body.items);
      url = body.next_cursor ? first + '&cursor=' + encodeURIComponent(body.next_cursor) : null;
    }
    return out;
  }

  async function loadAll(gen) {
    const [fs, ss] = await Promise.all([pages('/v1/factories?limit=100', 1000), pages('/v1/sprockets?limit=100', 1000)]);
    if (gen !== generation) return;
    factories.clear();
    $('#factories').replaceChildren();
    fs.forEach(addFactory);
    sprockets.clear();
    $('#sprockets tbody').replaceChildren();
    ss.forEach(upsertSprocket);
    await loadCharts(gen);
  }

  // loadCharts reads every chart, six at a time.
  async function loadCharts(gen) {
    const ids = [...factories.keys()];
    const next = async () => {
      while (ids.length > 0 && gen === generation) await loadChart(ids.shift(), gen);
    };
    await Promise.all(Array.from({ length: 6 }, next));
  }

  // loadChart reads a factory's chart over the range chosen in at most
  // POINTS points: its samples, or when there are more, each bucket's mean
  // (the service keeps them as samples arrive).
  async function loadChart(id, gen) {
    const f = factories.get(id);
    if (!f) return;
    const span = Number($('#range').value);
    const from = span && f.meta.last_time ? Math.max(f.meta.last_time - span, 0) : 0;
    const body = await (await api(`/v1/factories/${encodeURIComponent(id)}/chart-data?from=${from}&points=${POINTS}`)).json();
    if (gen !== generation || factories.get(id) !== f) return;
    const c = body.chart_data;
    f.from = from;
    f.bucket = body.bucket_seconds;
    f.time = c.time;
    f.actual = c.sprocket_production_actual;
    f.goal = c.sprocket_production_goal;
    draw(f);
  }

  // ---- Factories ------------------------------------------------------------

  const SVG = 'http://www.w3.org/2000/svg';
  const W = 600;
  const H = 160;

  function addFactory(meta) {
    const el = document.createElement('article');
    el.className = 'factory';
    el.dataset.factory = meta.id;
    const h = document.createElement('h3');
    const latest = document.createElement('div');
    latest.className = 'latest';
    const svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
    svg.setAttribute('preserveAspectRatio', 'none');
    svg.setAttribute('role', 'img');
    const axis = document.createElementNS(SVG, 'line');
    axis.setAttribute('class', 'axis');
    axis.setAttribute('x1', 0);
    axis.setAttribute('x2', W);
    axis.setAttribute('y1', H - 1);
    axis.setAttribute('y2', H - 1);
    const goal = document.createElementNS(SVG, 'polyline');
    goal.setAttribute('class', 'goal');
    const actual = document.createElementNS(SVG, 'polyline');
    actual.setAttribute('class', 'actual');
    svg.append(axis, goal, actual);
    el.append(h, svg, latest);
    $('#factories').append(el);
    const f = { meta, time: [], actual: [], goal: [], from: 0, el, svg, lines: { actual, goal }, h, latest, pending: false };
    factories.set(meta.id, f);
    renameFactory(meta);
    draw(f);
  }

  function renameFactory(meta) {
    const f = factories.get(meta.id);
    if (!f || meta.version < f.meta.version) return;
    f.meta = Object.assign({}, f.meta, meta);
    f.h.textContent = meta.name;
    f.svg.setAttribute('aria-label', `${meta.name}: actual and goal production`);
  }

  function removeFactory(d) {
    const f = factories.get(d.id);
    if (!f || d.version < f.meta.version) return;
    f.el.remove();
    factories.delete(d.id);
  }

  // appendSamples merges new samples into a chart, in time order (a time
  // already shown is replaced), and redraws it at the next frame.
  function appendSamples(id, c) {
    const f = factories.get(id);
    if (!f) return;
    for (let i = 0; i < c.time.length; i++) {
      const t = c.time[i];
      if (t < f.from) continue; // not in what the chart shows
      let at = f.time.length;
      if (at > 0 && t <= f.time[at - 1]) {
        at = f.time.findIndex((x) => x >= t);
      }
      const same = f.time[at] === t ? 1 : 0;
      f.time.splice(at, same, t);
      f.actual.splice(at, same, c.sprocket_production_actual[i]);
      f.goal.splice(at, same, c.sprocket_production_goal[i]);
    }
    if (!f.pending) {
      f.pending = true;
      requestAnimationFrame(() => {
        f.pending = false;
        draw(f);
      });
    }
  }

  function draw(f) {
    const n = f.time.length;
    f.el.dataset.points = n;
    if (n === 0) {
      f.lines.actual.setAttribute('points', '');
      f.lines.goal.setAttribute('points', '');
      f.latest.textContent = 'no samples in this range';
      return;
    }
    const t0 = f.time[0];
    const dt = Math.max(f.time[n - 1] - t0, 1);
    let hi = 1;
    for (let i = 0; i < n; i++) hi = Math.max(hi, f.actual[i], f.goal[i]);
    const x = (t) => (4 + ((W - 8) * (t - t0)) / dt).toFixed(1);
    const y = (v) => (H - 4 - ((H - 8) * v) / hi).toFixed(1);
    const line = (vals) => f.time.map((t, i) => x(t) + ',' + y(vals[i])).join(' ');
    f.lines.actual.setAttribute('points', line(f.actual));
    f.lines.goal.setAttribute('points', line(f.goal));
    const last = n - 1;
    f.el.dataset.lastTime = f.time[last];
    f.el.dataset.lastActual = f.actual[last];
    f.el.dataset.lastGoal = f.goal[last];
    const when = new Date(f.time[last] * 1000).toISOString().replace('T', ' ').replace('.000Z', ' UTC');
    const per = f.bucket ? ` (means per ${duration(f.bucket)})` : '';
    f.latest.textContent = `${n} points${per} · latest ${when}: actual ${f.actual[last]}, goal ${f.goal[last]}`;
  }

  function duration(seconds) {
    for (const [unit, n] of [['week', 604800], ['day', 86400], ['hour', 3600], ['minute', 60]]) {
      if (seconds % n === 0) return seconds === n ? unit : `${seconds / n} ${unit}s`;
    }
    return `${seconds} s`;
  }

  // ---- Sprockets ------------------------------------------------------------

  const COLUMNS = ['id', 'teeth', 'pitch_diameter', 'outside_diameter', 'pitch', 'version'];

  function upsertSprocket(s) {
    let held = sprockets.get(s.id);
    if (held && s.version <= held.data.version) return;
    if (!held) {
      const row = document.createElement('tr');
      row.dataset.sprocket = s.id;
      for (let i = 0; i < COLUMNS.length; i++) row.append(document.createElement('td'));
      $('#sprockets tbody').append(row);
      held = { data: s, row };
      sprockets.set(s.id, held);
    } else {
      held.row.classList.remove('changed');
      void held.row.offsetWidth; // restart the highlight
      held.row.classList.add('changed');
    }
    held.data = s;
    COLUMNS.forEach((k, i) => {
      held.row.children[i].textContent = String(s[k]);
    });
  }

  function removeSprocket(d) {
    const held = sprockets.get(d.id);
    if (!held || d.version <= held.data.version) return;
    held.row.remove();
    sprockets.delete(d.id);
  }

  // ---- Wiring -----------------------------------------------------------------

  $('#signin-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const input = $('#token');
    credential = input.value.trim();
    input.value = '';
    if (!credential) return;
    sessionStorage.setItem(TOKEN, credential);
    $('#signin-error').textContent = '';
    follow(++generation);
  });
  $('#public').addEventListener('click', () => {
    credential = PUBLIC;
    sessionStorage.setItem(TOKEN, PUBLIC);
    follow(++generation);
  });
  $('#signout').addEventListener('click', () => signOut(''));
  $('#range').addEventListener('change', () => {
    loadCharts(generation).catch((e) => status(document.body.dataset.state, 'error: ' + e.message));
  });

  if (credential) follow(++generation);
})();
