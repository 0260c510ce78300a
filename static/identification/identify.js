// "Identify a specimen": drop zones with previews, sending in place (progress, errors without losing the
// chosen photos), live progress on the status page, and the comparison of a candidate on the result page.
(function () {
  "use strict";

  document.querySelectorAll("[data-dropzone]").forEach(function (zone) {
    var input = zone.querySelector("input[type=file]");
    var preview = zone.querySelector(".preview");
    var text = zone.querySelector(".drop-text");
    var clear = zone.querySelector(".clear-photo");
    var emptyText = text.innerHTML;
    // With scripts on, the drop zone (a label for the input) is the one control; the native input stays
    // in the page, visually hidden but focusable, so keyboards and screen readers still reach it.
    zone.classList.add("enhanced");
    function show(file) {
      if (!file) {
        preview.hidden = true;
        preview.removeAttribute("src");
        text.innerHTML = emptyText;
        clear.hidden = true;
        zone.classList.remove("chosen");
        return;
      }
      if (file.type && file.type.indexOf("image/") === 0) {
        preview.src = URL.createObjectURL(file);
        preview.hidden = false;
      }
      text.textContent = file.name;
      clear.hidden = false;
      zone.classList.add("chosen");
    }
    input.addEventListener("change", function () { show(input.files[0]); });
    clear.addEventListener("click", function () { input.value = ""; show(null); });
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
    if (input.files && input.files.length) { show(input.files[0]); }  // kept by the browser (Back)
  });

  // Sending in place: the page stays, so the chosen photos stay chosen when the server finds a problem;
  // the upload's progress shows and the button cannot send twice. Without scripts the form posts as usual.
  var form = document.querySelector("[data-identify-form]");
  if (form && window.FormData && window.XMLHttpRequest) {
    var button = form.querySelector("button[type=submit]");
    var sending = form.querySelector("[data-sending]");
    var bar = sending.querySelector("progress");
    var label = sending.querySelector("[data-sending-text]");
    var summary = form.querySelector("[data-error-summary]");

    var done = function () {
      button.disabled = false;
      sending.hidden = true;
      form.removeAttribute("aria-busy");
    };
    var showErrors = function (html) {
      var answer = new DOMParser().parseFromString(html, "text/html");
      var fresh = answer.querySelector("[data-error-summary]");
      if (!fresh) { throw new Error("unexpected answer"); }
      summary.innerHTML = fresh.innerHTML;
      summary.hidden = fresh.hidden;
      form.querySelectorAll("[data-errors]").forEach(function (slot) {
        var other = answer.querySelector('[data-errors="' + slot.dataset.errors + '"]');
        slot.innerHTML = other ? other.innerHTML : "";
      });
      // The summary takes the focus, so a screen reader reads what to fix (it is an alert, too).
      summary.setAttribute("tabindex", "-1");
      summary.scrollIntoView({ block: "start" });
      summary.focus({ preventScroll: true });
    };

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (button.disabled) { return; }
      button.disabled = true;
      form.setAttribute("aria-busy", "true");
      sending.hidden = false;
      bar.value = 0;
      label.textContent = "Sending your photos…";
      var request = new XMLHttpRequest();
      request.open("POST", form.action || window.location.href);
      request.setRequestHeader("X-Requested-With", "XMLHttpRequest");
      request.upload.addEventListener("progress", function (e) {
        if (e.lengthComputable) {
          bar.value = Math.round(100 * e.loaded / e.total);
          label.textContent = e.loaded < e.total ? "Sending your photos… " + bar.value + " %" : "Checking your photos…";
        }
      });
      request.addEventListener("load", function () {
        // Accepted: the server redirected to the status page, which the request followed.
        if (request.status === 200 && request.responseURL && request.responseURL !== window.location.href.split("#")[0]) {
          label.textContent = "Sent. Opening the status page…";
          window.location.assign(request.responseURL);
          return;
        }
        done();
        try {
          showErrors(request.responseText);
        } catch (e) {
          summary.hidden = false;
          summary.textContent = "The server could not take the photos (" + request.status + "). Please try again in a moment.";
        }
      });
      request.addEventListener("error", function () {
        done();
        summary.hidden = false;
        summary.textContent = "The photos could not be sent: check your connection and try again.";
      });
      request.send(new FormData(form));
    });
  }

  // The result page: click a candidate to compare it with your coin, large and at the same turn.
  var dataEl = document.getElementById("compare-data");
  var compare = document.getElementById("compare");
  if (dataEl && compare) {
    var data = JSON.parse(dataEl.textContent);
    var imgQ = document.getElementById("compare-query");
    var imgC = document.getElementById("compare-candidate");
    var capQ = document.getElementById("compare-query-caption");
    var capC = document.getElementById("compare-candidate-caption");
    var pair = compare.querySelector(".compare-pair");
    var state = { index: 0, zoom: 1, upright: false, flip: false, showCandidate: true };
    compare.querySelector(".compare-tools").hidden = false;

    var pressed = function (act, on) {
      var button = compare.querySelector('[data-act="' + act + '"]');
      if (button) { button.setAttribute("aria-pressed", on ? "true" : "false"); }
    };
    var render = function () {
      var c = data.candidates[state.index];
      var q = data.query.filter(function (photo) { return photo.position === c.query; })[0] || data.query[0];
      var upright = state.upright && q.upright;
      var qSrc = upright ? q.upright : (q.cutout || q.original);
      if (qSrc && imgQ.getAttribute("src") !== qSrc) { imgQ.src = qSrc; }
      if (c.image && imgC.getAttribute("src") !== c.image) { imgC.src = c.image; }
      imgC.hidden = !c.image;
      imgC.classList.toggle("photo", !c.is_cutout);
      // Catalogue images are upright: turned by the candidate's rotation they match the coin as photographed.
      imgQ.style.transform = "scale(" + state.zoom + ")";
      imgC.style.transform = "scale(" + state.zoom + ") rotate(" + (upright ? 0 : c.rotation) + "deg)";
      capQ.textContent = "Your coin" + (q.side ? " (" + q.side + ")" : "") + (upright ? ", turned upright" : ", as photographed");
      capC.textContent = "#" + c.rank + " " + c.label + " · " + (c.specimen ? "specimen " + c.specimen + (c.side ? " (" + c.side + ")" : "") : "no image") +
        (upright ? ", upright" : ", turned as your coin was photographed");
      compare.querySelectorAll("[data-compare-item]").forEach(function (el) {
        el.hidden = Number(el.dataset.compareItem) !== state.index;
      });
      document.querySelectorAll("[data-compare]").forEach(function (el) {
        el.setAttribute("aria-pressed", Number(el.dataset.compare) === state.index ? "true" : "false");
      });
      pair.classList.toggle("flipping", state.flip);
      pair.classList.toggle("showing-candidate", state.flip && state.showCandidate);
      pressed("upright", state.upright);
      pressed("flip", state.flip);
    };
    var select = function (i) {
      var n = data.candidates.length;
      state.index = ((i % n) + n) % n;
      render();
    };
    var actions = {
      prev: function () { select(state.index - 1); },
      next: function () { select(state.index + 1); },
      zoomIn: function () { state.zoom = Math.min(4, state.zoom * 1.25); render(); },
      zoomOut: function () { state.zoom = Math.max(1, state.zoom / 1.25); render(); },
      upright: function () { state.upright = !state.upright; render(); },
      flip: function () {
        if (!state.flip) { state.flip = true; state.showCandidate = true; } else { state.showCandidate = !state.showCandidate; }
        render();
      },
      unflip: function () { state.flip = false; render(); }
    };
    compare.addEventListener("click", function (event) {
      var button = event.target.closest("[data-act]");
      if (button && actions[button.dataset.act]) { actions[button.dataset.act](); }
    });
    document.querySelectorAll("[data-compare]").forEach(function (el) {
      el.addEventListener("click", function () {
        select(Number(el.dataset.compare));
        compare.scrollIntoView({ behavior: "smooth", block: "start" });
      });
    });
    document.addEventListener("keydown", function (event) {
      var target = event.target;
      if (event.ctrlKey || event.metaKey || event.altKey) { return; }
      if (target && /^(INPUT|TEXTAREA|SELECT|BUTTON|SUMMARY)$/.test(target.tagName) && event.key === " ") { return; }
      if (target && /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName)) { return; }
      var keys = { ArrowLeft: "prev", ArrowRight: "next", "+": "zoomIn", "-": "zoomOut", u: "upright", " ": "flip", Escape: "unflip" };
      if (keys[event.key]) { event.preventDefault(); actions[keys[event.key]](); }
    });
    render();
  }

  // The status page follows the worker: steps, place in the queue, and a reload when it is done.
  var page = document.querySelector(".submission[data-status-url]");
  if (page && page.dataset.finished === "false") {
    var steps = page.querySelectorAll(".steps .step");
    var status = page.querySelector("[data-status-text]");
    var queue = page.querySelector("[data-queue-text]");
    var poll = function () {
      fetch(page.dataset.statusUrl, { headers: { Accept: "application/json" } })
        .then(function (response) { return response.json(); })
        .then(function (data) {
          if (data.finished) { window.location.reload(); return; }
          data.steps.forEach(function (step, i) { if (steps[i]) { steps[i].className = "step " + step.state; } });
          if (status && data.status_text) { status.textContent = data.status_text; }
          if (queue) { queue.textContent = data.queue_text || ""; queue.hidden = !data.queue_text; }
          window.setTimeout(poll, 1500);
        })
        .catch(function () { window.setTimeout(poll, 5000); });
    };
    window.setTimeout(poll, 1000);
  }
})();
