// Shared by every page: API calls, building DOM safely, flow rendering (list, detail, dialog),
// the live flow stream, a small JSON-to-YAML writer, progress in localStorage, copy buttons.
'use strict';

const Lab = (() => {
  /** Calls the lab's JSON API; rejects with {status, error, details} on an error answer. */
  async function api(method, path, body) {
    const opts = { method, headers: {} };
    if (body !== undefined) {
      opts.headers['content-type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, opts);
    } catch (e) {
      throw { status: 0, error: 'the lab does not answer (is it still up?)' };
    }
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = { error: text }; }
    if (!res.ok) {
      throw { status: res.status, error: (data && data.error) || res.statusText, details: data && data.details };
    }
    return data;
  }

  /** h('p', {class: 'x', onclick: f}, 'text', child...) — text is always inserted as text. */
  function h(tag, attrs, ...kids) {
    const svg = tag.startsWith('svg:');
    const el = svg ? document.createElementNS('http://www.w3.org/2000/svg', tag.slice(4)) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (k === 'text') el.textContent = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid === undefined || kid === null || kid === false) continue;
      el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }

  function verdictClass(f) {
    const v = String(f.verdict || '').toUpperCase();
    const l7 = f.l7 && f.l7.http;
    if (f.Type === 'L7' && (v === 'DROPPED' || (l7 && l7.code === 403))) return 'l7denied';
    return { FORWARDED: 'forwarded', DROPPED: 'dropped', AUDIT: 'audit', REDIRECTED: 'redirected', ERROR: 'error' }[v] || 'other';
  }

  function verdictLabel(f) {
    return verdictClass(f) === 'l7denied' ? 'L7 DENIED' : String(f.verdict || '?');
  }

  /** A flow side's key: "ns/pod", or a pseudo node for peers that are not pods. */
  function sideKey(side, ip) {
    if (side && side.pod_name) return (side.namespace || 'default') + '/' + side.pod_name;
    const labels = (side && side.labels) || [];
    for (const l of labels) {
      const m = /^reserved:(\w[\w-]*)/.exec(l);
      if (m) return '@' + m[1];
    }
    return '@' + (ip || 'unknown');
  }

  /** A pod's name for people: the default namespace left out, a replica's hash shortened. */
  function shortPod(name) {
    const m = /^(.+)-[a-z0-9]{6,10}-([a-z0-9]{5})$/.exec(name);
    return m ? m[1] + '…' + m[2] : name;
  }

  function sideName(side, ip) {
    const k = sideKey(side, ip);
    if (k.startsWith('@')) return k.slice(1);
    return shortPod(k.startsWith('default/') ? k.slice(8) : k);
  }

  function ports(f) {
    const l4 = f.l4 || {};
    if (l4.TCP) return { proto: 'TCP', sport: l4.TCP.source_port, dport: l4.TCP.destination_port, flags: l4.TCP.flags };
    if (l4.UDP) return { proto: 'UDP', sport: l4.UDP.source_port, dport: l4.UDP.destination_port };
    if (l4.ICMPv4) return { proto: 'ICMP' };
    return { proto: '' };
  }

  function isDns(f) {
    const p = ports(f);
    return p.dport === 53 || p.sport === 53;
  }

  function describeFlow(f) {
    const ip = f.IP || {};
    const p = ports(f);
    let s = sideName(f.source, ip.source) + ' → ' + sideName(f.destination, ip.destination);
    if (p.dport !== undefined) s += ':' + p.dport;
    if (p.proto) s += ' ' + p.proto;
    const http = f.l7 && f.l7.http;
    if (http) s += ' ' + (http.method || '') + ' ' + (http.url || '') + (http.code ? ' → ' + http.code : '');
    return s;
  }

  function shortTime(t) {
    const m = /T(\d\d:\d\d:\d\d)(\.\d{1,3})?/.exec(t || '');
    return m ? m[1] + (m[2] || '') : '';
  }

  function labelChips(labels) {
    let list = labels || [];
    if (!Array.isArray(list)) list = Object.entries(list).map(([k, v]) => k + '=' + v);
    const shown = list
      .map((l) => String(l).replace(/^k8s:/, ''))
      .filter((l) => !l.startsWith('io.cilium.k8s.') && !l.startsWith('io.kubernetes.pod.namespace'));
    return h('span', { class: 'labels' }, shown.map((l) => h('span', { class: 'label-chip' }, l)));
  }

  function policyRefs(f) {
    const out = [];
    for (const [key, what] of [
      ['ingress_allowed_by', 'allowed at ingress by'],
      ['egress_allowed_by', 'allowed at egress by'],
      ['ingress_denied_by', 'denied at ingress by'],
      ['egress_denied_by', 'denied at egress by'],
    ]) {
      for (const r of f[key] || []) {
        out.push(h('li', {}, what + ' ',
          h('a', { href: '/policies#' + encodeURIComponent((r.namespace || '-') + '/' + r.name) }, (r.namespace ? r.namespace + '/' : '') + r.name),
          r.rule ? [' — rule ', h('code', {}, r.rule)] : ''));
      }
    }
    return out;
  }

  /** The whole record of a flow, readable, with the decision first. */
  function flowDetail(f) {
    const ip = f.IP || {};
    const p = ports(f);
    const vc = verdictClass(f);
    const refs = policyRefs(f);
    const http = f.l7 && f.l7.http;
    const side = (s, addr, port) => [
      h('strong', {}, sideName(s, addr)),
      ' ', h('span', { class: 'muted' }, (addr || '') + (port !== undefined ? ':' + port : '') + (s && s.identity !== undefined ? ' · identity ' + s.identity : '')),
      h('div', {}, labelChips(s && s.labels)),
    ];
    const rows = [
      ['Time', f.time],
      ['Direction', (f.traffic_direction || '').toLowerCase() + (f.is_reply ? ' (reply)' : '') + ' · observed ' + (f.trace_observation_point || '')],
      ['Source', side(f.source, ip.source, p.sport)],
      ['Destination', side(f.destination, ip.destination, p.dport)],
      ['Protocol', (p.proto || '') + (f.Summary ? ' · ' + f.Summary : '')],
    ];
    if (f.drop_reason_desc) rows.push(['Drop reason', f.drop_reason_desc + (f.drop_reason !== undefined ? ' (' + f.drop_reason + ')' : '')]);
    if (http) rows.push(['HTTP', (http.method || '') + ' ' + (http.url || '') + (http.code ? ' → ' + http.code : '') + (http.protocol ? ' · ' + http.protocol : '')]);
    return h('div', { class: 'flow-detail' },
      h('h3', {}, h('span', { class: 'verdict v-' + vc }, verdictLabel(f)), ' ', describeFlow(f)),
      h('p', { class: 'explanation' }, f.policy_explanation || 'No explanation recorded.'),
      refs.length ? [h('p', { class: 'small' }, 'Decided by:'), h('ul', { class: 'decided' }, refs)]
        : h('p', { class: 'small muted' }, 'This record lists no policy as allowing or denying it: the explanation above says what decided (for example, that no policy selects the pod in this direction).'),
      h('dl', { class: 'kv' }, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
      h('details', {}, h('summary', {}, 'Full record (JSON)'), h('pre', {}, JSON.stringify(f, null, 2))));
  }

  function openFlow(f) {
    const dlg = document.getElementById('flow-dialog');
    const body = document.getElementById('flow-dialog-body');
    body.replaceChildren(flowDetail(f));
    if (!dlg.open) dlg.showModal();
    dlg.querySelector('[data-close]').focus();
  }

  /** One flow as a row button (for lists). */
  function flowButton(f, onSelect) {
    const vc = verdictClass(f);
    return h('button', {
      type: 'button', class: 'flow v-' + vc, 'data-verdict': f.verdict,
      'aria-label': verdictLabel(f) + ': ' + describeFlow(f) + '. ' + (f.policy_explanation || ''),
      onclick: () => onSelect(f),
    },
    h('span', { class: 't' }, shortTime(f.time)),
    h('span', { class: 'what' }, describeFlow(f)),
    h('span', { class: 'verdict v-' + vc }, verdictLabel(f)),
    h('span', { class: 'why' }, f.policy_explanation || ''));
  }

  /** Arrow keys move between a list's buttons; only one of them is in the Tab order. */
  function rovingList(ol) {
    ol.addEventListener('keydown', (e) => {
      const items = [...ol.querySelectorAll('button.flow')];
      const i = items.indexOf(document.activeElement);
      if (i < 0) return;
      let j = null;
      if (e.key === 'ArrowDown') j = Math.min(i + 1, items.length - 1);
      else if (e.key === 'ArrowUp') j = Math.max(i - 1, 0);
      else if (e.key === 'Home') j = 0;
      else if (e.key === 'End') j = items.length - 1;
      if (j === null) return;
      e.preventDefault();
      items[i].tabIndex = -1;
      items[j].tabIndex = 0;
      items[j].focus();
    });
    ol.addEventListener('focusin', (e) => {
      if (!(e.target instanceof HTMLButtonElement)) return;
      for (const b of ol.querySelectorAll('button.flow')) b.tabIndex = b === e.target ? 0 : -1;
    });
  }

  /** A static list of flows (a step's or a probe's), DNS lookups folded away by default. */
  function flowList(flows, opts) {
    const o = Object.assign({ onSelect: openFlow, hideDns: true }, opts || {});
    const wrap = h('div', { class: 'flows-of-step' });
    const dns = flows.filter(isDns).length;
    const ol = h('ol', { class: 'flow-list', 'aria-label': 'Flows' });
    rovingList(ol);
    let showDns = !o.hideDns;
    const fill = () => {
      const shown = flows.filter((f) => showDns || !isDns(f)).slice().reverse();
      ol.replaceChildren(...shown.map((f) => h('li', {}, flowButton(f, o.onSelect))));
      const buttons = ol.querySelectorAll('button.flow');
      buttons.forEach((b, i) => { b.tabIndex = i === 0 ? 0 : -1; });
      if (!shown.length) ol.append(h('li', { class: 'muted small' }, 'No flows.'));
    };
    fill();
    if (dns) {
      const t = h('button', { type: 'button', class: 'linklike small' });
      const label = () => { t.textContent = showDns ? 'hide the ' + dns + ' DNS flows' : 'show ' + dns + ' DNS flows too'; };
      t.addEventListener('click', () => { showDns = !showDns; label(); fill(); });
      label();
      wrap.append(h('p', { class: 'small' }, t));
    }
    wrap.append(ol);
    return wrap;
  }

  /** Live flows from the server-sent event stream; the header shows whether it is connected. */
  function stream(onFlow) {
    const live = document.getElementById('live');
    const es = new EventSource('/api/flows/stream');
    es.addEventListener('open', () => { live.textContent = 'live flows'; live.className = 'live on'; });
    es.addEventListener('error', () => { live.textContent = 'reconnecting…'; live.className = 'live off'; });
    es.addEventListener('flow', (e) => {
      try { onFlow(JSON.parse(e.data)); } catch (err) { /* a malformed event is skipped */ }
    });
    es.addEventListener('lagged', (e) => { live.textContent = 'live flows (' + e.data + ' skipped: too many)'; });
    return es;
  }

  async function showStatus() {
    const live = document.getElementById('live');
    try {
      const s = await api('GET', '/api/status');
      if (!live.classList.contains('on')) {
        live.textContent = 'lab up · ' + s.pods + ' pods · ' + s.policies + ' policies';
        live.className = 'live on';
      }
    } catch (e) {
      live.textContent = 'lab not answering';
      live.className = 'live off';
    }
  }

  function yamlScalar(v) {
    if (v === null || v === undefined) return 'null';
    if (typeof v === 'number' || typeof v === 'boolean') return String(v);
    if (Array.isArray(v)) return v.length ? JSON.stringify(v) : '[]';
    if (typeof v === 'object') return Object.keys(v).length ? JSON.stringify(v) : '{}';
    const s = String(v);
    const plain = /^[A-Za-z_/.][A-Za-z0-9 _./@=-]*$/.test(s) && !/\s$/.test(s)
      && !/^(true|false|yes|no|on|off|null|~)$/i.test(s);
    return plain ? s : JSON.stringify(s);
  }

  function yamlKey(k) {
    return /^[A-Za-z0-9_./-]+$/.test(k) ? k : JSON.stringify(k);
  }

  const isMap = (x) => x !== null && typeof x === 'object' && !Array.isArray(x);

  /** JSON value to YAML in the style of `kubectl get -o yaml`. */
  function toYaml(v, ind) {
    ind = ind || '';
    if (Array.isArray(v) && v.length) {
      return v.map((x) => {
        if ((isMap(x) && Object.keys(x).length) || (Array.isArray(x) && x.length)) {
          const inner = toYaml(x, ind + '  ');
          return ind + '- ' + inner.slice(ind.length + 2);
        }
        return ind + '- ' + yamlScalar(x);
      }).join('\n');
    }
    if (isMap(v) && Object.keys(v).length) {
      return Object.entries(v).map(([k, x]) => {
        const key = ind + yamlKey(k) + ':';
        if (isMap(x) && Object.keys(x).length) return key + '\n' + toYaml(x, ind + '  ');
        if (Array.isArray(x) && x.length) return key + '\n' + toYaml(x, ind);
        return key + ' ' + yamlScalar(x);
      }).join('\n');
    }
    return ind + yamlScalar(v);
  }

  const store = {
    get(key, fallback) {
      try {
        const v = localStorage.getItem('lab:' + key);
        return v === null ? fallback : JSON.parse(v);
      } catch (e) { return fallback; }
    },
    set(key, value) {
      try { localStorage.setItem('lab:' + key, JSON.stringify(value)); } catch (e) { /* private mode */ }
    },
  };

  function copyButtons(root) {
    for (const b of (root || document).querySelectorAll('[data-copy]')) {
      b.addEventListener('click', async () => {
        const code = b.parentElement.querySelector('code');
        try {
          await navigator.clipboard.writeText(code.textContent);
          b.textContent = 'Copied';
        } catch (e) {
          const r = document.createRange();
          r.selectNodeContents(code);
          const sel = getSelection();
          sel.removeAllRanges();
          sel.addRange(r);
          b.textContent = 'Selected: press Ctrl+C';
        }
        setTimeout(() => { b.textContent = 'Copy'; }, 2000);
      });
    }
  }

  function errorText(e) {
    return (e && e.error) || String(e);
  }

  document.addEventListener('DOMContentLoaded', () => {
    const dlg = document.getElementById('flow-dialog');
    if (dlg) {
      dlg.querySelector('[data-close]').addEventListener('click', () => dlg.close());
      dlg.addEventListener('click', (e) => { if (e.target === dlg) dlg.close(); });
    }
    copyButtons(document);
    if (!document.body.dataset.noStatus) showStatus();
  });

  return {
    api, h, verdictClass, verdictLabel, sideKey, sideName, shortPod, ports, isDns, describeFlow, shortTime,
    labelChips, flowDetail, openFlow, flowButton, flowList, rovingList, stream, toYaml, store,
    errorText, copyButtons,
  };
})();
