// The lessons and exercises lists: this browser's progress on each.
'use strict';

(() => {
  for (const li of document.querySelectorAll('[data-lesson]')) {
    const done = Lab.store.get('lesson:' + li.dataset.lesson, []).length;
    const total = Number(li.dataset.steps);
    const p = li.querySelector('[data-progress]');
    p.textContent = done ? done + ' of ' + total + ' done' : 'not started';
    if (done >= total && total > 0) li.classList.add('passed');
  }
  for (const li of document.querySelectorAll('[data-exercise]')) {
    const st = Lab.store.get('exercise:' + li.dataset.exercise, null);
    const el = li.querySelector('[data-status]');
    if (!st) continue;
    if (st.passed) {
      el.textContent = 'passed ✓';
      li.classList.add('passed');
    } else {
      el.textContent = 'tried: best ' + st.best + ' of ' + st.total + ' right';
    }
  }
})();
