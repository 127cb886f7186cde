// Runs before the page is drawn: the theme chosen with the toggle, if any,
// else the system's (the style sheet follows prefers-color-scheme).
(function () {
  try {
    var t = localStorage.getItem("tasker-theme");
    if (t === "dark" || t === "light") document.documentElement.setAttribute("data-theme", t);
  } catch (e) { /* storage refused: the system's theme */ }
})();
