/* Styles that depend on data (the turn of a candidate photo, the length of a bar) arrive as data-*
   attributes: the Content-Security-Policy (style-src 'self') refuses inline style attributes, while
   setting a style from a same-origin script is allowed. Without JavaScript the photos are unturned. */
(function () {
  "use strict";
  document.querySelectorAll("[data-rotate]").forEach(function (el) {
    var degrees = parseFloat(el.dataset.rotate);
    if (isFinite(degrees)) { el.style.transform = "rotate(" + degrees + "deg)"; }
  });
  document.querySelectorAll("[data-clip-circle]").forEach(function (el) { el.style.clipPath = "circle(49%)"; });
  document.querySelectorAll("[data-width-percent]").forEach(function (el) {
    var percent = parseFloat(el.dataset.widthPercent);
    if (isFinite(percent)) { el.style.width = Math.max(0, Math.min(100, percent)) + "%"; }
  });
})();
