// The YAML policy editor: a textarea with line numbers, validation as you type (a dry run on
// the lab's API, which changes nothing), and each error shown at its line — in the gutter, as
// a band with the message behind the text, and in a list whose entries move the cursor there.
// Tab is left alone so keyboard users can move on; Enter keeps the line's indentation.
'use strict';

class PolicyEditor {
  constructor(root, opts) {
    const { h } = Lab;
    this.opts = Object.assign({ source: 'editor', value: '', onInput: null, label: 'Policy YAML' }, opts || {});
    this.errors = [];
    const uid = 'ed' + Math.random().toString(36).slice(2, 8);
    this.gutter = h('pre', { class: 'gutter', 'aria-hidden': 'true' });
    this.marks = h('div', { class: 'marks', 'aria-hidden': 'true' });
    this.ta = h('textarea', {
      spellcheck: 'false', autocapitalize: 'off', autocomplete: 'off', wrap: 'off',
      'aria-label': this.opts.label, 'aria-describedby': uid + '-state ' + uid + '-errors',
      'data-editor': '',
    });
    this.state = h('p', { id: uid + '-state', class: 'small validity', role: 'status', 'aria-live': 'polite' });
    this.list = h('ul', { id: uid + '-errors', class: 'errors', 'aria-label': 'Errors' });
    const frame = h('div', { class: 'editor' }, this.gutter, h('div', { class: 'area' }, this.marks, this.ta));
    root.replaceChildren(frame, this.state, this.list);
    this.ta.value = this.opts.value;
    this.ta.addEventListener('input', () => this.changed());
    this.ta.addEventListener('scroll', () => this.sync());
    this.ta.addEventListener('keydown', (e) => this.key(e));
    this.timer = null;
    this.seq = 0;
    this.paint();
    if (this.value.trim()) this.validateSoon(50);
  }

  get value() { return this.ta.value; }

  set value(v) {
    this.ta.value = v;
    this.changed();
  }

  changed() {
    this.errors = [];
    this.paint();
    if (this.opts.onInput) this.opts.onInput(this.value);
    this.validateSoon(400);
  }

  sync() {
    this.gutter.scrollTop = this.ta.scrollTop;
    this.marks.scrollTop = this.ta.scrollTop;
    this.marks.scrollLeft = this.ta.scrollLeft;
  }

  key(e) {
    if (e.key !== 'Enter' || e.shiftKey || e.ctrlKey || e.altKey || e.metaKey) return;
    const ta = this.ta;
    const before = ta.value.slice(0, ta.selectionStart);
    const line = before.slice(before.lastIndexOf('\n') + 1);
    let indent = /^[ ]*/.exec(line)[0];
    if (/^\s*- /.test(line)) indent += '  ';
    if (/:\s*$/.test(line)) indent += '  ';
    e.preventDefault();
    // insertText keeps the browser's undo history.
    if (!document.execCommand || !document.execCommand('insertText', false, '\n' + indent)) {
      ta.setRangeText('\n' + indent, ta.selectionStart, ta.selectionEnd, 'end');
      this.changed();
    }
  }

  /** Line numbers, and for each error line a band with the message behind the text. */
  paint() {
    const { h } = Lab;
    const lines = this.value.split('\n');
    const byLine = new Map();
    for (const e of this.errors) {
      if (!byLine.has(e.line)) byLine.set(e.line, []);
      byLine.get(e.line).push(e);
    }
    this.gutter.replaceChildren(...lines.map((_, i) => {
      const errs = byLine.get(i + 1);
      return h('div', { class: errs ? 'err' : '', title: errs ? errs.map((e) => e.message).join('\n') : null }, String(i + 1));
    }), h('div', {}, ' '));
    this.marks.replaceChildren(...lines.map((text, i) => {
      const errs = byLine.get(i + 1);
      if (!errs) return h('div', {}, text || ' ');
      return h('div', { class: 'err' }, text, h('span', { class: 'msg' }, '← ' + errs.map((e) => e.message).join('; ')));
    }));
    this.list.replaceChildren(...this.errors.map((e) => Lab.h('li', {},
      Lab.h('button', { type: 'button', onclick: () => this.focusAt(e.line, e.column) },
        'Line ' + e.line + (e.column ? ', column ' + e.column : '') + ': ' + (e.field ? e.field + ': ' : '') + e.message,
        e.hint ? Lab.h('span', { class: 'hint-text' }, 'hint: ' + e.hint) : ''))));
    this.sync();
  }

  focusAt(line, column) {
    const lines = this.value.split('\n');
    let pos = 0;
    for (let i = 0; i < Math.min(line - 1, lines.length); i++) pos += lines[i].length + 1;
    pos += Math.max(0, Math.min((column || 1) - 1, (lines[line - 1] || '').length));
    this.ta.focus();
    this.ta.setSelectionRange(pos, pos);
    const lh = parseFloat(getComputedStyle(this.ta).lineHeight) || 20;
    this.ta.scrollTop = Math.max(0, (line - 3) * lh);
    this.sync();
  }

  /** Shows located errors ({line, column, field, message, hint}); other errors as text. */
  setErrors(details, message) {
    this.errors = (details || []).filter((d) => d && d.line);
    this.paint();
    if (this.errors.length) {
      this.state.className = 'small validity error';
      this.state.textContent = this.errors.length + (this.errors.length === 1 ? ' error' : ' errors') + ': nothing was changed. Choose one to go to its line.';
    } else if (message) {
      this.state.className = 'small validity error';
      this.state.textContent = message;
    }
  }

  setValid(text) {
    this.errors = [];
    this.paint();
    this.state.className = 'small validity valid';
    this.state.textContent = text;
  }

  validateSoon(ms) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.validate(), ms);
  }

  /** A dry run: the lab parses, checks and resolves the text with the active set, changing nothing. */
  async validate() {
    const text = this.value;
    const seq = ++this.seq;
    if (!text.trim()) {
      this.errors = [];
      this.paint();
      this.state.className = 'small validity muted';
      this.state.textContent = 'Empty.';
      return true;
    }
    try {
      const r = await Lab.api('POST', '/api/policies', { source: this.opts.source, text, dry_run: true });
      if (seq !== this.seq) return true;
      const names = (r.results || []).map((x) => x.name + ' (' + x.action + ')').join(', ');
      this.setValid('Valid. Applying would give: ' + (names || 'nothing') + '.');
      return true;
    } catch (e) {
      if (seq !== this.seq) return false;
      this.setErrors(e.details, Lab.errorText(e));
      return false;
    }
  }
}
