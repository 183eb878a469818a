// The policy editor page: write or load a policy, apply it or delete the policies it names, and
// manage the active set (its YAML, audit mode per policy, delete) through the lab's API.
'use strict';

(() => {
  const { api, h } = Lab;
  const status = document.getElementById('apply-status');
  const active = document.getElementById('active');
  const examples = document.getElementById('examples');
  const editor = new PolicyEditor(document.getElementById('editor'), {
    source: 'editor',
    value: Lab.store.get('policy-draft', ''),
    onInput: (v) => Lab.store.set('policy-draft', v),
  });
  let policies = [];
  let shown = null;

  function say(kind, ...text) {
    status.className = kind;
    status.replaceChildren(...text);
  }

  function manifestYaml(p) {
    return Lab.toYaml(p.manifest) + '\n';
  }

  async function load() {
    try {
      policies = await api('GET', '/api/policies');
    } catch (e) {
      active.replaceChildren(h('li', { class: 'error' }, Lab.errorText(e)));
      shown = null;
      return;
    }
    // Redraw only on a change, so a keyboard user's place in the list is kept.
    const now = JSON.stringify(policies);
    if (now === shown) return;
    shown = now;
    const focused = document.activeElement;
    const keep = active.contains(focused) && focused.closest('li[id]')
      ? [focused.closest('li[id]').id, focused.dataset.role] : null;
    if (!policies.length) {
      active.replaceChildren(h('li', { class: 'muted' }, 'No policy is active: every pod may talk to every other.'));
      return;
    }
    active.replaceChildren(...policies.map((p) => {
      const ns = p.namespace || '-';
      const full = (p.namespace ? p.namespace + '/' : '') + p.name;
      const box = h('input', { type: 'checkbox', checked: p.audit, 'aria-describedby': 'audit-help', 'data-role': 'audit' });
      box.addEventListener('change', async () => {
        box.disabled = true;
        try {
          await api('POST', '/api/policies/' + encodeURIComponent(ns) + '/' + encodeURIComponent(p.name) + '/audit', { audit: box.checked });
          say('valid', full + ': audit mode ' + (box.checked ? 'on — would-be drops are forwarded and reported as AUDIT' : 'off — the policy is enforced') + '.');
        } catch (e) {
          box.checked = !box.checked;
          say('error', Lab.errorText(e));
        }
        box.disabled = false;
        load();
      });
      return h('li', { id: 'policy-' + ns + '-' + p.name },
        h('div', { class: 'row' },
          h('span', { class: 'name' }, full),
          h('span', { class: 'muted small' }, p.kind),
          p.audit ? h('span', { class: 'audit-on' }, 'audit mode') : ''),
        h('div', { class: 'row' },
          h('label', {}, box, ' audit mode'),
          h('button', { type: 'button', 'data-role': 'edit', onclick: () => { editor.value = manifestYaml(p); editor.ta.focus(); say('muted', 'Loaded ' + full + ' into the editor.'); } }, 'Edit'),
          h('button', { type: 'button', 'data-role': 'delete', onclick: () => remove({ name: p.name, namespace: p.namespace }, full) }, 'Delete')),
        h('details', {}, h('summary', {}, 'YAML'), h('pre', {}, manifestYaml(p))),
        h('p', { class: 'muted small' }, 'from ' + p.source));
    }), h('li', { id: 'audit-help', class: 'muted small' }, 'Audit mode (per policy, a lab addition): what this policy would drop is forwarded and reported with the verdict AUDIT.'));
    if (keep) {
      const li = document.getElementById(keep[0]);
      const el = li && li.querySelector('[data-role="' + keep[1] + '"]');
      if (el) el.focus();
    }
  }

  async function remove(req, what) {
    try {
      const r = await api('DELETE', '/api/policies', req);
      say('valid', (r.deleted || []).length ? 'Deleted ' + r.deleted.join(', ') + '.' : 'There was nothing to delete.');
    } catch (e) {
      say('error', 'Could not delete ' + what + ': ' + Lab.errorText(e));
    }
    load();
  }

  document.getElementById('apply').addEventListener('click', async () => {
    if (!editor.value.trim()) { say('error', 'The editor is empty.'); return; }
    try {
      const r = await api('POST', '/api/policies', { source: 'editor', text: editor.value });
      const list = (r.results || []).map((x) => x.kind + ' ' + (x.namespace ? x.namespace + '/' : '') + x.name + ' ' + x.action);
      editor.setValid('Applied.');
      say('valid', 'Applied (revision ' + r.revision + '): ' + list.join(', ') + '.');
    } catch (e) {
      editor.setErrors(e.details, Lab.errorText(e));
      say('error', 'Not applied: ' + (e.details ? 'fix the errors marked in the editor; nothing was changed.' : Lab.errorText(e)));
    }
    load();
  });

  document.getElementById('delete-named').addEventListener('click', () => {
    if (!editor.value.trim()) { say('error', 'The editor is empty: it names no policy.'); return; }
    remove({ text: editor.value, source: 'editor' }, 'the policies named in the editor');
  });

  document.getElementById('delete-all').addEventListener('click', () => {
    if (policies.length && confirm('Delete all ' + policies.length + ' policies?')) remove({ all: true }, 'all policies');
  });

  async function loadExamples() {
    try {
      const list = await api('GET', '/api/policy-examples');
      examples.replaceChildren(h('option', { value: '' }, 'choose…'), ...list.map((x, i) => h('option', { value: String(i) }, x.title)));
      examples.addEventListener('change', () => {
        const x = list[Number(examples.value)];
        if (!x) return;
        editor.value = x.yaml;
        say('muted', 'Loaded the example ' + x.file + ' (not applied yet).');
        examples.value = '';
      });
    } catch (e) { /* examples are optional */ }
  }

  async function openFromHash() {
    const want = decodeURIComponent(location.hash.slice(1));
    if (!want) return;
    await load();
    const p = policies.find((x) => (x.namespace || '-') + '/' + x.name === want);
    if (p) {
      editor.value = manifestYaml(p);
      say('muted', 'Loaded ' + want + ' into the editor.');
    }
  }

  loadExamples();
  load().then(openFromHash);
  setInterval(load, 5000);
})();
