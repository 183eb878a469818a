// The cluster view: pods on a ring, live flows drawn between them in their verdict's colour,
// the flow list (the keyboard route to the same flows), the detail of a flow or a pod, and
// the pods, services and policies tables, refreshed every few seconds.
'use strict';

(() => {
  const { api, h, verdictClass, verdictLabel, sideKey, sideName, isDns, describeFlow } = Lab;
  const SVG = 'http://www.w3.org/2000/svg';
  const svg = document.getElementById('topology');
  const list = document.getElementById('flow-list');
  const detail = document.getElementById('detail');
  const count = document.getElementById('flow-count');
  const opt = {
    dns: document.getElementById('show-dns'),
    replies: document.getElementById('show-replies'),
    pause: document.getElementById('pause'),
  };
  // The drawing's frame: wide, or tall in a narrow window (so labels stay readable).
  const WIDE = { W: 1000, H: 560, CX: 500, CY: 272, RX: 370, RY: 196 };
  const TALL = { W: 600, H: 760, CX: 300, CY: 380, RX: 190, RY: 290 };
  let W, H, CX, CY, RX, RY;
  const R = 24;
  const narrow = matchMedia('(max-width: 640px)');
  function frame() {
    ({ W, H, CX, CY, RX, RY } = narrow.matches ? TALL : WIDE);
    svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
  }
  frame();
  const MAX_LIST = 200;

  let pods = [];
  let services = [];
  const outside = new Set();
  const nodes = new Map(); // key -> {x, y, g, pod}
  const edges = new Map(); // "src|dst" -> {g, line, hit, flow, at}
  const all = []; // every flow received, oldest first
  const flows = []; // the shown ones (after the DNS and reply filters)
  let paused = [];
  let selected = null;
  let layer = { edges: null, nodes: null, pulses: null };

  function s(tag, attrs, ...kids) { return h('svg:' + tag, attrs, ...kids); }

  function podKey(p) { return p.namespace + '/' + p.name; }

  function selects(selector, labels) {
    const sel = selector || {};
    const keys = Object.keys(sel);
    return keys.length > 0 && keys.every((k) => labels && labels[k] === sel[k]);
  }

  function servicesOf(p) {
    return services.filter((svc) => svc.namespace === p.namespace && selects(svc.selector, p.labels)).map((svc) => svc.name);
  }

  function nodeClass(p) {
    if (!p) return 'outside';
    const l = p.labels || {};
    if (p.namespace === 'kube-system') return 'system';
    if (l.app === 'ftp-store') return 'store';
    if (l.org === 'empire') return 'empire';
    if (l.org === 'alliance') return 'alliance';
    return '';
  }

  function shortName(p) {
    if (p.owner && p.name.startsWith(p.owner + '-')) return p.owner + ' …' + p.name.slice(-5);
    return p.name;
  }

  /** The ring's order: clients, then each service's pods, then kube-system, then outsiders. */
  function order() {
    const clients = [], servers = [], system = [];
    for (const p of pods) {
      if (p.namespace === 'kube-system') system.push(p);
      else if (servicesOf(p).length) servers.push(p);
      else clients.push(p);
    }
    const bySvc = (a, b) => (servicesOf(a)[0] || '').localeCompare(servicesOf(b)[0] || '') || a.name.localeCompare(b.name);
    servers.sort(bySvc);
    clients.sort((a, b) => a.name.localeCompare(b.name));
    const keys = [...clients, ...servers, ...system].map(podKey);
    return { keys: keys.concat([...outside].sort()), clients: clients.length };
  }

  function layout() {
    const { keys, clients } = order();
    const n = Math.max(keys.length, 1);
    const step = (2 * Math.PI) / n;
    const start = Math.PI - ((Math.max(clients, 1) - 1) / 2) * step;
    const byKey = new Map(pods.map((p) => [podKey(p), p]));
    const big = narrow.matches; // larger labels in the tall frame (see lab.css)
    nodes.clear();
    svg.replaceChildren(svg.querySelector('desc') || '');
    const defs = s('defs', {});
    for (const v of ['forwarded', 'dropped', 'audit', 'redirected', 'l7denied', 'error', 'other']) {
      defs.append(s('marker', { id: 'm-' + v, viewBox: '0 0 10 10', refX: '9', refY: '5', markerWidth: '5', markerHeight: '5', orient: 'auto-start-reverse' },
        s('path', { d: 'M0,0 L10,5 L0,10 z' })));
    }
    svg.append(defs);
    layer = { edges: s('g', {}), nodes: s('g', {}), pulses: s('g', {}) };
    svg.append(layer.edges, layer.pulses, layer.nodes);
    keys.forEach((key, i) => {
      const a = start + i * step;
      const x = CX + RX * Math.cos(a), y = CY + RY * Math.sin(a);
      const pod = byKey.get(key);
      const name = pod ? shortName(pod) : key.slice(1);
      const below = y >= CY - 1;
      const g = s('g', {
        class: 'node ' + nodeClass(pod), tabindex: '0', role: 'button',
        'aria-label': pod ? 'pod ' + pod.name + ', ' + pod.ip : 'outside the cluster: ' + name,
        transform: 'translate(' + x.toFixed(1) + ' ' + y.toFixed(1) + ')',
      },
      s('title', {}, pod ? pod.namespace + '/' + pod.name + '\n' + pod.ip : name),
      s('circle', { r: R }),
      s('text', { class: 'glyph', y: '0' }, (name[0] || '?').toUpperCase()),
      s('text', { y: below ? R + (big ? 24 : 18) : -R - (big ? 30 : 24) }, name),
      s('text', { class: 'sub', y: below ? R + (big ? 42 : 33) : -R - (big ? 10 : 9) }, pod ? pod.ip + (servicesOf(pod).length ? ' · svc ' + servicesOf(pod).join(',') : '') : ''));
      const choose = () => showPod(key);
      g.addEventListener('click', choose);
      g.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); choose(); } });
      layer.nodes.append(g);
      nodes.set(key, { x, y, g, pod });
    });
    const old = [...edges.values()];
    edges.clear();
    for (const e of old) drawEdge(e.flow, false, e.at);
  }

  function curve(a, b, bend) {
    const mx = (a.x + b.x) / 2, my = (a.y + b.y) / 2;
    const dx = b.x - a.x, dy = b.y - a.y;
    const len = Math.hypot(dx, dy) || 1;
    // Pull towards the centre (a chord diagram) and to the right of the direction, so that the
    // two directions between a pair of pods stay apart.
    const cx = mx + (CX - mx) * 0.3 + (-dy / len) * bend;
    const cy = my + (CY - my) * 0.3 + (dx / len) * bend;
    const cut = (p, q) => {
      const l = Math.hypot(q.x - p.x, q.y - p.y) || 1;
      return { x: p.x + ((q.x - p.x) / l) * (R + 3), y: p.y + ((q.y - p.y) / l) * (R + 3) };
    };
    const s0 = cut(a, { x: cx, y: cy }), e0 = cut(b, { x: cx, y: cy });
    return 'M' + s0.x.toFixed(1) + ',' + s0.y.toFixed(1) + ' Q' + cx.toFixed(1) + ',' + cy.toFixed(1) + ' ' + e0.x.toFixed(1) + ',' + e0.y.toFixed(1);
  }

  function endpointsOf(f) {
    const ip = f.IP || {};
    return [sideKey(f.source, ip.source), sideKey(f.destination, ip.destination)];
  }

  function drawEdge(f, animate, at) {
    let [src, dst] = endpointsOf(f);
    if (f.is_reply) [src, dst] = [dst, src];
    for (const k of [src, dst]) {
      if (!nodes.has(k) && k.startsWith('@')) {
        outside.add(k);
        layout();
      }
    }
    const a = nodes.get(src), b = nodes.get(dst);
    if (!a || !b || src === dst) return;
    const key = src + '|' + dst;
    const vc = verdictClass(f);
    let e = edges.get(key);
    const d = curve(a, b, 16);
    if (!e) {
      const g = s('g', { class: 'edge', tabindex: '0', role: 'button' });
      const hit = s('path', { class: 'hit', d });
      const line = s('path', { class: 'line', d });
      g.append(hit, line);
      g.addEventListener('click', () => select(edges.get(key).flow));
      g.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); select(edges.get(key).flow); } });
      layer.edges.append(g);
      e = { g, line, hit };
      edges.set(key, e);
    }
    // The worst recent verdict wins for a moment, so a drop is not hidden by a later reply.
    e.flow = f;
    e.at = at || Date.now();
    e.g.setAttribute('class', 'edge v-' + vc + (selected === f ? ' selected' : ''));
    e.g.setAttribute('aria-label', verdictLabel(f) + ': ' + describeFlow(f));
    e.line.setAttribute('marker-end', 'url(#m-' + vc + ')');
    e.line.setAttribute('d', d);
    e.hit.setAttribute('d', d);
    if (animate && !matchMedia('(prefers-reduced-motion: reduce)').matches) {
      const dot = s('circle', { class: 'pulse v-' + vc, r: '6' });
      const anim = s('animateMotion', { dur: '0.9s', path: d, fill: 'freeze', begin: 'indefinite' });
      dot.append(anim);
      layer.pulses.append(dot);
      try { anim.beginElement(); } catch (err) { /* no SMIL: the line alone shows the flow */ }
      setTimeout(() => dot.remove(), 1000);
    }
  }

  function ageEdges() {
    const now = Date.now();
    for (const [key, e] of edges) {
      const age = now - e.at;
      if (age > 300000) { e.g.remove(); edges.delete(key); continue; }
      e.g.classList.toggle('old', age > 12000);
    }
  }

  function visible(f) {
    if (!opt.dns.checked && isDns(f)) return false;
    if (!opt.replies.checked && f.is_reply) return false;
    return true;
  }

  function addFlow(f, live, again) {
    if (!again) {
      all.push(f);
      if (all.length > 4 * MAX_LIST) all.shift();
    }
    if (!visible(f)) return;
    flows.push(f);
    if (flows.length > MAX_LIST) flows.shift();
    drawEdge(f, live, live ? undefined : Date.parse(f.time) || undefined);
    const li = h('li', {}, Lab.flowButton(f, select));
    const b = li.querySelector('button');
    b.tabIndex = list.querySelector('button[tabindex="0"]') ? -1 : 0;
    list.prepend(li);
    while (list.children.length > MAX_LIST) list.lastElementChild.remove();
    count.textContent = '(' + flows.length + ')';
  }

  function select(f) {
    if (!f) return;
    selected = f;
    for (const e of edges.values()) e.g.classList.toggle('selected', e.flow === f);
    for (const b of list.querySelectorAll('button.flow')) b.setAttribute('aria-pressed', String(b._flow === f));
    detail.replaceChildren(Lab.flowDetail(f));
  }

  function showPod(key) {
    const n = nodes.get(key);
    for (const m of nodes.values()) m.g.classList.toggle('selected', m === n);
    if (!n) return;
    const p = n.pod;
    if (!p) {
      detail.replaceChildren(h('h3', {}, key.slice(1)), h('p', {}, 'A peer outside the pods of this cluster (reserved identity or a plain address).'));
      return;
    }
    const mine = flows.filter((f) => endpointsOf(f).includes(key)).slice(-8).reverse();
    detail.replaceChildren(
      h('h3', {}, 'Pod ', p.namespace + '/' + p.name),
      h('dl', { class: 'kv' },
        h('dt', {}, 'Labels'), h('dd', {}, Lab.labelChips(p.labels)),
        h('dt', {}, 'IP'), h('dd', {}, p.ip),
        h('dt', {}, 'Identity'), h('dd', {}, String(p.identity)),
        h('dt', {}, 'Status'), h('dd', {}, p.phase + (p.ready ? ', ready' : ', not ready')),
        h('dt', {}, 'Restarts'), h('dd', {}, String(p.restarts) + (p.last_exit ? ' (last exit: ' + p.last_exit + ')' : '')),
        h('dt', {}, 'Image'), h('dd', {}, p.image || ''),
        h('dt', {}, 'Services'), h('dd', {}, servicesOf(p).join(', ') || 'none')),
      h('p', { class: 'small' }, mine.length ? 'Its latest flows:' : 'No flows of this pod are shown yet.'),
      mine.length ? Lab.flowList(mine, { onSelect: select, hideDns: false }) : '');
  }

  function fillPods() {
    const tbody = document.querySelector('#pods tbody');
    tbody.replaceChildren(...pods.map((p) => h('tr', {},
      h('td', {}, h('button', { type: 'button', class: 'linklike', onclick: () => showPod(podKey(p)) }, (p.namespace === 'default' ? '' : p.namespace + '/') + p.name)),
      h('td', {}, Lab.labelChips(p.labels)),
      h('td', {}, p.ip),
      h('td', { class: p.ready ? 'status-running' : 'status-other' }, p.phase + (p.ready ? '' : ' (not ready)')),
      h('td', { class: p.restarts > 0 ? 'restarted' : '' }, String(p.restarts)),
      h('td', {}, String(p.identity)))));
  }

  function fillServices() {
    const tbody = document.querySelector('#services tbody');
    tbody.replaceChildren(...services.map((svc) => h('tr', {},
      h('td', {}, (svc.namespace === 'default' ? '' : svc.namespace + '/') + svc.name),
      h('td', {}, svc.cluster_ip),
      h('td', {}, (svc.ports || []).map((p) => p.port + '/' + p.protocol).join(', ')),
      h('td', {}, [...new Set((svc.ports || []).flatMap((p) => p.endpoints || []))].join(', ') || h('span', { class: 'muted' }, 'none ready')))));
  }

  function fillPolicies(pols) {
    const ul = document.getElementById('policies');
    if (!pols.length) {
      ul.replaceChildren(h('li', { class: 'muted' }, 'No policy: every pod may talk to every other (no default deny anywhere).'));
      return;
    }
    ul.replaceChildren(...pols.map((p) => h('li', {},
      h('a', { href: '/policies#' + encodeURIComponent((p.namespace || '-') + '/' + p.name) }, (p.namespace ? p.namespace + '/' : '') + p.name),
      ' ', h('span', { class: 'muted small' }, p.kind),
      p.audit ? [' ', h('span', { class: 'verdict v-audit' }, 'AUDIT MODE')] : '')));
  }

  async function refresh(first) {
    try {
      const [newPods, newSvcs, pols] = await Promise.all([api('GET', '/api/pods'), api('GET', '/api/services'), api('GET', '/api/policies')]);
      const shape = (ps) => ps.map((p) => podKey(p) + p.ip).sort().join(',');
      const changed = first || shape(newPods) !== shape(pods) || newSvcs.length !== services.length;
      pods = newPods;
      services = newSvcs;
      if (changed) layout();
      else for (const n of nodes.values()) if (n.pod) n.pod = pods.find((p) => podKey(p) === podKey(n.pod)) || n.pod;
      fillPods();
      fillServices();
      fillPolicies(pols);
    } catch (e) {
      /* the header shows the lab's state; keep the last tables */
    }
  }

  function redrawList() {
    list.replaceChildren();
    flows.length = 0;
    for (const e of edges.values()) e.g.remove();
    edges.clear();
    for (const f of all) addFlow(f, false, true);
  }

  async function start() {
    Lab.rovingList(list);
    await refresh(true);
    try {
      const recent = await api('GET', '/api/flows?limit=150');
      for (const f of recent) addFlow(f, false);
      ageEdges();
    } catch (e) { /* no history */ }
    Lab.stream((f) => {
      if (opt.pause.checked) { paused.push(f); count.textContent = '(' + flows.length + ', ' + paused.length + ' waiting)'; return; }
      addFlow(f, true);
    });
    opt.pause.addEventListener('change', () => {
      if (!opt.pause.checked) { const p = paused; paused = []; for (const f of p) addFlow(f, false); }
    });
    opt.dns.addEventListener('change', redrawList);
    opt.replies.addEventListener('change', redrawList);
    document.getElementById('clear-flows').addEventListener('click', () => {
      flows.length = 0;
      all.length = 0;
      list.replaceChildren();
      for (const e of edges.values()) e.g.remove();
      edges.clear();
      count.textContent = '';
    });
    setInterval(ageEdges, 2000);
    setInterval(() => refresh(false), 3000);
  }

  // Remember which flow a list button shows, for aria-pressed.
  const origButton = Lab.flowButton;
  Lab.flowButton = (f, onSelect) => { const b = origButton(f, onSelect); b._flow = f; return b; };

  narrow.addEventListener('change', () => { frame(); layout(); });
  start();
})();
