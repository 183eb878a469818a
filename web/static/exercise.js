// An exercise page: the student's policy in the editor (a draft kept in this browser), Check
// (the lab replaces its policies with this one and probes every expectation with real traffic),
// the right/wrong table with the explaining flow and a hint for each wrong cell, and a reset
// that deletes every policy through the API and says what it removed.
'use strict';

(() => {
  const { api, h } = Lab;
  const article = document.querySelector('article.exercise');
  const id = article.dataset.exercise;
  const holder = document.getElementById('editor');
  const starter = holder.dataset.starter || '';
  const status = document.getElementById('check-status');
  const resultBox = document.getElementById('check-result');
  const resultBody = document.getElementById('check-body');
  const badge = document.getElementById('ex-status');
  const checkButton = document.getElementById('check');
  const draftKey = 'exercise-draft:' + id;
  const progressKey = 'exercise:' + id;

  const editor = new PolicyEditor(holder, {
    source: 'exercise ' + id,
    value: Lab.store.get(draftKey, starter),
    label: 'Your policy (YAML)',
    onInput: (v) => Lab.store.set(draftKey, v),
  });

  function say(cls, text) {
    status.className = cls;
    status.textContent = text;
  }

  function showBadge() {
    const p = Lab.store.get(progressKey, null);
    if (!p) { badge.hidden = true; return; }
    badge.hidden = false;
    badge.className = 'badge ' + (p.passed ? 'pass' : 'fail');
    badge.textContent = p.passed ? 'passed ✓' : 'best so far: ' + p.best + ' of ' + p.total;
  }

  function clearTable() {
    for (const tr of document.querySelectorAll('#expectations tbody tr')) {
      tr.className = '';
      tr.querySelector('.cell-result').replaceChildren(h('span', { class: 'muted' }, 'not checked'));
    }
  }

  function fill(run) {
    for (const p of run.probes) {
      const tr = document.querySelector('#expectations tr[data-probe="' + p.n + '"]');
      if (!tr) continue;
      tr.className = p.right ? 'right' : 'wrong';
      const cell = tr.querySelector('.cell-result');
      const summary = p.summary.length > 80 ? p.summary.slice(0, 79) + '…' : p.summary;
      const parts = [h('div', { title: p.summary }, (p.right ? '✓ right: ' : '✗ wrong: ') + summary)];
      if (!p.right) {
        const why = h('div', { class: 'why-wrong' });
        if (p.explain.length) {
          why.append(h('div', {}, p.explain.length > 1 ? 'The flows that explain it:' : 'The flow that explains it:'));
          for (const f of p.explain) {
            why.append(h('button', { type: 'button', class: 'linklike explain', onclick: () => Lab.openFlow(f) },
              Lab.verdictLabel(f) + ' ' + Lab.describeFlow(f)));
            why.append(h('div', { class: 'small muted' }, f.policy_explanation || ''));
          }
        }
        if (p.advice) why.append(h('div', { class: 'small' }, p.advice));
        if (p.hint) why.append(h('div', { class: 'hint' }, 'Hint: ' + p.hint));
        parts.push(why);
      }
      parts.push(h('details', { class: 'small' }, h('summary', {}, 'probe flows (' + p.flows.length + ') and command'),
        h('pre', {}, p.cli), p.flows.length ? Lab.flowList(p.flows) : h('p', { class: 'muted' }, 'No flows.')));
      cell.replaceChildren(...parts);
    }
    if (run.audit) fillAudit(run.audit);
  }

  /** The audit row: the findings in the student's policy (graded) and the others (shown). */
  function fillAudit(a) {
    const tr = document.querySelector('#expectations tr[data-probe="audit"]');
    if (!tr) return;
    tr.className = a.right ? 'right' : 'wrong';
    const finding = (f) => h('li', {},
      h('span', { class: 'sev sev-' + f.severity }, String(f.severity).toUpperCase()), ' ',
      h('code', {}, f.check), ' ', f.problem, f.yours ? '' : h('span', { class: 'muted' }, ' (elsewhere in the lab: not graded)'),
      h('div', { class: 'small' }, 'at ', h('code', {}, f.location)),
      h('div', { class: 'small' }, 'why: ' + f.why),
      h('div', { class: f.counts ? 'hint' : undefined }, 'fix: ' + f.fix));
    const counted = a.findings.filter((f) => f.counts);
    const rest = a.findings.filter((f) => !f.counts);
    const parts = [h('div', {}, (a.right ? '✓ right: ' : '✗ wrong: ') + a.summary)];
    const why = h('div', { class: 'why-wrong' });
    if (counted.length) why.append(h('ul', { class: 'findings' }, counted.map(finding)));
    if (rest.length) {
      why.append(h('details', {}, h('summary', {}, 'other findings (' + rest.length + ', not graded)'),
        h('ul', { class: 'findings' }, rest.map(finding))));
    }
    if (counted.length || rest.length) parts.push(why);
    tr.querySelector('.cell-result').replaceChildren(...parts);
  }

  checkButton.addEventListener('click', async () => {
    checkButton.disabled = true;
    clearTable();
    say('muted', 'Checking: applying your policy and trying every expectation with real traffic (timeouts take a few seconds)…');
    try {
      const run = await api('POST', '/api/exercises/' + encodeURIComponent(id) + '/check', { policy: editor.value });
      fill(run);
      const prev = Lab.store.get(progressKey, { best: 0 });
      Lab.store.set(progressKey, { passed: run.passed || !!prev.passed, best: Math.max(prev.best || 0, run.right), total: run.total, at: new Date().toISOString() });
      showBadge();
      say(run.passed ? 'valid' : 'error', run.right + ' of ' + run.total + ' expectations right.' + (run.passed ? ' Well done: the goal is met.' : ' See the table for what went wrong and why.'));
      resultBox.hidden = false;
      resultBody.replaceChildren(
        h('p', {}, h('span', { class: 'badge ' + (run.passed ? 'pass' : 'fail') }, run.passed ? 'goal met' : 'not yet'), ' ', run.right + ' of ' + run.total + ' right.'),
        h('p', { class: 'small' }, run.removed.length ? 'Before checking, the lab removed: ' + run.removed.join(', ') + '.' : 'There were no other policies in the lab.'),
        run.prefilter ? h('p', { class: 'small' }, 'The XDP prefilter: ' + run.prefilter + '.') : '',
        h('p', { class: 'small' }, run.applied ? 'Then it applied: ' + (run.applied.results || []).map((r) => r.name + ' (' + r.action + ')').join(', ') + '. It stays applied: see it on the cluster view and the policies page.' : 'The editor was empty: the lab was checked with no policy at all.'));
    } catch (e) {
      if (e.details) {
        editor.setErrors(e.details, Lab.errorText(e));
        say('error', 'Your policy has errors (marked in the editor), so nothing was applied or checked.');
      } else {
        say('error', 'The check could not run: ' + Lab.errorText(e));
      }
    } finally {
      checkButton.disabled = false;
    }
  });

  document.getElementById('restore-starter').addEventListener('click', () => {
    editor.value = starter;
    say('muted', 'The editor holds the template again.');
    editor.ta.focus();
  });

  document.getElementById('reset-lab').addEventListener('click', async () => {
    try {
      const r = await api('DELETE', '/api/policies', { all: true });
      clearTable();
      say('valid', (r.deleted || []).length
        ? 'The lab is clean again: deleted ' + r.deleted.join(', ') + ' (every policy). Your draft is still in the editor.'
        : 'The lab had no policies: nothing to delete. Your draft is still in the editor.');
    } catch (e) {
      say('error', 'Reset failed: ' + Lab.errorText(e));
    }
  });

  showBadge();
})();
