// facecurate review gallery: plain JS, no build step.
//
// Why it is shaped like this:
// - The server answers a filter with the ordered item keys only; the grid is virtual (only the rows in view
//   exist in the DOM) and fetches item details in pages for what is in view, so 10,000 items cost one small
//   JSON list and a few dozen thumbnails, never all images at once.
// - Every string that came from the web (titles, URLs, file names, authors, labels, queries) is written with
//   textContent or as an attribute value through the DOM API, never as HTML.
// - Writes carry the per-run token from the page's <meta>; the server refuses writes without it.
'use strict';

(() => {
  const TOKEN = document.querySelector('meta[name="fc-token"]').content;
  const CELL_W = 176;
  const CELL_H = 226;
  const PAGE = 120;
  const BUFFER_ROWS = 2;
  const $ = (id) => document.getElementById(id);
  const grid = $('grid');
  const canvas = $('canvas');

  const state = {
    keys: [], index: new Map(), items: new Map(), pending: new Set(), cells: new Map(),
    cursor: 0, anchor: null, selected: new Set(), cols: 1, facets: null, scores: new Map(),
    detailKey: null, queryId: 0, sort: '',
  };
  // Hooks for tests and the benchmark: when the first filter has drawn, and when the latest one has.
  const fc = window.fc = { ready: false, filterDone: 0, lastFilterMs: null, lastWrite: 0, renders: 0, state };

  // -- server ---------------------------------------------------------------------------------------------

  async function api(path, body) {
    const init = { headers: { Accept: 'application/json' }, credentials: 'same-origin' };
    if (body !== undefined) {
      init.method = 'POST';
      init.headers['Content-Type'] = 'application/json';
      init.headers['X-Facecurate-Token'] = TOKEN;
      init.body = JSON.stringify(body);
    }
    const res = await fetch(path, init);
    if (!res.ok) {
      let msg = `${res.status}`;
      try { msg = (await res.json()).error || msg; } catch (e) { /* not JSON */ }
      throw new Error(msg);
    }
    return res.json();
  }

  // -- small DOM helpers (text only) -----------------------------------------------------------------------

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function fmt(n) { return Number(n).toLocaleString('en-US'); }

  function num(v) {
    if (typeof v !== 'number') return v === null || v === undefined ? '—' : String(v);
    if (Number.isInteger(v)) return String(v);
    return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toFixed(3);
  }

  function safeHttpUrl(text) {
    try {
      const url = new URL(text);
      return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : null;
    } catch (e) { return null; }
  }

  let toastTimer = null;
  function toast(text) {
    const t = $('toast');
    t.textContent = text;
    t.classList.add('show');
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => t.classList.remove('show'), 2600);
  }

  // -- filters ------------------------------------------------------------------------------------------

  const selects = ['f-status', 'f-reason', 'f-label', 'f-query', 'f-decision', 'f-sort'].map($);

  function fillSelect(sel, counts, keepFirst) {
    while (sel.options.length > keepFirst) sel.remove(keepFirst);
    for (const [value, n] of Object.entries(counts)) sel.add(new Option(`${value} (${fmt(n)})`, value));
  }

  function setupFilters(f, initial) {
    fillSelect($('f-status'), f.statuses, 1);
    fillSelect($('f-reason'), f.reasons, 1);
    fillSelect($('f-label'), f.labels, 1);
    fillSelect($('f-query'), f.queries, 1);
    const sort = $('f-sort');
    for (const s of f.scores) {
      state.scores.set(s.name, s);
      const rule = s.rule && s.rule !== s.name ? ` (${s.rule})` : '';
      sort.add(new Option(`score: ${s.name}${rule}`, `score:${s.name}`));
    }
    // The menus take the filter already shown where they offer its values; no rejects at all: show everything.
    for (const sel of selects) {
      const v = initial.get(sel.dataset.param);
      if (v !== null && [...sel.options].some((o) => o.value === v)) sel.value = v;
    }
    if (!f.statuses.reject && !new URLSearchParams(location.hash.slice(1)).has('status')) $('f-status').value = 'any';
    setDir(initial.get('dir') === 'best' ? 'best' : 'worst');
    for (const sel of selects) {
      sel.addEventListener('change', () => {
        if (sel.id === 'f-reason') autoSort();
        if (sel.id === 'f-sort') sortByHand = true;
        sel.blur();
        applyFilter();
      });
    }
    $('f-dir').addEventListener('click', () => {
      setDir($('f-dir').dataset.dir === 'worst' ? 'best' : 'worst');
      $('f-dir').blur();
      applyFilter();
    });
  }

  function setDir(dir) {
    const b = $('f-dir');
    b.dataset.dir = dir;
    b.textContent = dir === 'worst' ? 'worst first' : 'best first';
  }

  // Choosing a reason sorts by the score its rule reads, worst first, unless a score was chosen by hand.
  let sortByHand = false;
  function autoSort() {
    const score = (state.facets.reason_scores || {})[$('f-reason').value];
    const sort = $('f-sort');
    if (score && state.scores.has(score) && !sortByHand) {
      sort.value = `score:${score}`;
      setDir('worst');
    }
  }

  function filterParams() {
    const p = new URLSearchParams();
    for (const sel of selects) if (sel.value) p.set(sel.dataset.param, sel.value);
    p.set('dir', $('f-dir').dataset.dir);
    return p;
  }

  // The first page in view comes with the keys (one round trip per filter change, not two).
  function firstPage() {
    const cols = Math.max(1, Math.floor(grid.clientWidth / CELL_W));
    return cols * (Math.ceil(grid.clientHeight / CELL_H) + BUFFER_ROWS + 1);
  }

  // The filter named in the URL, else the rejects: what the page shows first, before the menus are filled.
  function initialParams() {
    const wanted = new URLSearchParams(location.hash.slice(1));
    const defaults = { status: 'reject', decision: 'any', sort: 'reasons' };
    const p = new URLSearchParams();
    for (const sel of selects) {
      const v = wanted.has(sel.dataset.param) ? wanted.get(sel.dataset.param) : defaults[sel.dataset.param];
      if (v) p.set(sel.dataset.param, v);
    }
    p.set('dir', wanted.get('dir') === 'best' ? 'best' : 'worst');
    return p;
  }

  async function applyFilter(given) {
    const id = ++state.queryId;
    const t0 = performance.now();
    const params = given || filterParams();
    history.replaceState(null, '', `#${params}`);
    let data;
    try {
      data = await api(`/api/query?${params}&first=${firstPage()}`);
    } catch (e) { toast(`filter failed: ${e.message}`); return; }
    if (id !== state.queryId) return;
    for (const item of data.items) {
      const known = state.items.get(item.key);
      item.v = known ? known.v + 1 : 1;
      state.items.set(item.key, item);
    }
    state.keys = data.keys;
    state.sort = params.get('sort') || '';
    state.index = new Map(data.keys.map((k, i) => [k, i]));
    state.selected.clear();
    state.cursor = 0;
    state.anchor = null;
    $('count').textContent = `${fmt(data.count)} of ${fmt(data.total)}`;
    $('empty').hidden = data.count > 0;
    grid.scrollTop = 0;
    layout();
    await loadVisible();
    if (id !== state.queryId) return;
    render();
    if (state.detailKey) openDetail();
    fc.lastFilterMs = performance.now() - t0;
    fc.filterDone = performance.now();
  }

  // -- the virtual grid -----------------------------------------------------------------------------------

  function layout() {
    state.cols = Math.max(1, Math.floor(grid.clientWidth / CELL_W));
    const rows = Math.ceil(state.keys.length / state.cols);
    canvas.style.height = `${rows * CELL_H}px`;
    canvas.style.width = `${state.cols * CELL_W}px`;
    for (const cell of state.cells.values()) dropCell(cell);
    state.cells.clear();
  }

  // A cell leaving the view cancels its thumbnail download: scrolling fast through 10,000 faces, or changing
  // the filter, must not leave the browser's six connections busy with images nobody will see.
  function dropCell(cell) {
    const img = cell.querySelector('img');
    if (img && !img.complete) img.removeAttribute('src');
    cell.remove();
  }

  function visibleRange() {
    const first = Math.max(0, Math.floor(grid.scrollTop / CELL_H) - BUFFER_ROWS);
    const last = Math.floor((grid.scrollTop + grid.clientHeight) / CELL_H) + BUFFER_ROWS;
    return [first * state.cols, Math.min(state.keys.length, (last + 1) * state.cols)];
  }

  async function loadVisible() {
    const [start, end] = visibleRange();
    const missing = state.keys.slice(start, end).filter((k) => !state.items.has(k) && !state.pending.has(k));
    const jobs = [];
    for (let i = 0; i < missing.length; i += PAGE) {
      const page = missing.slice(i, i + PAGE);
      page.forEach((k) => state.pending.add(k));
      jobs.push(api(`/api/items?keys=${page.join(',')}`).then((data) => {
        for (const item of data.items) { item.v = 1; state.items.set(item.key, item); }
      }).finally(() => page.forEach((k) => state.pending.delete(k))));
    }
    if (jobs.length) await Promise.allSettled(jobs);
  }

  let frame = 0;
  function scheduleRender() {
    if (frame) return;
    frame = requestAnimationFrame(() => {
      frame = 0;
      render();
      loadVisible().then(render);
    });
  }

  function render() {
    fc.renders += 1;
    const [start, end] = visibleRange();
    for (const [i, cell] of state.cells) {
      if (i < start || i >= end || cell.dataset.key !== state.keys[i]) { dropCell(cell); state.cells.delete(i); }
    }
    for (let i = start; i < end; i++) {
      const key = state.keys[i];
      let cell = state.cells.get(i);
      if (!cell) {
        cell = makeCell(i, key);
        state.cells.set(i, cell);
        canvas.appendChild(cell);
      }
      fillCell(cell, state.items.get(key));
      cell.classList.toggle('focus', i === state.cursor);
      cell.classList.toggle('selected', state.selected.has(key));
    }
    $('selcount').textContent = state.selected.size ? `${fmt(state.selected.size)} selected` : '';
  }

  function makeCell(i, key) {
    const cell = el('div', 'cell');
    cell.dataset.key = key;
    cell.dataset.index = String(i);
    cell.style.transform = `translate(${(i % state.cols) * CELL_W}px, ${Math.floor(i / state.cols) * CELL_H}px)`;
    const box = el('div', 'thumb');
    const img = el('img');
    img.loading = 'lazy';
    img.decoding = 'async';
    img.alt = '';
    img.width = 160;
    img.height = 160;
    img.addEventListener('error', () => cell.classList.add('broken'), { once: true });
    img.src = `/thumb/${encodeURIComponent(key)}`;
    box.appendChild(img);
    box.appendChild(el('span', 'mark'));
    cell.appendChild(box);
    cell.appendChild(el('div', 'line1'));
    cell.appendChild(el('div', 'line2'));
    return cell;
  }

  function sortScore(item) {
    const sort = state.sort;
    if (sort.startsWith('score:')) {
      const v = item.scores[sort.slice(6)];
      return `${sort.slice(6)} ${num(v)}`;
    }
    if (sort === 'det_score' && item.det_score !== null) return `det ${num(item.det_score)}`;
    return null;
  }

  function fillCell(cell, item) {
    if (!item) { cell.classList.add('loading'); return; }
    if (cell.dataset.v === String(item.v)) return;
    cell.dataset.v = String(item.v);
    cell.classList.remove('loading');
    const decision = item.review.decision;
    cell.className = cell.className.replace(/\b(st|dec)-\S+/g, '').trim();
    // The badge is what the stages said (it never changes with a decision); the mark is the person's decision.
    cell.classList.add(`st-${item.rule_status}`, `dec-${decision}`);
    const mark = cell.querySelector('.mark');
    const said = item.review.reason ? ` (${item.review.reason.replace('_', ' ')})` : '';
    mark.textContent = decision === 'kept' ? `✓ kept${said}` : decision === 'rejected' ? `✗ rejected${said}` : '';
    const line1 = cell.querySelector('.line1');
    line1.textContent = '';
    line1.appendChild(el('span', `badge st-${item.rule_status}`, item.rule_status.replace('_', ' ')));
    const reasons = item.decidable ? item.reasons.join(', ') : '';  // a photo row's reason is its badge
    line1.appendChild(el('span', 'reasons', reasons || (item.rule_status === 'keep' ? 'no reason' : '')));
    const line2 = cell.querySelector('.line2');
    const score = sortScore(item);
    line2.textContent = score ? `${score} · ${item.title || item.name}` : (item.title || item.name || '');
    cell.title = [item.title, item.name, reasons && `reasons: ${reasons}`, item.query && `query: ${item.query}`,
      item.label && `label: ${item.label}`].filter(Boolean).join('\n');
  }

  // -- moving and selecting ------------------------------------------------------------------------------

  function setCursor(i, extend) {
    if (!state.keys.length) return;
    const next = Math.max(0, Math.min(state.keys.length - 1, i));
    if (extend) {
      if (state.anchor === null) state.anchor = state.cursor;
      const [a, b] = state.anchor < next ? [state.anchor, next] : [next, state.anchor];
      state.selected = new Set(state.keys.slice(a, b + 1));
    } else {
      state.anchor = null;
    }
    state.cursor = next;
    scrollToCursor();
    render();
    if (state.detailKey) openDetail();
  }

  function scrollToCursor() {
    const top = Math.floor(state.cursor / state.cols) * CELL_H;
    if (top < grid.scrollTop) grid.scrollTop = top;
    else if (top + CELL_H > grid.scrollTop + grid.clientHeight) grid.scrollTop = top + CELL_H - grid.clientHeight;
    scheduleRender();
  }

  function toggleSelect() {
    const key = state.keys[state.cursor];
    if (key === undefined) return;
    if (state.selected.has(key)) state.selected.delete(key); else state.selected.add(key);
    state.anchor = state.cursor;
    render();
  }

  function selectAll() {
    state.selected = state.selected.size === state.keys.length ? new Set() : new Set(state.keys);
    render();
    toast(state.selected.size ? `${fmt(state.selected.size)} selected: k or r decides them all` : 'selection cleared');
  }

  // -- deciding -----------------------------------------------------------------------------------------

  function applyChanges(changed) {
    for (const { key, review } of changed) {
      const item = state.items.get(key);
      if (item) { item.review = review; item.v += 1; }
    }
    render();
    if (state.detailKey && changed.some((c) => c.key === state.detailKey)) openDetail();
  }

  // Key presses write in the order they were made (the log's order is what undo walks back), but the view
  // never waits for the server: a fast r r r rejects three faces, one after the other.
  let chain = Promise.resolve();
  function enqueue(job) {
    chain = chain.then(job, job).then(() => { fc.lastWrite = performance.now(); });
    return chain;
  }

  function decide(decision, reason) {
    if (!state.keys.length) return;
    const bulk = state.selected.size > 0;
    const keys = bulk ? state.keys.filter((k) => state.selected.has(k)) : [state.keys[state.cursor]];
    const item = state.items.get(keys[0]);
    if (!bulk && item && !item.decidable) {
      toast('no face was found in this photo: nothing to keep or reject');
      return;
    }
    if (bulk) {
      state.selected.clear();
      state.anchor = null;
      render();
    } else {
      setCursor(state.cursor + 1, false);
    }
    enqueue(async () => {
      try {
        const res = await api('/api/decide', reason ? { keys, decision, reason } : { keys, decision });
        applyChanges(res.changed);
        if (bulk || reason) toast(`${decision}${reason ? ` (${reason})` : ''} ${fmt(res.changed.length)} · u undoes`);
        refreshCalibration();
      } catch (e) {
        toast(`not saved: ${e.message}`);
      }
    });
  }

  function undo() {
    enqueue(async () => {
      try {
        const res = await api('/api/undo', {});
        if (!res.changed.length) { toast('nothing to undo'); return; }
        applyChanges(res.changed);
        const idx = state.index.get(res.changed[0].key);
        if (idx !== undefined) setCursor(idx, false);
        toast(`undone: ${fmt(res.changed.length)} item${res.changed.length > 1 ? 's' : ''}`);
      } catch (e) {
        toast(`undo failed: ${e.message}`);
      }
    });
  }

  // -- details ------------------------------------------------------------------------------------------

  function svgEl(tag, attrs) {
    const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    return node;
  }

  function drawPhoto(d) {
    const svg = $('d-svg');
    svg.textContent = '';
    const pts = d.face ? d.face.quad.concat([[d.face.bbox[0], d.face.bbox[1]], [d.face.bbox[2], d.face.bbox[3]]]) : [];
    const xs = [0, d.width, ...pts.map((p) => p[0])];
    const ys = [0, d.height, ...pts.map((p) => p[1])];
    const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    const pad = 0.02 * Math.max(x1 - x0, y1 - y0);
    svg.setAttribute('viewBox', `${x0 - pad} ${y0 - pad} ${x1 - x0 + 2 * pad} ${y1 - y0 + 2 * pad}`);
    const stroke = Math.max(d.width, d.height) / 300;
    svg.appendChild(svgEl('rect', { x: 0, y: 0, width: d.width, height: d.height, class: 'frame' }));
    svg.appendChild(svgEl('image', { href: `/preview/${d.image_id}`, x: 0, y: 0, width: d.width, height: d.height,
      preserveAspectRatio: 'none' }));
    if (!d.face) return;
    const [bx0, by0, bx1, by1] = d.face.bbox;
    svg.appendChild(svgEl('rect', { x: bx0, y: by0, width: bx1 - bx0, height: by1 - by0, class: 'box',
      'stroke-width': stroke }));
    svg.appendChild(svgEl('polygon', { points: d.face.quad.map((p) => p.join(',')).join(' '), class: 'quad',
      'stroke-width': stroke }));
    const [ul, , , ur] = d.face.quad;  // quad: upper-left, lower-left, lower-right, upper-right; thick top edge
    svg.appendChild(svgEl('line', { x1: ul[0], y1: ul[1], x2: ur[0], y2: ur[1], class: 'qtop',
      'stroke-width': stroke * 2 }));
    for (const [x, y] of d.face.landmarks) {
      svg.appendChild(svgEl('circle', { cx: x, cy: y, r: stroke * 2, class: 'lm' }));
    }
  }

  function kvRow(table, k, v, cls) {
    const tr = el('tr', cls);
    tr.appendChild(el('th', null, k));
    if (v instanceof Node) { const td = el('td'); td.appendChild(v); tr.appendChild(td); } else tr.appendChild(el('td', null, v));
    table.appendChild(tr);
  }

  function fillDetail(d) {
    $('d-name').textContent = d.sources.length && d.sources[0].title ? d.sources[0].title : d.name;
    $('d-nav').textContent = `${fmt(state.cursor + 1)} / ${fmt(state.keys.length)}`;
    $('d-keep').disabled = $('d-reject').disabled = !d.decidable;
    drawPhoto(d);
    $('d-photo-cap').textContent = `${d.name} · ${d.width}×${d.height}` +
      (d.face ? ' · box (green), landmarks (yellow), crop quad (blue, top edge thick)' : '');
    const crop = $('d-crop');
    crop.hidden = !d.face;
    if (d.face) crop.src = `/crop/${encodeURIComponent(d.key)}`;

    const verdict = $('d-verdict');
    verdict.textContent = '';
    const stage = { duplicate: 'dedup', no_face: 'crop', failed: 'crop' }[d.rule_status] || (d.face ? 'rules' : 'crop');
    verdict.appendChild(el('span', `badge st-${d.rule_status}`, `${stage}: ${d.rule_status.replace('_', ' ')}`));
    verdict.appendChild(el('span', 'reasons', d.reasons.length ? ` ${d.reasons.join(', ')}` : ' no reason'));
    const r = d.review;
    verdict.appendChild(el('div', `person dec-${r.decision}`, r.decision === 'none' ? 'no decision by a person yet'
      : `${r.decision} by ${r.by} at ${r.at}: this overrides the rules in the export`));

    const scores = $('d-scores');
    scores.textContent = '';
    if (!d.scores.length) kvRow(scores, 'none', 'the rules have not scored this face');
    for (const s of d.scores) {
      const th = s.threshold === null ? 'no threshold'
        : `${s.worse === 'low' ? 'fires below' : 'fires at or above'} ${num(s.threshold)}`;
      const rule = s.rule && s.rule !== s.name ? ` → ${s.rule}` : '';
      kvRow(scores, `${s.name}${rule}`, `${num(s.value)} · ${th}`, s.fails ? 'fails' : '');
    }
    const measures = $('d-measures');
    measures.textContent = '';
    for (const [k, v] of Object.entries(d.measures)) kvRow(measures, k, num(v));

    const dups = $('d-dups');
    dups.textContent = '';
    $('d-dups-sec').hidden = !d.duplicates;
    if (d.duplicates) {
      for (const m of d.duplicates.members) {
        const fig = el('figure', m.current ? 'current' : '');
        const img = el('img');
        img.loading = 'lazy';
        img.alt = '';
        img.src = `/thumb/${encodeURIComponent(m.thumb)}`;
        fig.appendChild(img);
        const dist = m.distance === null ? '' : ` · distance ${num(m.distance)}`;
        fig.appendChild(el('figcaption', null, `${m.keeper ? 'keeper' : m.status}${dist}${m.transform ? ` · ${m.transform}` : ''}`));
        if (m.key && state.index.has(m.key)) fig.addEventListener('click', () => setCursor(state.index.get(m.key), false));
        dups.appendChild(fig);
      }
    }

    const sources = $('d-sources');
    sources.textContent = '';
    for (const s of d.sources) {
      const t = el('table', 'kv');
      for (const k of ['title', 'query', 'engine', 'rank', 'label', 'license', 'author', 'retrieved_at']) {
        if (s[k] !== null && s[k] !== undefined && s[k] !== '') kvRow(t, k, s[k]);
      }
      for (const k of ['page_url', 'location']) {
        if (!s[k]) continue;
        const href = safeHttpUrl(s[k]);
        if (href) {
          const a = el('a', null, s[k]);
          a.href = href;
          a.target = '_blank';
          a.rel = 'noopener noreferrer';
          kvRow(t, k === 'location' ? (s.kind === 'url' ? 'image URL' : 'file') : 'page', a);
        } else {
          kvRow(t, k === 'location' ? (s.kind === 'url' ? 'image URL' : 'file') : 'page', s[k]);
        }
      }
      sources.appendChild(t);
    }

    const hist = $('d-history');
    hist.textContent = '';
    if (!d.history.length) hist.appendChild(el('li', 'muted', 'no decisions yet'));
    for (const h of d.history) {
      hist.appendChild(el('li', null, `${h.decided_at} ${h.reviewer}: ${h.action} (${h.decision_before} → ${h.decision_after})`));
    }
  }

  let detailReq = 0;
  async function openDetail() {
    const key = state.keys[state.cursor];
    if (key === undefined) { closeDetail(); return; }
    state.detailKey = key;
    $('detail').hidden = false;
    const id = ++detailReq;
    try {
      const d = await api(`/api/item/${encodeURIComponent(key)}`);
      if (id === detailReq) fillDetail(d);
    } catch (e) { toast(`details failed: ${e.message}`); }
  }

  function closeDetail() {
    state.detailKey = null;
    $('detail').hidden = true;
  }

  // -- input --------------------------------------------------------------------------------------------

  function onKey(e) {
    const tag = e.target && e.target.tagName;
    if (tag === 'INPUT' || tag === 'SELECT' || tag === 'TEXTAREA' || e.ctrlKey || e.metaKey || e.altKey) return;
    const help = $('help');
    if (e.key === '?') { help.hidden = !help.hidden; e.preventDefault(); return; }
    if (e.key === 'Escape') {
      if (!help.hidden) help.hidden = true;
      else if (state.detailKey) closeDetail();
      else { state.selected.clear(); state.anchor = null; render(); }
      return;
    }
    if (!help.hidden) return;
    const pageRows = Math.max(1, Math.floor(grid.clientHeight / CELL_H));
    const moves = {
      arrowright: 1, l: 1, arrowleft: -1, j: -1, arrowdown: state.cols, arrowup: -state.cols,
      pagedown: pageRows * state.cols, pageup: -pageRows * state.cols,
    };
    const key = e.key.toLowerCase();
    if (key in moves) { setCursor(state.cursor + moves[key], e.shiftKey); e.preventDefault(); return; }
    const actions = {
      home: () => setCursor(0, e.shiftKey), end: () => setCursor(state.keys.length - 1, e.shiftKey),
      k: () => decide('kept'), r: () => decide('rejected'), u: () => undo(), x: () => toggleSelect(),
      w: () => decide('kept', 'rule_wrong'),
      a: () => selectAll(), enter: () => openDetail(), ' ': () => openDetail(), o: () => openDetail(),
    };
    if (key in actions) { actions[key](); e.preventDefault(); return; }
    const hot = (state.facets && state.facets.hotkeys) || {};
    if (key in hot) { decide('rejected', hot[key]); e.preventDefault(); }
  }

  // Per rule: decisions so far, disagreements, and whether `facecurate calibrate` is worth running yet.
  function drawCalibration(rows) {
    const table = $('calib-table');
    table.textContent = '';
    const head = table.insertRow();
    for (const h of ['rule', 'decisions', 'disagree', 'calibrate?']) head.appendChild(el('th', '', h));
    let worth = 0;
    for (const r of rows || []) {
      const tr = table.insertRow();
      tr.dataset.rule = r.rule;
      tr.appendChild(el('td', '', r.rule));
      tr.appendChild(el('td', '', `${fmt(r.decisions)} / ${fmt(r.needed)}`));
      tr.appendChild(el('td', '', fmt(r.disagreements)));
      tr.appendChild(el('td', r.worth ? 'worth' : '', r.worth ? 'worth running' : 'not yet'));
      worth += r.worth ? 1 : 0;
    }
    $('calib-sum').textContent = worth ? `calibration: worth running (${worth} rule${worth > 1 ? 's' : ''})`
      : 'calibration';
  }

  function refreshCalibration() {
    api('/api/facets').then((f) => {
      if (state.facets) state.facets.calibration = f.calibration;
      drawCalibration(f.calibration);
      fc.calibrationDrawn = (fc.calibrationDrawn || 0) + 1;
    }).catch(() => {});
  }

  function onClick(e) {
    const cell = e.target.closest('.cell');
    if (!cell) return;
    const i = Number(cell.dataset.index);
    if (e.shiftKey) { setCursor(i, true); return; }
    if (e.ctrlKey || e.metaKey) { state.cursor = i; toggleSelect(); return; }
    setCursor(i, false);
    openDetail();
  }

  function init() {
    document.addEventListener('keydown', onKey);
    canvas.addEventListener('click', onClick);
    grid.addEventListener('scroll', scheduleRender, { passive: true });
    // The grid's width changes with the window and when the detail panel opens: re-flow the columns.
    let width = 0;
    new ResizeObserver(() => {
      if (grid.clientWidth === width) return;
      width = grid.clientWidth;
      layout();
      scrollToCursor();
    }).observe(grid);
    $('help-btn').addEventListener('click', () => { $('help').hidden = !$('help').hidden; $('help-btn').blur(); });
    $('help').addEventListener('click', () => { $('help').hidden = true; });
    $('d-close').addEventListener('click', closeDetail);
    $('d-keep').addEventListener('click', () => decide('kept'));
    $('d-reject').addEventListener('click', () => decide('rejected'));
    // The grid and the menus load side by side: the first page shows without waiting for the facet counts.
    const initial = initialParams();
    const grid0 = applyFilter(initial).then(() => performance.mark('fc:grid'));
    const menus = api('/api/facets').then((f) => {
      state.facets = f;
      setupFilters(f, initial);
      drawCalibration(f.calibration);
    });
    Promise.all([grid0, menus]).then(() => {
      // the URL named a value the menus do not offer, or there are no rejects: show what the menus say
      if (`${filterParams()}` !== `${initial}`) return applyFilter();
      return null;
    }).then(() => {
      fc.ready = true;
      performance.mark('fc:ready');
      document.body.dataset.ready = '1';
    }).catch((e) => toast(`cannot load the gallery: ${e.message}`));
  }

  init();
})();
