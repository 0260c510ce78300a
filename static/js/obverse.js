/* Obverse: small progressive enhancements. Every page works without this file. */
(function () {
  "use strict";

  // Sort and status selects submit their form when changed (the Search button still works without JS).
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () {
      if (select.form) select.form.requestSubmit ? select.form.requestSubmit() : select.form.submit();
    });
  });

  // The filter panel starts folded on narrow screens, open on wide ones.
  var narrow = window.matchMedia("(max-width: 56rem)");
  document.querySelectorAll("details[data-collapse-narrow]").forEach(function (details) {
    if (narrow.matches) details.open = false;
  });

  // Lightbox: a link to the full image opens it in a <dialog>; clicking the image zooms at that point.
  var dialog = document.getElementById("lightbox");
  if (!dialog || typeof dialog.showModal !== "function") return; // no <dialog>: links open the image
  var img = document.getElementById("lightbox-img");
  var caption = document.getElementById("lightbox-caption");
  var opener = null;

  function unzoom() {
    img.classList.remove("zoomed");
    img.style.transformOrigin = "";
  }

  document.addEventListener("click", function (event) {
    var link = event.target.closest("a[data-zoom]");
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey) return;
    event.preventDefault();
    opener = link;
    unzoom();
    var thumb = link.querySelector("img");
    img.src = link.getAttribute("href");
    img.alt = thumb ? thumb.alt : "";
    caption.textContent = link.dataset.caption || "";
    dialog.showModal();
  });

  img.addEventListener("click", function (event) {
    if (img.classList.contains("zoomed")) return unzoom();
    var box = img.getBoundingClientRect();
    var x = ((event.clientX - box.left) / box.width) * 100;
    var y = ((event.clientY - box.top) / box.height) * 100;
    img.style.transformOrigin = x + "% " + y + "%";
    img.classList.add("zoomed");
  });

  // Clicking the backdrop (the dialog element itself, outside its content) closes it.
  dialog.addEventListener("click", function (event) {
    if (event.target === dialog) dialog.close();
  });
  dialog.addEventListener("close", function () {
    unzoom();
    img.removeAttribute("src");
    if (opener) opener.focus();
  });
})();
