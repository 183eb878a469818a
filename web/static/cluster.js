// The cluster view: pods on a ring, live flows drawn between them in their verdict's colour,
// the flow list (the keyboard route to the same flows), the detail of a flow or a pod, and
// the pods, services and policies tables, refreshed every few seconds. With more pods than fit
// the ring readably, the pods of one Deployment are one node ("echo ×100"), and the flows of
// any of them are drawn to it.
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
  // More ring nodes than this and a Deployment's pods become one node (the page says so too).
  const GROUP_AT = Number(svg.dataset.groupAt) || 24;
  const MAX_GROUP_ROWS = 250; // pods listed in a group's detail (the Pods table has them all)
  const MAX_PULSES = 24; // moving dots at once, so a burst of flows does not flood the drawing
  const MAX_ENDPOINTS = 8; // endpoints written out per service in the services table

  let pods = [];
  let services = [];
  let byKey = new Map(); // pod key -> pod, from the latest refresh
  const svcCache = new Map(); // pod key -> names of the services selecting it
  const groups = new Map(); // "*ns/owner" -> {namespace, owner, pods}
  const groupOf = new Map(); // pod key -> its group's key (only while grouping)
  const outside = new Set();
  const nodes = new Map(); // key -> {x, y, g, pod, group, sub}
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
    const k = podKey(p);
    let names = svcCache.get(k);
    if (!names) {
      names = services.filter((svc) => svc.namespace === p.namespace && selects(svc.selector, p.labels)).map((svc) => svc.name);
      svcCache.set(k, names);
    }
    return names;
  }

  /** The node a pod (or outsider) is drawn as: its group's, or its own. */
  function nodeKey(k) { return groupOf.get(k) || k; }

  /** Groups the pods of each Deployment (two or more) when the ring would be too crowded. */
  function regroup() {
    groups.clear();
    groupOf.clear();
    if (pods.length + outside.size <= GROUP_AT) return;
    for (const p of pods) {
      if (!p.owner) continue;
      const k = '*' + p.namespace + '/' + p.owner;
      if (!groups.has(k)) groups.set(k, { namespace: p.namespace, owner: p.owner, pods: [] });
      groups.get(k).pods.push(p);
    }
    for (const [k, gr] of groups) {
      if (gr.pods.length < 2) { groups.delete(k); continue; }
      gr.pods.sort((a, b) => a.name.localeCompare(b.name));
      for (const p of gr.pods) groupOf.set(podKey(p), k);
    }
  }

  function groupName(gr) { return gr.owner + ' ×' + gr.pods.length; }

  function groupSub(gr) {
    const ready = gr.pods.filter((p) => p.ready).length;
    const svcs = servicesOf(gr.pods[0]);
    return (ready === gr.pods.length ? 'all ready' : ready + ' of ' + gr.pods.length + ' ready') + (svcs.length ? ' · svc ' + svcs.join(',') : '');
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

  /**
   * The ring's order: clients, then each service's pods, then kube-system, then outsiders. A
   * group takes the place of its first pod.
   */
  function order() {
    const clients = [], servers = [], system = [];
    for (const p of pods) {
      const g = groupOf.get(podKey(p));
      if (g && groups.get(g).pods[0] !== p) continue;
      const unit = { key: g || podKey(p), pod: p };
      if (p.namespace === 'kube-system') system.push(unit);
      else if (servicesOf(p).length) servers.push(unit);
      else clients.push(unit);
    }
    const bySvc = (a, b) => (servicesOf(a.pod)[0] || '').localeCompare(servicesOf(b.pod)[0] || '') || a.pod.name.localeCompare(b.pod.name);
    servers.sort(bySvc);
    clients.sort((a, b) => a.pod.name.localeCompare(b.pod.name));
    const keys = [...clients, ...servers, ...system].map((u) => u.key);
    return { keys: keys.concat([...outside].sort()), clients: clients.length };
  }

  function layout() {
    regroup();
    const { keys, clients } = order();
    const n = Math.max(keys.length, 1);
    const step = (2 * Math.PI) / n;
    const start = Math.PI - ((Math.max(clients, 1) - 1) / 2) * step;
    const big = narrow.matches; // larger labels in the tall frame (see lab.css)
    svg.classList.toggle('crowded', keys.length > 2 * GROUP_AT);
    const legend = document.getElementById('legend-groups');
    if (legend) legend.hidden = groups.size === 0;
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
      const group = groups.get(key);
      const pod = group ? group.pods[0] : byKey.get(key);
      const name = group ? groupName(group) : pod ? shortName(pod) : key.slice(1);
      const below = y >= CY - 1;
      const sub = s('text', { class: 'sub', y: below ? R + (big ? 42 : 33) : -R - (big ? 10 : 9) },
        group ? groupSub(group) : pod ? pod.ip + (servicesOf(pod).length ? ' · svc ' + servicesOf(pod).join(',') : '') : '');
      const g = s('g', {
        class: 'node ' + nodeClass(pod) + (group ? ' group' : ''), tabindex: '0', role: 'button',
        'aria-label': group ? 'Deployment ' + group.owner + ', ' + group.pods.length + ' pods' : pod ? 'pod ' + pod.name + ', ' + pod.ip : 'outside the cluster: ' + name,
        'data-key': key,
        transform: 'translate(' + x.toFixed(1) + ' ' + y.toFixed(1) + ')',
      },
      s('title', {}, group ? group.namespace + '/' + group.owner + ': ' + group.pods.length + ' pods of one Deployment' : pod ? pod.namespace + '/' + pod.name + '\n' + pod.ip : name),
      group ? s('circle', { class: 'stack', r: R, cx: 6, cy: -6 }) : '',
      s('circle', { r: R }),
      s('text', { class: 'glyph', y: '0' }, (name[0] || '?').toUpperCase()),
      s('text', { class: 'name', y: below ? R + (big ? 24 : 18) : -R - (big ? 30 : 24) }, name),
      sub);
      const choose = () => showPod(key);
      g.addEventListener('click', choose);
      g.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); choose(); } });
      layer.nodes.append(g);
      nodes.set(key, { x, y, g, pod: group ? null : pod, group, sub });
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
    // Edges are keyed by the nodes drawn: a flow of any pod of a group is the group's.
    src = nodeKey(src);
    dst = nodeKey(dst);
    const a = nodes.get(src), b = nodes.get(dst);
    if (!a || !b || src === dst) return;
    const key = src + '|' + dst;
    const vc = verdictClass(f);
    let e = edges.get(key);
    const d = curve(a, b, 16);
    if (!e) {
      const g = s('g', { class: 'edge', tabindex: '0', role: 'button', 'data-edge': key });
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
    if (animate && layer.pulses.childElementCount < MAX_PULSES && !matchMedia('(prefers-reduced-motion: reduce)').matches) {
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

  function highlight(key) {
    const n = nodes.get(key);
    for (const m of nodes.values()) m.g.classList.toggle('selected', m === n);
    return n;
  }

  function showPod(key) {
    if (groups.has(key)) { showGroup(key); return; }
    const n = highlight(nodeKey(key));
    const p = byKey.get(key);
    if (!p) {
      if (n && key.startsWith('@')) {
        detail.replaceChildren(h('h3', {}, key.slice(1)), h('p', {}, 'A peer outside the pods of this cluster (reserved identity or a plain address).'));
      }
      return;
    }
    const mine = flows.filter((f) => endpointsOf(f).includes(key)).slice(-8).reverse();
    const group = groups.get(groupOf.get(key));
    detail.replaceChildren(
      h('h3', {}, 'Pod ', p.namespace + '/' + p.name),
      group ? h('p', { class: 'small' }, 'One of ', h('button', { type: 'button', class: 'linklike', onclick: () => showGroup(groupOf.get(key)) }, 'the ' + group.pods.length + ' pods of ' + group.owner), ' (drawn as one node).') : '',
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

  /** A group's detail: what its pods share, and each pod (name, IP, status, identity). */
  function showGroup(key) {
    highlight(key);
    const gr = groups.get(key);
    if (!gr) return;
    const ps = gr.pods;
    const ready = ps.filter((p) => p.ready).length;
    const images = [...new Set(ps.map((p) => p.image || ''))].join(', ');
    const first = ps[0].labels || {};
    const common = Object.fromEntries(Object.entries(first).filter(([k, v]) => ps.every((p) => (p.labels || {})[k] === v)));
    const shown = ps.slice(0, MAX_GROUP_ROWS);
    const mine = flows.filter((f) => endpointsOf(f).some((k) => groupOf.get(k) === key)).slice(-8).reverse();
    detail.replaceChildren(
      h('h3', {}, 'Deployment ', gr.namespace + '/' + gr.owner, ' ', h('span', { class: 'muted' }, '×' + ps.length)),
      h('p', { class: 'small muted' }, 'Its ' + ps.length + ' pods are drawn as one node; the flows of any of them go to it.'),
      h('dl', { class: 'kv' },
        h('dt', {}, 'Labels'), h('dd', {}, Lab.labelChips(common)),
        h('dt', {}, 'Ready'), h('dd', {}, ready + ' of ' + ps.length),
        h('dt', {}, 'Image'), h('dd', {}, images),
        h('dt', {}, 'Services'), h('dd', {}, servicesOf(ps[0]).join(', ') || 'none')),
      h('div', { class: 'table-wrap group-pods', tabindex: '0', role: 'region', 'aria-label': 'Pods of ' + gr.owner },
        h('table', {},
          h('thead', {}, h('tr', {}, ['Pod', 'IP', 'Status', 'Identity'].map((t) => h('th', { scope: 'col' }, t)))),
          h('tbody', {}, shown.map((p) => h('tr', { 'data-pod': podKey(p) },
            h('td', {}, h('button', { type: 'button', class: 'linklike', onclick: () => showPod(podKey(p)) }, shortName(p))),
            h('td', {}, p.ip),
            h('td', { class: p.ready ? 'status-running' : 'status-other' }, p.phase + (p.ready ? '' : ' (not ready)')),
            h('td', {}, String(p.identity))))))),
      ps.length > shown.length ? h('p', { class: 'small muted' }, 'The first ' + shown.length + ' of ' + ps.length + ' pods; the Pods table below lists them all.') : '',
      h('p', { class: 'small' }, mine.length ? 'Its latest flows:' : 'No flows of these pods are shown yet.'),
      mine.length ? Lab.flowList(mine, { onSelect: select, hideDns: false }) : '');
  }

  // The pods table's rows by pod key, with what they show, so a refresh only replaces the rows
  // that changed (at 1,000 pods rebuilding every row every few seconds stalls the page).
  const podRows = new Map(); // key -> {tr, sig}
  let podOrder = null; // the keys of the rows shown, in order

  function podRow(p) {
    return h('tr', {},
      h('td', {}, h('button', { type: 'button', class: 'linklike', onclick: () => showPod(podKey(p)) }, (p.namespace === 'default' ? '' : p.namespace + '/') + p.name)),
      h('td', {}, Lab.labelChips(p.labels)),
      h('td', {}, p.ip),
      h('td', { class: p.ready ? 'status-running' : 'status-other' }, p.phase + (p.ready ? '' : ' (not ready)')),
      h('td', { class: p.restarts > 0 ? 'restarted' : '' }, String(p.restarts)),
      h('td', {}, String(p.identity)));
  }

  function fillPods() {
    const tbody = document.querySelector('#pods tbody');
    const keys = pods.map(podKey);
    const seq = keys.join(',');
    const rows = pods.map((p, i) => {
      const sig = [p.ip, p.phase, p.ready, p.restarts, p.identity, JSON.stringify(p.labels)].join('|');
      const old = podRows.get(keys[i]);
      if (old && old.sig === sig) return old;
      const row = { tr: podRow(p), sig };
      // Same rows in the same order: swap just this one.
      if (old && seq === podOrder) old.tr.replaceWith(row.tr);
      podRows.set(keys[i], row);
      return row;
    });
    if (seq !== podOrder) {
      tbody.replaceChildren(...rows.map((r) => r.tr));
      podOrder = seq;
      const live = new Set(keys);
      for (const k of podRows.keys()) if (!live.has(k)) podRows.delete(k);
    }
  }

  let svcSig = null;
  function fillServices() {
    const sig = JSON.stringify(services);
    if (sig === svcSig) return;
    svcSig = sig;
    const tbody = document.querySelector('#services tbody');
    const endpoints = (svc) => {
      const all = [...new Set((svc.ports || []).flatMap((p) => p.endpoints || []))];
      if (!all.length) return h('span', { class: 'muted' }, 'none ready');
      if (all.length <= MAX_ENDPOINTS) return all.join(', ');
      return [all.slice(0, MAX_ENDPOINTS).join(', '), ' ', h('span', { class: 'muted' }, '… ' + all.length + ' in all')];
    };
    tbody.replaceChildren(...services.map((svc) => h('tr', {},
      h('td', {}, (svc.namespace === 'default' ? '' : svc.namespace + '/') + svc.name),
      h('td', {}, svc.cluster_ip),
      h('td', {}, (svc.ports || []).map((p) => p.port + '/' + p.protocol).join(', ')),
      h('td', {}, endpoints(svc)))));
  }

  let polSig = null;
  function fillPolicies(pols) {
    const sig = JSON.stringify(pols);
    if (sig === polSig) return;
    polSig = sig;
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

  // What the drawing depends on: the pods (and their owners and addresses) and the services'
  // selectors. The layout is redone only when these change, not on every refresh.
  let drawnShape = null;
  let refreshing = false; // one refresh at a time: a slow answer must not pile up requests

  async function refresh(first) {
    if (refreshing) return;
    refreshing = true;
    try {
      const [newPods, newSvcs, pols] = await Promise.all([api('GET', '/api/pods'), api('GET', '/api/services'), api('GET', '/api/policies')]);
      const shape = newPods.map((p) => podKey(p) + ' ' + p.ip + ' ' + (p.owner || '') + ' ' + JSON.stringify(p.labels)).join(',')
        + '|' + newSvcs.map((svc) => svc.namespace + '/' + svc.name + JSON.stringify(svc.selector)).join(',');
      const changed = first || shape !== drawnShape;
      drawnShape = shape;
      pods = newPods;
      services = newSvcs;
      byKey = new Map(pods.map((p) => [podKey(p), p]));
      if (changed) {
        svcCache.clear();
        layout();
      } else {
        // Same nodes: only the pods' states are new (readiness, restarts).
        regroup();
        for (const [key, n] of nodes) {
          if (n.pod) n.pod = byKey.get(key) || n.pod;
          if (n.group) {
            n.group = groups.get(key) || n.group;
            n.sub.textContent = groupSub(n.group);
          }
        }
      }
      fillPods();
      fillServices();
      fillPolicies(pols);
    } catch (e) {
      /* the header shows the lab's state; keep the last tables */
    } finally {
      refreshing = false;
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
