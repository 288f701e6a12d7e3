// Starts OpenSeadragon (vendored in assets/openseadragon) on the Viewer page's element.
(function () {
  new MutationObserver(() => {
    const el = document.getElementById("osd-viewer");
    if (!el || el.dataset.started || !window.OpenSeadragon) return;
    el.dataset.started = "1";
    window.OpenSeadragon({id: "osd-viewer", prefixUrl: "/assets/openseadragon/images/", tileSources: el.dataset.dzi,
                          showNavigator: true, maxZoomPixelRatio: 4});
  }).observe(document.documentElement, {childList: true, subtree: true});
})();
