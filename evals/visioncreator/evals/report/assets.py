"""The report pages' stylesheet and script (no framework), shared by the run report and the comparison."""

from __future__ import annotations

__all__ = ["CSS", "SCRIPT"]

CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1400px;padding:0 1em;color:#222}
h1{font-size:1.5em} h2{font-size:1.2em;margin-top:1.6em} h3{font-size:1em;margin:.2em 0}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th:first-child,td:first-child,td.l{text-align:left} th{background:#f3f3f3}
.meta{color:#555;font-size:.9em} .plots{display:flex;flex-wrap:wrap;gap:1em}
.plots figure{margin:0;flex:1 1 460px;max-width:680px} .plots img{width:100%;height:auto;border:1px solid #eee}
.filters{position:sticky;top:0;background:#fff;padding:.5em 0;border-bottom:1px solid #ddd;z-index:1}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:1em;margin-top:1em}
.task{border:1px solid #ccc;border-left:6px solid #c0392b;border-radius:4px;padding:.6em;font-size:.9em}
.task.success{border-left-color:#3a7d44} .task[hidden]{display:none} .task.changed{border-left-color:#d68910}
.task.only-a,.task.only-b{border-left-color:#8e44ad} .task.score{border-left-color:#2e86c1}
.task.same{border-left-color:#bbb}
.req{font-style:italic;margin:.3em 0} .imgs{display:flex;flex-wrap:wrap;gap:.3em;align-items:flex-start}
.imgs img{width:160px;height:auto;border:1px solid #bbb;background:#f6f6f6}
.refl img{width:48px;height:auto} .label{color:#555;font-size:.85em;margin-top:.4em}
.missing{display:inline-block;width:160px;padding:1em 0;text-align:center;background:#eee;color:#900;font-size:.8em}
.ok{color:#3a7d44;font-weight:bold} .bad{color:#c0392b;font-weight:bold} .warn{color:#c0392b}
.good{color:#3a7d44} .under{color:#c0392b} .over{color:#d68910} .unknown{color:#777}
.accept{color:#3a7d44} .redo{color:#d68910} .revise{color:#8e44ad}
ol,ul{margin:.2em 0;padding-left:1.4em} small{color:#666} pre{white-space:pre-wrap;background:#f6f6f6}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:.6em} .side{border-top:1px solid #eee;padding-top:.3em}
"""

# Filters the grid (no framework) and reports how many images loaded; the same script serves both pages.
SCRIPT = """
(function () {
  // Thumbnails load lazily; #all-images in the address (and printing) loads every one at once.
  const eager = () => { for (const img of document.images) img.loading = 'eager'; };
  if (location.hash === '#all-images') eager();
  window.addEventListener('beforeprint', eager);
  const cards = Array.from(document.querySelectorAll('.task'));
  const get = (id) => document.getElementById(id);
  function apply() {
    const split = get('f-split') ? get('f-split').value : 'all';
    const outcome = get('f-outcome') ? get('f-outcome').value : 'all';
    const text = get('f-text') ? get('f-text').value.trim().toLowerCase() : '';
    let shown = 0;
    for (const card of cards) {
      const ok = (split === 'all' || card.dataset.split === split)
        && (outcome === 'all' || card.dataset.outcome === outcome)
        && (!text || card.dataset.search.includes(text));
      card.hidden = !ok;
      if (ok) shown += 1;
    }
    if (get('f-count')) get('f-count').textContent = shown + ' of ' + cards.length + ' tasks shown';
  }
  for (const id of ['f-split', 'f-outcome', 'f-text']) {
    if (get(id)) get(id).addEventListener('input', apply);
  }
  apply();
  let queued = false;
  function imageStatus() {
    queued = false;
    const images = Array.from(document.images);
    let loaded = 0, broken = 0;
    for (const img of images) {
      if (img.complete) { if (img.naturalWidth > 0) loaded += 1; else broken += 1; }
    }
    const body = document.body.dataset;
    body.imagesTotal = images.length; body.imagesLoaded = loaded; body.imagesBroken = broken;
    body.plotsLoaded = images.filter((i) => i.classList.contains('plot') && i.naturalWidth > 0).length;
    const status = get('image-status');
    if (status) {
      status.textContent = loaded + ' of ' + images.length + ' images loaded'
        + (broken ? ', ' + broken + ' missing (was the run folder moved without store/ and thumbs/?)' : '');
      status.className = broken ? 'warn' : 'meta';
    }
  }
  function later() { if (!queued) { queued = true; requestAnimationFrame(imageStatus); } }
  for (const img of document.images) { img.addEventListener('load', later); img.addEventListener('error', later); }
  window.addEventListener('load', () => { imageStatus(); document.body.dataset.ready = '1'; });
})();
"""
