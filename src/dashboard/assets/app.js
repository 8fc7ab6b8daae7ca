// uppzy-worker dashboard. Plain JS, no dependencies. Every value from the server is put on the page
// with textContent or setAttribute on elements made with createElement: never innerHTML.
'use strict';
(function () {
  const body = document.body;
  const page = body.dataset.page;
  const readOnly = body.dataset.mode === 'read-only';
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrf = csrfMeta ? csrfMeta.getAttribute('content') : '';
  const REFRESH_MS = 5000;
  const SVG = 'http://www.w3.org/2000/svg';

  // ---- DOM helpers ------------------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    setAttrs(e, attrs);
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }
  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    setAttrs(e, attrs);
    return e;
  }
  function setAttrs(e, attrs) {
    if (!attrs) return;
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'text') e.textContent = String(v);
      else if (k === 'class') e.setAttribute('class', v);
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
  }
  function $(id) { return document.getElementById(id); }
  function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); return e; }

  // ---- Formatting -------------------------------------------------------------------------------
  function fmtInt(n) { return n === null || n === undefined ? '—' : Number(n).toLocaleString('en-US'); }
  function fmtRate(r) { return r === null || r === undefined ? '—' : (r * 100).toFixed(1) + '%'; }
  function fmtSeconds(s) {
    if (s === null || s === undefined) return '—';
    return s < 1 ? Math.round(s * 1000) + ' ms' : s.toFixed(s < 10 ? 2 : 1) + ' s';
  }
  function fmtAge(s) {
    if (s === null || s === undefined) return '—';
    s = Math.max(0, Math.floor(s));
    if (s < 60) return s + 's';
    if (s < 3600) return Math.floor(s / 60) + 'm ' + (s % 60) + 's';
    if (s < 86400) return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
    return Math.floor(s / 86400) + 'd ' + Math.floor((s % 86400) / 3600) + 'h';
  }
  // The server's times are ISO 8601 UTC; years outside 0000-9999 carry a sign and six digits
  // (-000043 is 44 BC, +294276 far future), and PostgreSQL's infinite times come as "infinity".
  function fmtTime(iso) {
    if (!iso) return '—';
    if (iso === 'infinity' || iso === '-infinity') return iso;
    const m = /^([+-]\d{6}|\d{4})-(\d\d-\d\d)T(\d\d:\d\d:\d\d)(\.\d+)?Z$/.exec(iso);
    if (!m) return iso.replace('T', ' ').replace(/\.\d+Z$/, '').replace(/Z$/, '') + ' UTC';
    const year = Number(m[1]);
    const rest = '-' + m[2] + ' ' + m[3] + ' UTC';
    return year <= 0 ? String(1 - year).padStart(4, '0') + rest + ' BC' : String(year).padStart(4, '0') + rest;
  }
  function ago(iso, nowIso) {
    if (!iso) return '';
    const now = nowIso ? Date.parse(nowIso) : Date.now();
    const s = (now - Date.parse(iso)) / 1000;
    return Number.isFinite(s) ? fmtAge(s) + ' ago' : '';
  }
  // metadata and result as JSON, or the server's marker for a value too large to send (see
  // include/uppzy/dashboard_store.h) as a readable note with the start of the value.
  function fmtJsonValue(v) {
    if (v === null || v === undefined) return '—';
    if (v && typeof v === 'object' && v.truncated === true && typeof v.full_value === 'string' && typeof v.preview === 'string') {
      return 'Too large to show here: ' + fmtInt(v.bytes) + ' bytes. The whole value: ' + v.full_value +
        '\nThe first ' + fmtInt(v.preview.length) + ' characters:\n\n' + v.preview + ' …';
    }
    return JSON.stringify(v, null, 2);
  }
  function badge(text, kind) { return el('span', { class: 'badge ' + (kind || ''), text: text }); }
  function stateBadge(state) { return badge(state, 'state-' + state); }

  // ---- HTTP -------------------------------------------------------------------------------------
  async function api(path, options) {
    const opts = { credentials: 'same-origin', headers: { Accept: 'application/json' } };
    if (options && options.body !== undefined) {
      opts.method = 'POST';
      opts.headers['Content-Type'] = 'application/json';
      opts.headers['X-CSRF-Token'] = csrf;
      opts.body = JSON.stringify(options.body);
    }
    const res = await fetch(path, opts);
    let data = null;
    try { data = await res.json(); } catch (e) { data = null; }
    if (res.status === 401) { window.location.assign('/login'); }
    if (!res.ok) {
      const err = new Error((data && data.error) || ('HTTP ' + res.status));
      err.status = res.status;
      throw err;
    }
    return data;
  }

  function showResult(target, text, isError) {
    const e = $(target);
    if (!e) return;
    e.textContent = text;
    e.className = isError ? 'result error' : 'result ok';
  }

  function actionButton(label, attrs, onClick) {
    const b = el('button', Object.assign({ type: 'button', text: label }, attrs || {}));
    if (readOnly) {
      b.disabled = true;
      b.title = 'Read-only: start the dashboard with UPPZY_DASHBOARD_TOKEN';
    } else {
      b.addEventListener('click', onClick);
    }
    return b;
  }

  // ---- Sign out ---------------------------------------------------------------------------------
  const signOut = $('sign-out');
  if (signOut) {
    signOut.addEventListener('click', async function () {
      try { await api('/logout', { body: {} }); } catch (e) { /* signed out anyway */ }
      window.location.assign('/login');
    });
  }

  // ---- Overview ---------------------------------------------------------------------------------
  const STATES = ['queued', 'submitting', 'polling', 'retrying', 'completed', 'failed', 'cancelled'];
  const WAITING = { queued: 1, submitting: 1, polling: 1, retrying: 1 };

  function renderIncidents(list) {
    const box = $('incidents');
    clear(box);
    box.hidden = list.length === 0;
    if (list.length === 0) return;
    box.append(el('h2', null, 'Open incidents (' + list.length + ')'),
      el('p', { class: 'hint' }, 'Workers using this API key have stopped calling Uppzy. Fix the key or the plan, then resolve: workers resume within a second.'));
    for (const inc of list) {
      const row = el('div', { class: 'incident', 'data-incident-id': inc.id },
        el('div', { class: 'incident-head' },
          badge(inc.kind + (inc.http_status ? ' · HTTP ' + inc.http_status : ''), 'bad'),
          el('span', { class: 'muted' }, ' incident ' + inc.id + ', opened ' + fmtTime(inc.opened_at))),
        el('dl', { class: 'kv' },
          el('dt', null, 'detail'), el('dd', { class: 'incident-detail' }, inc.detail || '—'),
          el('dt', null, 'site'), el('dd', null, inc.site_id || '—'),
          el('dt', null, 'API key fingerprint'), el('dd', { class: 'mono' }, inc.api_key_fingerprint),
          el('dt', null, 'opened by'), el('dd', null, inc.opened_by || '—')),
        actionButton('Resolve', { class: 'primary', id: 'resolve-' + inc.id }, async function (ev) {
          ev.target.disabled = true;
          try {
            await api('/api/incidents/' + encodeURIComponent(inc.id) + '/resolve', { body: {} });
            showResult('overview-result', 'Incident ' + inc.id + ' resolved.', false);
          } catch (e) {
            showResult('overview-result', e.message, true);
          }
          loadOverview();
        }));
      box.append(row);
    }
  }

  function renderStates(states) {
    const box = clear($('states'));
    for (const s of states) {
      box.append(el('div', { class: 'card state-card state-' + s.state },
        el('div', { class: 'card-label' }, s.state),
        el('a', { class: 'card-value', href: '/jobs?state=' + encodeURIComponent(s.state), id: 'state-' + s.state + '-jobs', 'data-value': s.jobs }, fmtInt(s.jobs)),
        el('div', { class: 'card-sub', id: 'state-' + s.state + '-oldest', 'data-value': s.oldest_age_seconds === null ? '' : s.oldest_age_seconds },
          s.oldest_age_seconds === null ? 'none' : (WAITING[s.state] ? 'oldest ' : 'kept ') + fmtAge(s.oldest_age_seconds))));
    }
  }

  const HEALTH_ROWS = [
    ['finished', 'finished', fmtInt], ['completed', 'completed', fmtInt], ['failed', 'failed', fmtInt],
    ['cancelled', 'cancelled', fmtInt], ['timeout_rate', 'timeout rate', fmtRate],
    ['retry_rate', 'retry rate', fmtRate], ['p50_seconds', 'time to answer p50', fmtSeconds],
    ['p95_seconds', 'time to answer p95', fmtSeconds]];

  function renderHealth(health) {
    const tbody = clear($('health').querySelector('tbody'));
    const keyOf = (p) => (p === '1 hour' ? '1h' : '24h');
    for (const [field, label, fmt] of HEALTH_ROWS) {
      const tr = el('tr', null, el('th', { scope: 'row' }, label));
      for (const w of health) {
        tr.append(el('td', { id: 'health-' + keyOf(w.period) + '-' + field, 'data-value': w[field] === null ? '' : w[field] }, fmt(w[field])));
      }
      tbody.append(tr);
    }
    const tr = el('tr', null, el('th', { scope: 'row' }, 'failures by error_kind'));
    for (const w of health) {
      const kinds = Object.entries(w.failures_by_kind || {}).sort((a, b) => b[1] - a[1]);
      const td = el('td', { id: 'health-' + keyOf(w.period) + '-failures' });
      if (kinds.length === 0) td.append('—');
      for (const [k, n] of kinds) {
        td.append(el('a', { class: 'kind', href: '/jobs?state=failed&error_kind=' + encodeURIComponent(k), 'data-kind': k, 'data-value': n }, k + ' ' + fmtInt(n)));
      }
      tr.append(td);
    }
    tbody.append(tr);
  }

  function renderFinishedChart(pm) {
    const box = clear($('chart-finished'));
    const H = 120;
    const rows = pm.rows || [];
    let max = 0;
    for (const r of rows) max = Math.max(max, r[1] + r[2] + r[3]);
    const chart = svg('svg', { viewBox: '0 0 1440 ' + H, preserveAspectRatio: 'none', class: 'chart-svg', role: 'img', 'aria-label': 'jobs finished per minute' });
    chart.append(svg('line', { x1: 0, y1: H - 0.5, x2: 1440, y2: H - 0.5, class: 'axis' }));
    const scale = max > 0 ? (H - 4) / max : 0;
    for (const r of rows) {
      let y = H;
      const parts = [[r[1], 'bar-completed'], [r[2], 'bar-failed'], [r[3], 'bar-cancelled']];
      for (const [n, cls] of parts) {
        if (n <= 0) continue;
        const h = Math.max(1, n * scale);
        y -= h;
        chart.append(svg('rect', { x: r[0], y: y, width: 1, height: h, class: cls }));
      }
    }
    box.append(chart, axisLabels(pm.start, max > 0 ? 'max ' + fmtInt(max) + ' / min' : 'nothing finished'));
  }

  function renderTimeoutChart(pm) {
    const box = clear($('chart-timeouts'));
    const H = 80;
    const BUCKET = 15;
    const n = 1440 / BUCKET;
    const finished = new Array(n).fill(0);
    const timeouts = new Array(n).fill(0);
    for (const r of pm.rows || []) {
      const b = Math.floor(r[0] / BUCKET);
      finished[b] += r[1] + r[2] + r[3];
      timeouts[b] += r[4];
    }
    let peak = 0;
    for (let i = 0; i < n; i++) if (finished[i] > 0) peak = Math.max(peak, timeouts[i] / finished[i]);
    const top = Math.max(peak, 0.01);
    const chart = svg('svg', { viewBox: '0 0 1440 ' + H, preserveAspectRatio: 'none', class: 'chart-svg', role: 'img', 'aria-label': 'timeout rate per 15 minutes' });
    chart.append(svg('line', { x1: 0, y1: H - 0.5, x2: 1440, y2: H - 0.5, class: 'axis' }));
    for (let i = 0; i < n; i++) {
      if (finished[i] === 0) continue;
      const rate = timeouts[i] / finished[i];
      const h = Math.max(rate > 0 ? 1 : 0.5, (rate / top) * (H - 4));
      chart.append(svg('rect', { x: i * BUCKET + 1, y: H - h, width: BUCKET - 2, height: h, class: rate > 0 ? 'bar-timeout' : 'bar-zero' }));
    }
    box.append(chart, axisLabels(pm.start, 'peak ' + fmtRate(peak) + ' (per 15 min)'));
  }

  function axisLabels(start, caption) {
    const t0 = Date.parse(start);
    const label = (m) => new Date(t0 + m * 60000).toISOString().slice(11, 16);
    return el('div', { class: 'axis-labels' },
      el('span', null, label(0) + ' UTC'), el('span', null, label(720)),
      el('span', null, el('span', { class: 'axis-max' }, caption), ' · now'));
  }

  function renderWorkers(workers, now) {
    const tbody = clear($('workers').querySelector('tbody'));
    if (workers.length === 0) {
      tbody.append(el('tr', null, el('td', { colspan: 7, class: 'muted' }, 'No worker has sent a heartbeat in the last 24 hours.')));
    }
    let alive = 0;
    for (const w of workers) {
      if (w.status === 'alive') alive++;
      tbody.append(el('tr', { class: 'worker-' + w.status, 'data-worker-id': w.id },
        el('td', { class: 'mono' }, w.id),
        el('td', null, w.host + ' (pid ' + w.pid + ')'),
        el('td', { title: fmtTime(w.started_at) }, ago(w.started_at, now)),
        el('td', { class: 'num' }, fmtInt(w.jobs_in_flight)),
        el('td', null, badge(w.breaker_state, w.breaker_state === 'closed' ? 'good' : 'bad')),
        el('td', { title: fmtTime(w.heartbeat_at) }, fmtAge(w.heartbeat_age_seconds) + ' ago'),
        el('td', null, badge(w.status, w.status === 'alive' ? 'good' : (w.status === 'gone' ? 'bad' : '')))));
    }
    $('workers-alive').textContent = alive + ' alive';
    $('workers-alive').setAttribute('data-value', alive);
  }

  // One row per site (the default site first). Site ids and pause reasons are operator input: text
  // nodes only, as everywhere. `sites` is absent from an overview of an older server: the panel stays.
  // A site's shared budget: "50/s · 25.0 now" (and "blocked" while a 429's block lasts), "—" with no limit.
  function fmtBudget(b) {
    if (!b || (b.requests_per_s === null && b.effective_rate_per_s === null && b.max_in_flight === null)) return '—';
    const parts = [];
    if (b.requests_per_s !== null) parts.push(Number(b.requests_per_s) + '/s');
    if (b.effective_rate_per_s !== null && b.effective_rate_per_s !== b.requests_per_s) {
      parts.push(Number(b.effective_rate_per_s).toFixed(1) + ' now');
    }
    if (b.max_in_flight !== null) parts.push('≤ ' + fmtInt(b.max_in_flight) + ' in flight');
    const text = parts.join(' · ') || '—';
    return b.blocked_until ? [text, ' ', el('span', { title: fmtTime(b.blocked_until) }, badge('blocked', 'bad'))] : text;
  }

  function renderSites(sites) {
    if (!Array.isArray(sites)) return;
    const tbody = clear($('sites').querySelector('tbody'));
    let unserved = 0;
    for (const s of sites) {
      const name = s.is_default ? '(default)' : s.site_id;
      const waiting = s.queued + s.retrying;
      if (!s.served) unserved++;
      const h = s.last_hour || {};
      const calls = h.status_calls_per_completed;
      tbody.append(el('tr', { class: 'site-row' + (s.served ? '' : ' site-unserved'), 'data-site-id': s.is_default ? '' : s.site_id },
        el('td', { class: s.is_default ? 'muted' : 'mono' }, name),
        el('td', { class: 'num' }, fmtInt(s.queued)),
        el('td', { class: 'num' }, fmtInt(s.retrying)),
        el('td', { class: 'num' }, fmtInt(s.submitting)),
        el('td', { class: 'num' }, fmtInt(s.polling)),
        el('td', { class: 'num' }, fmtAge(s.oldest_queued_age_seconds)),
        el('td', { class: 'site-served' }, s.served ? badge('yes', 'good')
          : badge((s.is_default ? 'no live worker' : 'no live worker holds its key') +
            (waiting > 0 ? ': ' + fmtInt(waiting) + ' waiting' : ''), 'bad')),
        el('td', { class: 'site-paused' }, s.paused_at
          ? [badge('paused', 'warn'), ' ', el('span', { title: fmtTime(s.paused_at) }, s.paused_reason || 'no reason given')]
          : el('span', { class: 'muted' }, 'no')),
        el('td', { class: 'num' }, s.open_incidents > 0 ? badge(fmtInt(s.open_incidents), 'bad') : '0'),
        el('td', { class: 'num' }, fmtInt(h.completed)),
        el('td', { class: 'num' }, calls === null || calls === undefined ? '—' : Number(calls).toFixed(2)),
        el('td', { class: 'num' }, fmtSeconds(h.seen_gap_p50_s) + ' / ' + fmtSeconds(h.seen_gap_p95_s)),
        el('td', { class: 'num site-budget' }, fmtBudget(s.budget)),
        el('td', { class: 'num' }, s.budget && s.budget.rate_limited > 0 ? badge(fmtInt(s.budget.rate_limited), 'warn') : '0')));
    }
    $('sites-unserved').textContent = unserved > 0 ? unserved + ' not served by any live worker' : '';
    $('sites-unserved').setAttribute('data-value', unserved);
  }

  function renderFeedback(feedback) {
    const tbody = clear($('feedback').querySelector('tbody'));
    for (const f of feedback) {
      const key = f.period === '1 hour' ? '1h' : '24h';
      const cell = (field, fmt) => el('td', { class: 'num', id: 'feedback-' + key + '-' + field, 'data-value': f[field] === null ? '' : f[field] }, fmt(f[field]));
      tbody.append(el('tr', null, el('th', { scope: 'row' }, 'last ' + f.period),
        cell('delivered', fmtInt), cell('failed', fmtInt), cell('good', fmtInt), cell('bad', fmtInt),
        cell('good_ratio', fmtRate), cell('pending', fmtInt)));
    }
  }

  let overviewTimer = null;
  async function loadOverview() {
    if (overviewTimer) clearTimeout(overviewTimer);
    try {
      const o = await api('/api/overview');
      renderIncidents(o.incidents);
      renderStates(o.states);
      renderHealth(o.health);
      renderFinishedChart(o.finished_per_minute);
      renderTimeoutChart(o.finished_per_minute);
      renderWorkers(o.workers, o.now);
      renderFeedback(o.feedback);
      renderSites(o.sites);
      $('updated').textContent = 'Updated ' + fmtTime(o.now) + ' · refreshes every ' + REFRESH_MS / 1000 + ' s' +
        (o.partial ? ' · the day\'s figures are being recomputed' : '');
      $('updated').setAttribute('data-now', o.now);
      $('load-error').hidden = true;
    } catch (e) {
      $('load-error').hidden = false;
      $('load-error').textContent = 'Could not refresh: ' + e.message;
    }
    overviewTimer = setTimeout(loadOverview, REFRESH_MS);
  }

  // ---- Jobs list --------------------------------------------------------------------------------
  const FILTERS = ['state', 'error_kind', 'job_key', 'session_id', 'since', 'until'];

  function currentParams() { return new URLSearchParams(window.location.search); }
  function currentFilter() {
    const p = currentParams();
    const f = {};
    for (const k of FILTERS) if (p.get(k)) f[k] = p.get(k);
    return f;
  }

  function selectedIds() {
    return Array.from(document.querySelectorAll('input.pick:checked')).map((c) => Number(c.value));
  }

  async function loadJobs() {
    const p = currentParams();
    const form = $('filters');
    for (const k of FILTERS.concat(['limit'])) {
      if (form.elements[k] && p.get(k) !== null) form.elements[k].value = p.get(k);
    }
    const q = new URLSearchParams();
    for (const k of FILTERS.concat(['after', 'limit'])) if (p.get(k)) q.set(k, p.get(k));
    const tbody = clear($('jobs').querySelector('tbody'));
    $('select-page').checked = false;
    try {
      const data = await api('/api/jobs?' + q.toString());
      $('list-error').hidden = true;
      if (data.jobs.length === 0) {
        tbody.append(el('tr', null, el('td', { colspan: 11, class: 'muted' }, 'No job matches.')));
      }
      for (const j of data.jobs) {
        tbody.append(el('tr', { 'data-job-id': j.id },
          el('td', null, el('input', { type: 'checkbox', class: 'pick', value: j.id, 'aria-label': 'select job ' + j.id })),
          el('td', null, el('a', { href: '/jobs/' + Number(j.id), class: 'job-link' }, String(j.id))),
          el('td', null, stateBadge(j.state), j.cancel_requested_at && !['completed', 'failed', 'cancelled'].includes(j.state) ? badge('cancel requested', 'warn') : null),
          el('td', { class: 'num' }, j.attempts + '/' + j.max_attempts),
          el('td', null, j.error_kind || ''),
          el('td', { class: 'num' }, j.last_http_status === null ? '' : String(j.last_http_status)),
          el('td', { class: 'mono clip' }, j.job_key || ''),
          el('td', { class: 'mono clip' }, j.session_id),
          el('td', { title: j.created_at }, fmtTime(j.created_at)),
          el('td', { title: j.finished_at || '' }, j.finished_at ? fmtTime(j.finished_at) : ''),
          el('td', { class: 'clip last-error' }, j.last_error || '')));
      }
      const next = $('next-page');
      if (data.next) {
        const np = new URLSearchParams(q);
        np.set('after', data.next);
        next.setAttribute('href', '/jobs?' + np.toString());
        next.hidden = false;
      } else {
        next.removeAttribute('href');
        next.hidden = true;
      }
      const first = new URLSearchParams(q);
      first.delete('after');
      $('first-page').setAttribute('href', '/jobs?' + first.toString());
      $('first-page').hidden = !p.get('after');
      $('list-summary').textContent = data.jobs.length + (data.next ? '+ jobs' : ' jobs') + (p.get('after') ? ' (older page)' : '');
    } catch (e) {
      $('list-error').hidden = false;
      $('list-error').textContent = e.message;
    }
  }

  function describeFilter(f) {
    const parts = Object.entries(f).map(([k, v]) => k + '=' + v);
    return parts.length ? parts.join(', ') : 'no filter';
  }

  async function jobsAction(kind, matching) {
    const verb = kind === 'retry' ? 'requeued' : 'cancelled';
    let body;
    if (matching) {
      const f = currentFilter();
      if (Object.keys(f).length === 0) {
        showResult('action-result', 'Set a filter first: "all that match" needs at least one.', true);
        return;
      }
      const what = kind === 'retry' ? 'Retry every finished job' : 'Cancel every unfinished job';
      if (!window.confirm(what + ' that matches ' + describeFilter(f) + '?')) return;
      body = { filter: f };
    } else {
      const ids = selectedIds();
      if (ids.length === 0) {
        showResult('action-result', 'Select jobs first.', true);
        return;
      }
      body = { ids: ids };
    }
    try {
      const r = await api('/api/jobs/' + kind, { body: body });
      const n = r[verb];
      showResult('action-result', (kind === 'retry' ? 'Requeued ' : 'Cancelled ') + n + ' job' + (n === 1 ? '' : 's') +
        (r.requested !== undefined ? ' of ' + r.requested + ' selected' : ' matching ' + describeFilter(r.filter)) +
        (r.capped ? ' (the first 100,000; repeat for more)' : '') + '.', false);
    } catch (e) {
      showResult('action-result', e.message, true);
    }
    loadJobs();
  }

  function initJobs() {
    $('select-page').addEventListener('change', function (ev) {
      for (const c of document.querySelectorAll('input.pick')) c.checked = ev.target.checked;
    });
    const bar = $('actions');
    bar.append(
      actionButton('Retry selected', { id: 'retry-selected' }, () => jobsAction('retry', false)),
      actionButton('Cancel selected', { id: 'cancel-selected' }, () => jobsAction('cancel', false)),
      actionButton('Retry all that match', { id: 'retry-matching' }, () => jobsAction('retry', true)),
      actionButton('Cancel all that match', { id: 'cancel-matching' }, () => jobsAction('cancel', true)),
      el('span', { id: 'action-result', class: 'result', role: 'status' }));
    // Empty fields stay out of the URL.
    $('filters').addEventListener('submit', function (ev) {
      ev.preventDefault();
      const q = new URLSearchParams();
      for (const k of FILTERS.concat(['limit'])) {
        const v = this.elements[k] ? this.elements[k].value.trim() : '';
        if (v && !(k === 'limit' && v === '50')) q.set(k, v);
      }
      window.location.assign('/jobs' + (q.toString() ? '?' + q.toString() : ''));
    });
    loadJobs();
  }

  // ---- One job ----------------------------------------------------------------------------------
  const jobId = page === 'job' ? decodeURIComponent(window.location.pathname.split('/')[2] || '') : '';
  let jobTimer = null;

  const FIELDS = ['id', 'job_key', 'session_id', 'state', 'attempts', 'max_attempts', 'priority', 'response_language',
    'request_id', 'polls', 'error_kind', 'last_http_status', 'last_error', 'created_at', 'run_at', 'submitted_at',
    'poll_deadline', 'updated_at', 'finished_at', 'cancel_requested_at', 'locked_by', 'lease_expires_at'];
  const TIME_FIELDS = { created_at: 1, run_at: 1, submitted_at: 1, poll_deadline: 1, updated_at: 1, finished_at: 1, cancel_requested_at: 1, lease_expires_at: 1 };

  function renderTimeline(errors) {
    const ol = clear($('timeline'));
    if (!errors || errors.length === 0) {
      ol.append(el('li', { class: 'muted' }, 'No error, retry or operator event yet.'));
      return;
    }
    errors.forEach(function (e, i) {
      const kind = e.kind === undefined || e.kind === null ? '?' : String(e.kind);
      const operator = kind.startsWith('operator') || kind === 'cancelled' || kind === 'truncated';
      ol.append(el('li', { class: 'event' + (operator ? ' operator' : ''), 'data-kind': kind, 'data-index': i },
        el('div', { class: 'event-head' },
          badge(kind, operator ? 'info' : 'bad'),
          el('span', { class: 'muted' }, ' ' + (e.at ? fmtTime(String(e.at)) : 'time unknown') +
            (e.attempt !== undefined && e.attempt !== null ? ' · attempt ' + e.attempt : '') +
            (e.http_status ? ' · HTTP ' + e.http_status : ''))),
        el('div', { class: 'event-message' }, e.message === undefined || e.message === null ? '' : String(e.message)),
        e.request_id ? el('div', { class: 'mono muted' }, 'request_id ' + String(e.request_id)) : null));
    });
  }

  function renderJob(j) {
    $('job-title').textContent = 'Job ' + j.id + ' ';
    $('job-title').append(stateBadge(j.state));
    const table = clear($('job-fields'));
    for (const f of FIELDS) {
      let v = j[f];
      v = v === null || v === undefined ? '—' : (TIME_FIELDS[f] ? fmtTime(v) : String(v));
      table.append(el('tr', null, el('th', { scope: 'row' }, f), el('td', { id: 'field-' + f, class: f === 'last_error' ? 'wrap' : 'mono' }, v)));
    }
    $('metadata').textContent = fmtJsonValue(j.metadata);
    $('result').textContent = fmtJsonValue(j.result);
    renderTimeline(j.errors);
    if (j.notification) {
      $('notification').textContent = 'NOTIFY ' + j.notification.channel + ', ' + j.notification.text;
    } else {
      $('notification').textContent = 'Not sent yet: the job has not finished. It will be NOTIFY uppzy_chat_jobs with {"kind": "chat_job", "id": ' + j.id + ', "job_key": …, "state": …}.';
    }
    const text = $('text');
    clear(text);
    if (body.dataset.showText === '1') {
      if (j.text_error) text.append(el('p', { class: 'error' }, j.text_error));
      text.append(el('h3', null, 'message'), el('pre', { id: 'job-message' }, j.message === null || j.message === undefined ? '—' : j.message),
        el('h3', null, 'answer'), el('pre', { id: 'job-answer' }, j.answer === null || j.answer === undefined ? '—' : j.answer));
    } else {
      text.append(el('p', { class: 'muted' }, 'The message and answer text are hidden. Start the dashboard with --show-text to see them.'));
    }
    const bar = clear($('job-actions'));
    if (j.actions.retry) {
      bar.append(actionButton('Retry', { id: 'job-retry', class: 'primary' }, () => jobAction('retry')));
    }
    if (j.actions.cancel) {
      bar.append(actionButton('Cancel', { id: 'job-cancel' }, () => jobAction('cancel')));
    }
  }

  async function jobAction(kind) {
    try {
      const r = await api('/api/jobs/' + encodeURIComponent(jobId) + '/' + kind, { body: {} });
      await loadJob();
      showResult('action-result', (kind === 'retry' ? 'Requeued: the job is ' : 'Cancel requested: the job is ') + r.state + '.', false);
    } catch (e) {
      showResult('action-result', e.message, true);
    }
  }

  async function loadJob() {
    if (jobTimer) clearTimeout(jobTimer);
    try {
      const j = await api('/api/jobs/' + encodeURIComponent(jobId));
      $('job-error').hidden = true;
      $('job-body').hidden = false;
      renderJob(j);
      jobTimer = setTimeout(loadJob, REFRESH_MS);
    } catch (e) {
      $('job-error').hidden = false;
      $('job-error').textContent = e.message;
      if (e.status === 404) $('job-body').hidden = true;
      else jobTimer = setTimeout(loadJob, REFRESH_MS);
    }
  }

  // ---- Start ------------------------------------------------------------------------------------
  for (const a of document.querySelectorAll('nav a[data-nav]')) {
    if (a.dataset.nav === page || (page === 'job' && a.dataset.nav === 'jobs')) a.classList.add('active');
  }
  if (page === 'overview') loadOverview();
  else if (page === 'jobs') initJobs();
  else if (page === 'job') loadJob();
})();
