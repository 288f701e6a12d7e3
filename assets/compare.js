// Synchronised zoom and pan between the lossless and the lossy pane of the Compare page.
(function () {
  const panes = ["pane-lossless", "pane-lossy"];
  let syncing = false;

  function plot(id) {
    const el = document.getElementById(id);
    return el && el.querySelector(".js-plotly-plot");
  }

  function bind(id) {
    const gd = plot(id);
    if (!gd || gd.dataset.synced) return;
    gd.dataset.synced = "1";
    gd.on("plotly_relayout", ev => {
      if (syncing) return;
      const other = plot(panes.find(p => p !== id));
      if (!other) return;
      const update = {};
      for (const k of Object.keys(ev)) if (k.startsWith("xaxis.") || k.startsWith("yaxis.")) update[k] = ev[k];
      if (!Object.keys(update).length) return;
      syncing = true;
      Promise.resolve(window.Plotly.relayout(other, update)).finally(() => { syncing = false; });
    });
  }

  new MutationObserver(() => panes.forEach(bind)).observe(document.documentElement, {childList: true, subtree: true});
})();
