// The Benchmark page: a quick `lab bench` run started from here, with its progress, and the
// results of the latest (or a chosen) run — the configurations' table, the goals, the datapath
// figures and the plots — all through /api/x/bench/... Text from the results is always inserted
// as text; the plots are images served by /bench/plots/RUN/FILE.
'use strict';

(() => {
  const { api, h } = Lab;
  const $ = (id) => document.getElementById(id);
  const form = $('run-form');
  const choices = $('config-choices');
  const cancelBtn = $('bench-cancel');
  const runBox = $('bench-run');
  const bar = $('bench-progress');
  const stepText = $('bench-step');
  const elapsedText = $('bench-elapsed');
  const statusBox = $('bench-status');
  const resultsBox = $('bench-results');
  const select = $('run-select');
  let known = [];
  let timer = null;
  let lastState = null;

  const PLOT_CAPTIONS = {
    'latency.svg': 'Latency by percentile for every measured configuration, both axes logarithmic (like the paper\'s figure 2)',
    'latency-l3-l4.svg': 'Latency by percentile without the L7 configurations (like the paper\'s figure 3)',
    'throughput.svg': 'Maximum throughput (closed loop) and achieved rate (open loop) per configuration (like the paper\'s figure 4)',
    'datapath.svg': 'Cost per packet as the number of rules grows: the lab\'s eBPF datapath against iptables',
  };

  function say(kind, ...content) {
    statusBox.className = kind;
    statusBox.replaceChildren(...content);
  }

  function clock(s) {
    const t = Math.max(0, Math.floor(s || 0));
    return Math.floor(t / 60) + ':' + String(t % 60).padStart(2, '0');
  }

  function num(v, digits) {
    if (v === null || v === undefined || Number.isNaN(v)) return '';
    return Number(v).toLocaleString('en-US', { maximumFractionDigits: digits || 0 });
  }

  function us(v) {
    if (v === null || v === undefined) return '';
    if (v >= 1e6) return (v / 1e6).toFixed(2) + ' s';
    if (v >= 1e3) return (v / 1e3).toFixed(2) + ' ms';
    return v + ' µs';
  }

  function when(t) {
    const m = /^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)/.exec(t || '');
    return m ? m[1] + ' ' + m[2] + ' UTC' : (t || '');
  }

  /** What a progress event says, for people. */
  function describe(p) {
    if (!p || !p.phase) return 'Starting';
    switch (p.phase) {
      case 'lab': return 'Bringing up the bench lab';
      case 'http': return 'Configuration ' + p.config + ' of ' + p.configs + ' (' + p.title + ') · round ' + p.round + ' of ' + p.rounds;
      case 'datapath': {
        const what = p.filter === 'none' ? 'no policy, no firewall'
          : (p.filter === 'ebpf' ? 'lab eBPF' : p.filter) + ' with ' + num(p.rules) + ' rules';
        return 'Datapath figures: measurement ' + p.point + ' of ' + p.points + ' (' + what + ')';
      }
      case 'cleanup': return 'Taking the bench lab down';
      case 'done': return 'Results written';
      case 'cancelled': return 'Cancelled';
      case 'failed': return 'Failed';
      default: return p.message || p.phase;
    }
  }

  // ---- the run ------------------------------------------------------------------------------

  function renderChoices(list) {
    choices.replaceChildren(...list.map((c) => h('li', {},
      h('label', {},
        h('input', { type: 'checkbox', name: 'config', value: c.id, checked: true }),
        ' ', c.title, ' ', h('code', { class: 'small muted' }, c.id)))));
  }

  function chosen() {
    return [...form.querySelectorAll('input[name="config"]:checked')].map((b) => b.value);
  }

  function showProgress(st) {
    const p = st.progress || {};
    const steps = p.steps || 0;
    runBox.hidden = false;
    bar.max = Math.max(steps, 1);
    bar.value = st.state === 'done' ? bar.max : Math.min(p.step || 0, bar.max);
    const text = st.state === 'running' ? describe(p)
      : { done: 'Finished', cancelled: 'Cancelled', failed: 'Failed' }[st.state] || st.state;
    stepText.textContent = text;
    bar.setAttribute('aria-valuetext', text + ': step ' + (p.step || 0) + ' of ' + steps);
    elapsedText.textContent = clock(st.elapsed_s) + ' elapsed';
  }

  function schedule(ms) {
    clearTimeout(timer);
    timer = setTimeout(poll, ms);
  }

  async function poll() {
    let st;
    try {
      st = await api('GET', '/api/x/bench/status');
    } catch (e) {
      say('error', Lab.errorText(e));
      schedule(3000);
      return;
    }
    render(st);
  }

  function failure(st, prefix) {
    const parts = [h('p', { class: 'error' }, prefix + ': ' + (st.error || 'lab bench failed') + '.')];
    if (st.log_tail) {
      parts.push(h('details', {}, h('summary', {}, 'The end of its log (' + st.dir + '/bench.log)'), h('pre', {}, st.log_tail)));
    }
    return parts;
  }

  function render(st) {
    if (!known.length && st.known_configs) {
      known = st.known_configs;
      renderChoices(known);
    }
    if (st.bench_instance) $('bench-instance').textContent = st.bench_instance;
    if (st.results_dir) $('results-dir').textContent = st.results_dir + '/';
    const running = st.state === 'running';
    cancelBtn.hidden = !running;
    if (st.state === 'idle') runBox.hidden = true;
    else showProgress(st);
    if (running) {
      schedule(500);
    } else if (lastState === 'running') {
      if (st.state === 'done') {
        say('valid', 'The run finished in ' + clock(st.elapsed_s) + ' and its lab is down: its results are below.');
        loadResults(st.run);
      } else if (st.state === 'cancelled') {
        say('', 'The run was cancelled; its lab was taken down.');
      } else {
        say('', ...failure(st, 'The run failed'));
      }
    } else if (lastState === null && (st.state === 'failed' || st.state === 'cancelled')) {
      say('', ...failure(st, 'The last run ' + (st.state === 'failed' ? 'failed' : 'was cancelled')));
    }
    lastState = st.state;
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const configs = chosen();
    const datapath = $('opt-datapath').checked;
    if (!configs.length && !datapath) {
      say('error', 'Choose at least one configuration, or the datapath figures.');
      return;
    }
    try {
      const st = await api('POST', '/api/x/bench/start', { configs, datapath });
      say('', 'Started: ' + (configs.length ? configs.length + ' configuration' + (configs.length > 1 ? 's' : '') : 'no configuration')
        + (datapath ? ' and the datapath figures' : '') + ', in the lab ' + st.bench_instance + '.');
      lastState = 'running';
      render(st);
    } catch (err) {
      if (err.status === 409 && err.details) {
        const d = err.details;
        say('notice', 'A run is already in progress (' + describe(d.progress) + ', ' + clock(d.elapsed_s)
          + ' elapsed). One run at a time: wait for it to finish, or cancel it.');
        if (lastState !== 'running') {
          lastState = 'running';
          poll();
        }
      } else {
        say('error', 'The run could not start: ' + Lab.errorText(err));
      }
    }
  });

  cancelBtn.addEventListener('click', async () => {
    try {
      await api('POST', '/api/x/bench/cancel', {});
      say('', 'Cancelling: the run stops after its current step and takes its lab down.');
    } catch (err) {
      say('error', Lab.errorText(err));
    }
    poll();
  });

  // ---- the results --------------------------------------------------------------------------

  /** A table with a short caption (for assistive technology) and a note above it. */
  function table(caption, note, head, rows, numeric) {
    return [
      h('p', { class: 'small muted' }, note),
      h('div', { class: 'table-wrap' }, h('table', { class: 'bench-table' },
        h('caption', { class: 'visually-hidden' }, caption),
        h('thead', {}, h('tr', {}, head.map((t, i) => h('th', { scope: 'col', class: numeric[i] ? 'num' : null }, t)))),
        h('tbody', {}, rows))),
    ];
  }

  function at(lat, p) {
    const hit = ((lat && lat.percentiles) || []).find((x) => x[0] === p);
    return hit ? us(hit[1]) : '';
  }

  function configsTable(res) {
    const none = (res.configs || []).find((c) => c.id === 'none' && c.max_throughput);
    const base = none ? none.max_throughput.rps : null;
    const numeric = [false, true, true, false, true, true, true, true, true];
    const rows = (res.configs || []).map((c) => {
      const o = c.open_loop;
      const m = c.max_throughput;
      const name = h('th', { scope: 'row' }, c.title, ' ', h('code', { class: 'small muted' }, c.id));
      if (!o || !m) {
        return h('tr', { class: 'not-measured', 'data-config': c.id }, name,
          h('td', { colspan: 8 }, h('strong', {}, String(c.status || '').replace(/_/g, ' ')), c.reason ? ': ' + c.reason : ''));
      }
      const rounds = (o.achieved_rps_rounds || []).length > 1
        ? h('span', { class: 'small muted' }, ' (rounds: ' + o.achieved_rps_rounds.map((v) => num(v)).join(', ') + ')') : '';
      return h('tr', { 'data-config': c.id }, name,
        h('td', { class: 'num' }, num(o.requested_rps)),
        h('td', { class: 'num' }, num(o.achieved_rps), rounds),
        h('td', { class: 'sat-cell' }, o.saturated
          ? h('strong', { class: 'sat', title: 'achieved below 95% of the requested rate: latency measures the queue' }, 'saturated')
          : 'no'),
        h('td', { class: 'num' }, at(o.latency_us, 50)),
        h('td', { class: 'num' }, at(o.latency_us, 90)),
        h('td', { class: 'num' }, at(o.latency_us, 99)),
        h('td', { class: 'num' }, num(m.rps)),
        h('td', { class: 'num' }, base ? num(m.rps / base * 100) + '%' : ''));
    });
    const s = res.settings || {};
    return table(
      'HTTP configurations',
      'Open loop at ' + num(s.rate) + ' req/s requested over ' + num(s.connections) + ' connections (latency from each request\'s intended send time); maximum throughput in closed loop over '
        + num(s.max_connections) + ' connections. Compare latencies only between runs that are not saturated.',
      ['Configuration', 'Requested req/s', 'Achieved req/s', 'Saturated', 'p50', 'p90', 'p99', 'Max throughput req/s', 'vs no policy'],
      rows, numeric);
  }

  function goalsTable(res) {
    const rows = (res.goals || []).map((g) => h('tr', { class: g.met === true ? 'goal-met' : g.met === false ? 'goal-missed' : 'goal-na' },
      h('th', { scope: 'row' }, g.goal),
      h('td', { class: 'num' }, g.value === null || g.value === undefined ? '' : num(g.value * 100, 1) + '%'),
      h('td', { class: 'met-cell' }, g.met === true ? h('span', { class: 'met' }, '✓ met')
        : g.met === false ? h('span', { class: 'missed' }, '✗ missed') : h('span', { class: 'muted' }, 'not evaluated')),
      h('td', { class: 'small' }, g.note || '')));
    return table('Goals', 'The goals of issue 8, scored on this run.', ['Goal', 'Value', 'Met', 'Note'], rows, [false, true, false, false]);
  }

  function datapathPart(d) {
    const point = (filter, n) => (d.points || []).find((p) => p.filter === filter && p.rules === n);
    const failed = (p) => p && p.status !== 'measured';
    const rows = (d.rule_counts || []).map((n) => {
      const e = point('ebpf', n);
      const i = point('iptables', n);
      const cells = [];
      if (!e || failed(e)) cells.push(h('td', { colspan: 2 }, 'failed: ' + ((e && e.reason) || 'not measured')));
      else {
        cells.push(h('td', { class: 'num' }, e.bpf ? num(e.bpf.ns_per_packet) + ' (' + num(e.bpf.from_pod_ns) + ' / ' + num(e.bpf.to_pod_ns) + ')' : 'n/a'));
        cells.push(h('td', { class: 'num' }, num(e.rps)));
      }
      if (!i || failed(i)) cells.push(h('td', { colspan: 2 }, 'failed: ' + ((i && i.reason) || 'not measured')));
      else {
        cells.push(h('td', { class: 'num' }, num(i.rps)));
        cells.push(h('td', { class: 'num' }, i.extra_ns_per_packet === null || i.extra_ns_per_packet === undefined ? '' : num(i.extra_ns_per_packet)));
      }
      return h('tr', { 'data-rules': n }, h('th', { scope: 'row', class: 'num' }, num(n)), cells);
    });
    const b = d.baseline || {};
    rows.unshift(h('tr', { 'data-rules': 0 }, h('th', { scope: 'row', class: 'num' }, 'no policy (baseline)'),
      h('td', { class: 'num' }, b.bpf ? num(b.bpf.ns_per_packet) : ''), h('td', { class: 'num' }, num(b.rps)),
      h('td', { class: 'num' }, num(b.rps)), h('td', { class: 'num' }, '—')));
    return table(
      'Datapath: cost per packet as rules grow',
      'Closed loop over ' + d.connections + ' keep-alive connections, ' + d.duration_s + ' s per point. eBPF: the kernel\'s run-time statistics of the enforcer\'s programs; iptables: its rules walked for every packet, the match last, as extra time per packet entering the server.',
      ['Rules', 'Lab eBPF: ns/packet (from_pod / to_pod)', 'Lab eBPF: req/s', 'iptables: req/s', 'iptables: extra ns/packet'],
      rows, [true, true, true, true, true]);
  }

  function plotsPart(run, plots) {
    return h('div', { class: 'plots' }, plots.map((name) => {
      const caption = PLOT_CAPTIONS[name] || name;
      const src = '/bench/plots/' + encodeURIComponent(run.id) + '/' + encodeURIComponent(name);
      return h('figure', { class: 'plot', 'data-plot': name },
        h('a', { href: src, title: 'Open ' + name + ' at full size' },
          h('img', { src, alt: caption + '. The numbers are in the tables above.', width: 960, height: 600 })),
        h('figcaption', {}, caption, ' ', h('code', { class: 'small' }, name)));
    }));
  }

  function renderRuns(runs, current) {
    const choice = $('run-choice');
    choice.hidden = !runs || runs.length < 2;
    select.replaceChildren(...(runs || []).map((r, i) => h('option', { value: r.id, selected: r.id === current },
      (i === 0 ? 'latest: ' : '') + r.preset + ', ' + when(r.finished)
        + (r.origin === 'directory' ? ' — ' + r.dir : ''))));
  }

  async function loadResults(id) {
    let r;
    try {
      r = await api('GET', '/api/x/bench/results' + (id ? '/' + encodeURIComponent(id) : ''));
    } catch (e) {
      resultsBox.replaceChildren(h('p', { class: 'error' }, Lab.errorText(e)));
      return;
    }
    renderRuns(r.runs, r.run && r.run.id);
    if (!r.run) {
      resultsBox.replaceChildren(h('p', { class: 'muted' },
        'No results yet: start a quick run above, or show a directory written by lab bench --out below.'));
      return;
    }
    const res = r.results || {};
    const host = res.host || {};
    const s = res.settings || {};
    const parts = [
      h('p', { class: 'small muted bench-meta' },
        'Preset ', h('strong', {}, res.preset || '?'), ' · finished ', when(res.finished),
        ' · Linux ', host.kernel || '?', ', ', String(host.cpus || '?'), ' CPUs · ',
        s.duration_s + ' s measured per configuration, ' + s.rounds + ' round' + (s.rounds === 1 ? '' : 's') + ' · ',
        r.run.origin === 'directory' ? 'from ' + r.run.dir + ' · ' : '',
        h('a', { href: '/api/x/bench/results/' + encodeURIComponent(r.run.id) }, 'as JSON')),
    ];
    if ((res.configs || []).length) {
      parts.push(h('h3', {}, 'Configurations'), configsTable(res));
    }
    if ((res.goals || []).length) parts.push(h('h3', {}, 'Goals'), goalsTable(res));
    if (res.datapath) parts.push(h('h3', {}, 'Datapath: cost per packet as rules grow'), datapathPart(res.datapath));
    if ((r.plots || []).length) parts.push(h('h3', {}, 'Plots'), plotsPart(r.run, r.plots));
    resultsBox.replaceChildren(...parts.flat());
  }

  select.addEventListener('change', () => loadResults(select.value));

  $('source-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const out = $('source-status');
    const dir = $('source-dir').value.trim();
    try {
      const added = await api('POST', '/api/x/bench/sources', { dir });
      out.className = 'valid';
      out.textContent = 'Showing ' + added.dir + '.';
      loadResults(added.id);
    } catch (err) {
      out.className = 'error';
      out.textContent = Lab.errorText(err);
    }
  });

  poll();
  loadResults(null);
})();
