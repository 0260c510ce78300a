// "Identify a specimen": drag-and-drop with previews on the form, live progress on the status page.
(function () {
  "use strict";

  document.querySelectorAll("[data-dropzone]").forEach(function (zone) {
    var input = zone.querySelector("input[type=file]");
    var preview = zone.querySelector(".preview");
    var text = zone.querySelector(".drop-text");
    // With scripts on, the drop zone (a label for the input) is the one control; the native input stays
    // in the page, visually hidden but focusable, so keyboards and screen readers still reach it.
    zone.classList.add("enhanced");
    function show(file) {
      if (!file || !file.type || file.type.indexOf("image/") !== 0) { return; }
      preview.src = URL.createObjectURL(file);
      preview.hidden = false;
      text.textContent = file.name;
    }
    input.addEventListener("change", function () { show(input.files[0]); });
    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (event) { event.preventDefault(); zone.classList.add("dragging"); });
    });
    ["dragleave", "drop"].forEach(function (name) {
      zone.addEventListener(name, function () { zone.classList.remove("dragging"); });
    });
    zone.addEventListener("drop", function (event) {
      event.preventDefault();
      if (event.dataTransfer && event.dataTransfer.files.length) {
        input.files = event.dataTransfer.files;
        show(input.files[0]);
      }
    });
  });

  var page = document.querySelector(".submission[data-status-url]");
  if (page && page.dataset.finished === "false") {
    var steps = page.querySelectorAll(".steps .step");
    var poll = function () {
      fetch(page.dataset.statusUrl, { headers: { Accept: "application/json" } })
        .then(function (response) { return response.json(); })
        .then(function (data) {
          if (data.finished) { window.location.reload(); return; }
          data.steps.forEach(function (step, i) { if (steps[i]) { steps[i].className = "step " + step.state; } });
          window.setTimeout(poll, 1500);
        })
        .catch(function () { window.setTimeout(poll, 5000); });
    };
    window.setTimeout(poll, 1000);
  }
})();
