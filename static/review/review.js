/* Review page: compare the submitted specimen with a candidate at the same orientation and scale.
   Synced zoom/pan on both viewers, rotate the candidate, flip ("blink") between the two in one place,
   step through the 8 candidates and each item's other specimens, keyboard shortcuts. No dependencies. */
(function () {
  "use strict";
  var dataEl = document.getElementById("compare-data");
  var root = document.getElementById("review");
  if (!dataEl || !root) return;
  var data = JSON.parse(dataEl.textContent);
  var imgQ = document.getElementById("img-query");
  var imgC = document.getElementById("img-candidate");
  var capQ = document.getElementById("cap-query");
  var capC = document.getElementById("cap-candidate");
  var detail = document.getElementById("cand-detail");
  var viewerQ = document.getElementById("viewer-query");
  var viewerC = document.getElementById("viewer-candidate");
  var state = { cand: 0, image: 0, query: 0, zoom: 1, x: 0, y: 0, extraRot: 0, upright: false, blink: false, original: false, showingCandidate: false };

  function candidate() { return data.candidates[state.cand]; }
  function queryImage() { return data.query[state.query] || data.query[0] || {}; }

  function baseRotation() {
    // Candidate.rotation turns the upright catalogue photo to the query's orientation as photographed;
    // in "upright" mode both are shown upright instead (the query's upright image, candidate unturned).
    var c = candidate();
    if (!c) return 0;
    return (state.upright ? 0 : c.rotation) + state.extraRot;
  }

  function transform(rotation) {
    return "translate(" + state.x + "px," + state.y + "px) scale(" + state.zoom + ") rotate(" + rotation + "deg)";
  }

  function render() {
    var q = queryImage();
    var qSrc = state.original ? (q.original || q.cutout) : (state.upright ? (q.upright || q.cutout) : (q.cutout || q.original));
    if (qSrc && imgQ.getAttribute("src") !== qSrc) imgQ.src = qSrc;
    imgQ.style.transform = transform(0);
    capQ.textContent = "Submitted photo " + (state.query + 1) + (q.side ? " (" + q.side + ")" : "") +
      (state.upright ? ", upright" : state.original ? ", original" : ", cut-out");
    var c = candidate();
    if (c) {
      var images = c.images.length ? c.images : [{ url: "", record_id: "", side: "" }];
      state.image = Math.max(0, Math.min(state.image, images.length - 1));
      var im = images[state.image];
      if (im.url && imgC.getAttribute("src") !== im.url) imgC.src = im.url;
      imgC.hidden = !imgC.getAttribute("src");  // no image yet: no broken-image icon
      imgC.style.transform = transform(baseRotation());
      imgC.classList.toggle("photo", !im.is_cutout);
      capC.textContent = "#" + c.rank + " " + c.label + " · " + (im.record_id || "no image") +
        (im.side ? " (" + im.side + ")" : "") + " · image " + (state.image + 1) + "/" + c.images.length +
        " · score " + c.score +
        // The metadata bonus that ranked it (identification.services.candidates_search).
        (c.agreement ? " (metadata " + (c.agreement > 0 ? "+" : "") + c.agreement + ")" : "");
      detail.innerHTML = "";
      var a = document.createElement("a");
      a.href = c.url; a.target = "_blank"; a.rel = "noopener";
      a.textContent = c.title;
      detail.appendChild(a);
    }
    document.querySelectorAll("#cand-strip .cand").forEach(function (b, i) {
      b.setAttribute("aria-pressed", i === state.cand ? "true" : "false");
    });
    root.classList.toggle("blinking", state.blink);
    viewerC.classList.toggle("on-top", state.blink && state.showingCandidate);
    root.classList.toggle("showing-candidate", state.blink && state.showingCandidate);
    setPressed("upright", state.upright);
    setPressed("blink", state.blink);
    setPressed("photo", state.original);
  }

  function setPressed(act, on) {
    var b = root.querySelector('[data-act="' + act + '"]');
    if (b) b.setAttribute("aria-pressed", on ? "true" : "false");
  }

  function selectCandidate(i) {
    if (!data.candidates.length) return;
    state.cand = (i + data.candidates.length) % data.candidates.length;
    state.image = 0;
    state.extraRot = 0;
    var c = candidate();
    if (c && typeof c.query_position === "number" && data.query[c.query_position]) state.query = c.query_position;
    render();
  }

  function choose(decision) {
    var form = document.getElementById("decision");
    if (!form) return;
    var radio = form.querySelector('input[name="decision"][value="' + decision + '"]');
    if (radio) { radio.checked = true; radio.dispatchEvent(new Event("change", { bubbles: true })); }
    if (decision === "match" && candidate()) {
      var select = document.getElementById("item-select");
      if (select) select.value = String(candidate().item_id);
    }
    form.scrollIntoView({ behavior: "smooth", block: "nearest" });
  }

  var actions = {
    prev: function () { selectCandidate(state.cand - 1); },
    next: function () { selectCandidate(state.cand + 1); },
    prevImage: function () { state.image = Math.max(0, state.image - 1); render(); },
    nextImage: function () { var c = candidate(); if (c) { state.image = Math.min(c.images.length - 1, state.image + 1); render(); } },
    zoomIn: function () { state.zoom = Math.min(8, state.zoom * 1.25); render(); },
    zoomOut: function () { state.zoom = Math.max(0.5, state.zoom / 1.25); render(); },
    reset: function () { state.zoom = 1; state.x = 0; state.y = 0; state.extraRot = 0; render(); },
    rotLeft: function () { state.extraRot -= 5; render(); },
    rotRight: function () { state.extraRot += 5; render(); },
    upright: function () { state.upright = !state.upright; render(); },
    blink: function () {
      if (!state.blink) { state.blink = true; state.showingCandidate = true; }
      else { state.showingCandidate = !state.showingCandidate; }
      render();
    },
    unblink: function () { state.blink = false; render(); },
    photo: function () { state.original = !state.original; render(); },
    side: function () { state.query = (state.query + 1) % Math.max(1, data.query.length); render(); },
    choose: function () { choose("match"); }
  };

  root.addEventListener("click", function (e) {
    var b = e.target.closest("[data-act]");
    if (b && actions[b.dataset.act]) { actions[b.dataset.act](); return; }
    var cand = e.target.closest(".cand");
    if (cand) selectCandidate(Number(cand.dataset.index));
  });

  // Synced pan (drag) and zoom (wheel) on both viewers, so details line up.
  var drag = null;
  document.querySelectorAll(".viewer .stage").forEach(function (stage) {
    stage.addEventListener("pointerdown", function (e) {
      drag = { x: e.clientX - state.x, y: e.clientY - state.y };
      stage.setPointerCapture(e.pointerId);
    });
    stage.addEventListener("pointermove", function (e) {
      if (!drag) return;
      state.x = e.clientX - drag.x; state.y = e.clientY - drag.y; render();
    });
    stage.addEventListener("pointerup", function () { drag = null; });
    stage.addEventListener("wheel", function (e) {
      e.preventDefault();
      state.zoom = Math.max(0.5, Math.min(8, state.zoom * (e.deltaY < 0 ? 1.1 : 1 / 1.1)));
      render();
    }, { passive: false });
  });

  // Decision form: show the item picker for "match", the draft fields for "new item".
  var form = document.getElementById("decision");
  function syncForm() {
    if (!form) return;
    var checked = form.querySelector('input[name="decision"]:checked');
    var value = checked ? checked.value : "";
    form.classList.toggle("is-match", value === "match");
    form.classList.toggle("is-new", value === "new_item");
  }
  if (form) { form.addEventListener("change", syncForm); syncForm(); }

  document.addEventListener("keydown", function (e) {
    var t = e.target;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable)) return;
    var map = {
      ArrowLeft: "prev", ArrowRight: "next", ArrowUp: "prevImage", ArrowDown: "nextImage",
      "+": "zoomIn", "=": "zoomIn", "-": "zoomOut", "0": "reset", "[": "rotLeft", "]": "rotRight",
      " ": "blink", u: "upright", o: "photo", s: "side", m: "choose", Escape: "unblink"
    };
    if (map[e.key]) { e.preventDefault(); actions[map[e.key]](); return; }
    if (/^[1-8]$/.test(e.key)) { e.preventDefault(); selectCandidate(Number(e.key) - 1); return; }
    if (e.key === "n") { e.preventDefault(); choose("new_item"); }
    if (e.key === "?") { e.preventDefault(); choose("unsure"); }
  });

  render();
})();
