// Math without network, with a network fallback.
// sphinx-mathjax-offline serves MathJax 3.2.2 from _static/mathjax/tex-chtml.js, so pages render math
// offline. If that local script did not load (file missing, blocked, opened from a partial copy), this
// snippet loads the same MathJax version from a CDN instead, which works whenever the reader is online.
// Checked by tests/book/test_book_build.py (offline: no fallback element when the local copy works; the
// fallback element appears when the local copy is removed).
(function () {
  "use strict";
  var CDN = "https://cdn.jsdelivr.net/npm/mathjax@3.2.2/es5/tex-chtml.js";
  function localMathJaxLoaded() {
    return Boolean(window.MathJax && window.MathJax.version);
  }
  window.addEventListener("load", function () {
    if (localMathJaxLoaded() || document.getElementById("mathjax-cdn-fallback")) return;
    if (!document.querySelector(".math")) return; // nothing to typeset on this page
    var script = document.createElement("script");
    script.id = "mathjax-cdn-fallback";
    script.async = true;
    script.src = CDN;
    document.head.appendChild(script);
  });
})();
