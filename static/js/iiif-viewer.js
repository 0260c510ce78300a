// Opens the page's IIIF manifest (data-manifest) in Mirador, loaded from our own static files.
(function () {
  "use strict";
  var element = document.getElementById("mirador");
  if (!element || !window.Mirador) { return; }
  var manifest = element.getAttribute("data-manifest");
  var config = {
    id: "mirador",
    windows: [{ manifestId: manifest, thumbnailNavigationPosition: "far-bottom", sideBarOpen: true }],
    window: { allowClose: false, allowMaximize: false, defaultSideBarPanel: "info" },
    workspace: { showZoomControls: true },
    workspaceControlPanel: { enabled: false },
  };
  config.manifests = {};
  config.manifests[manifest] = { provider: document.title };
  window.Mirador.viewer(config);
})();
