// A lesson page: each step's Run button does the step for real through the lab's API and shows
// the outcome against the expectation, the flows it caused and the pods that restarted. A step
// that runs in the background answers while it goes on; the page then waits for its result
// (`?wait`) while the student runs the next steps. Steps that went as expected are remembered
// in this browser.
'use strict';

(() => {
  const { api, h } = Lab;
  const article = document.querySelector('article.lesson');
  const id = article.dataset.lesson;
  const key = 'lesson:' + id;
  const total = article.querySelectorAll('section.step').length;

  function done() { return new Set(Lab.store.get(key, [])); }

  function showProgress() {
    const d = done();
    for (const sec of article.querySelectorAll('section.step')) {
      sec.querySelector('[data-done]').hidden = !d.has(Number(sec.dataset.step));
    }
    const p = article.querySelector('[data-progress]');
    if (p) p.textContent = d.size + ' of ' + total + ' steps done in this browser.';
  }

  function outcomeDetails(run) {
    const o = run.outcome || {};
    const parts = [];
    const pre = (title, text) => h('details', {}, h('summary', {}, title), h('pre', {}, text));
    if (typeof o.body === 'string' && o.body) parts.push(pre('Response body', o.body));
    if (Array.isArray(o.files)) parts.push(pre('Fetched ' + o.files.length + ' log files: ' + o.files.join(', '), o.content || '(empty)'));
    if (typeof o.stdout === 'string') {
      parts.push(pre('Output (exit ' + (o.exit_code === null ? 'none' : o.exit_code) + ')', (o.stdout || '') + (o.stderr ? '\n[stderr]\n' + o.stderr : '') || '(nothing)'));
    }
    if (Array.isArray(o.findings)) parts.push(findingList(o.findings));
    if (Array.isArray(o.lines)) parts.push(pre('Metric lines (' + o.lines.length + ')', o.lines.join('\n') || '(none yet: the counter has not moved)'));
    if (Array.isArray(o.details)) {
      parts.push(h('ul', { class: 'errors' }, o.details.map((d) => h('li', {}, 'line ' + d.line + ':' + d.column + ': ' + (d.field ? d.field + ': ' : '') + d.message, d.hint ? h('span', { class: 'hint-text' }, 'hint: ' + d.hint) : ''))));
    } else if (o.error && !o.body) {
      parts.push(h('pre', {}, o.error));
    }
    return parts;
  }

  /** An audit's findings, most serious first, each with where, why and the fix. */
  function findingList(findings) {
    if (!findings.length) return h('p', { class: 'small' }, 'The audit found nothing.');
    return h('ul', { class: 'findings' }, findings.map((f) => h('li', {},
      h('span', { class: 'sev sev-' + f.severity }, String(f.severity).toUpperCase()), ' ',
      h('code', {}, f.check), ' ', f.problem,
      h('div', { class: 'small' }, 'at ', h('code', {}, f.location)),
      h('div', { class: 'small' }, 'why: ' + f.why),
      h('div', { class: 'small' }, 'fix: ' + f.fix))));
  }

  function render(sec, run) {
    const result = sec.querySelector('.result');
    const checks = [];
    if (run.output_check) checks.push(h('li', { class: run.output_check.found ? 'ok' : 'no' }, 'output contains ', h('code', {}, run.output_check.want)));
    for (const c of run.flow_checks || []) checks.push(h('li', { class: c.found ? 'ok' : 'no' }, 'a flow ', h('code', {}, c.want), c.found ? ' was seen' : ' was not seen'));
    for (const c of run.checks || []) checks.push(h('li', { class: c.found ? 'ok' : 'no' }, c.want));
    const running = run.background === 'running';
    const flows = run.flows || [];
    result.replaceChildren(
      h('p', {},
        running ? h('span', { class: 'badge running' }, 'running in the background')
          : h('span', { class: 'badge ' + (run.pass ? 'pass' : 'fail') }, run.pass ? 'as expected' : 'not as expected'), ' ',
        h('span', { class: 'outcome' }, run.summary || ''),
        h('span', { class: 'muted small' }, ' (' + (run.elapsed_ms / 1000).toFixed(1) + ' s' + (run.pod ? ', in ' + run.pod : '') + ')')),
      run.pass || running ? '' : h('p', { class: 'small' }, 'Expected: the step ' + run.expected + '.'),
      run.cli !== (sec.querySelector('.cli code') || {}).textContent
        ? h('p', { class: 'small' }, 'Ran as: ', h('code', {}, run.cli)) : '',
      ...outcomeDetails(run),
      checks.length ? h('ul', { class: 'checks' }, checks) : '',
      (run.restarts || []).length ? h('p', { class: 'restarted' }, 'Restarted: ' + run.restarts.join('; ')) : '',
      running ? '' : h('p', { class: 'small' }, flows.length ? 'Flows it caused (newest first; choose one for its full record):' : 'It caused no flows.'),
      flows.length ? Lab.flowList(flows) : '');
  }

  function remember(n, pass) {
    const d = done();
    if (pass) d.add(n); else d.delete(n);
    Lab.store.set(key, [...d]);
    showProgress();
  }

  async function run(sec, button) {
    const n = Number(sec.dataset.step);
    const result = sec.querySelector('.result');
    button.disabled = true;
    result.replaceChildren(h('p', {}, h('span', { class: 'badge running' }, 'running…'), ' ', h('span', { class: 'muted small' }, 'doing it in the lab')));
    const path = '/api/lessons/' + encodeURIComponent(id) + '/steps/' + n;
    try {
      let r = await api('POST', path);
      render(sec, r);
      if (r.background === 'running') {
        // The next steps may run now; this card waits for the end of its own step.
        r = await api('POST', path + '?wait');
        render(sec, r);
      }
      remember(n, r.pass);
    } catch (e) {
      result.replaceChildren(h('p', { class: 'error' }, 'The step could not run: ' + Lab.errorText(e)));
    } finally {
      button.disabled = false;
    }
  }

  for (const sec of article.querySelectorAll('section.step')) {
    const b = sec.querySelector('button[data-run]');
    if (b) b.addEventListener('click', () => run(sec, b));
  }
  showProgress();
})();
