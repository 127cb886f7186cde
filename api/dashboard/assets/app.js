// Tasker's dashboard script: live parts of a page, DAG zoom, the theme
// toggle and "select all". Every page works without it; it only refreshes
// what the server renders.
(function () {
  "use strict";

  // --- Theme ---
  var themeBtn = document.getElementById("theme-toggle");
  function currentTheme() {
    var t = document.documentElement.getAttribute("data-theme");
    if (t) return t;
    return window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  }
  function showTheme() {
    var dark = currentTheme() === "dark";
    themeBtn.textContent = dark ? "Light theme" : "Dark theme";
    themeBtn.setAttribute("aria-label", dark ? "Switch to the light theme" : "Switch to the dark theme");
  }
  if (themeBtn) {
    themeBtn.hidden = false;
    showTheme();
    themeBtn.addEventListener("click", function () {
      var next = currentTheme() === "dark" ? "light" : "dark";
      document.documentElement.setAttribute("data-theme", next);
      try { localStorage.setItem("tasker-theme", next); } catch (e) { /* not kept */ }
      showTheme();
    });
  }

  // --- Select every task shown ---
  var all = document.getElementById("select-all");
  if (all) {
    all.hidden = false;
    all.addEventListener("change", function () {
      document.querySelectorAll('#task-list input[name="task"]').forEach(function (c) { c.checked = all.checked; });
    });
  }

  // --- DAG zoom ---
  var zoom = {}; // index of a .dag-wrap → scale
  function applyZoom(wrap, i) {
    var svg = wrap.querySelector("svg.dag");
    if (!svg) return;
    var s = zoom[i] || 1;
    svg.setAttribute("width", Math.round(svg.getAttribute("data-w") * s));
    svg.setAttribute("height", Math.round(svg.getAttribute("data-h") * s));
  }
  function setupZoom() {
    document.querySelectorAll(".dag-wrap").forEach(function (wrap, i) {
      var bar = wrap.querySelector(".zoom");
      if (!bar) return;
      bar.hidden = false;
      applyZoom(wrap, i);
      if (bar.dataset.ready) return;
      bar.dataset.ready = "1";
      bar.addEventListener("click", function (ev) {
        var b = ev.target.closest("button[data-zoom]");
        if (!b) return;
        var svg = wrap.querySelector("svg.dag");
        var s = zoom[i] || 1;
        if (b.dataset.zoom === "in") s = Math.min(4, s * 1.25);
        if (b.dataset.zoom === "out") s = Math.max(0.2, s / 1.25);
        if (b.dataset.zoom === "fit") {
          var box = wrap.querySelector(".dag-scroll");
          s = Math.min(1, (box.clientWidth - 4) / svg.getAttribute("data-w"));
        }
        zoom[i] = s;
        applyZoom(wrap, i);
      });
    });
  }
  setupZoom();

  // --- Live parts ---
  if (!document.body.hasAttribute("data-live-page")) return;
  var toggle = document.getElementById("live-toggle");
  var status = document.getElementById("live-status");
  var interval = 2000;
  var paused = false;
  try { paused = sessionStorage.getItem("tasker-live") === "paused"; } catch (e) { /* default */ }
  var busy = false;

  function showToggle() {
    toggle.setAttribute("aria-pressed", paused ? "false" : "true");
    toggle.textContent = paused ? "Paused: resume" : "Live: pause";
    if (status) status.textContent = paused ? "updates paused" : "updating every " + interval / 1000 + " s";
  }
  toggle.hidden = false;
  showToggle();
  toggle.addEventListener("click", function () {
    paused = !paused;
    try { sessionStorage.setItem("tasker-live", paused ? "paused" : "live"); } catch (e) { /* not kept */ }
    showToggle();
    if (!paused) refresh();
  });

  // A part is left alone while someone works in it: focus inside, or a
  // field typed into.
  function inUse(el) {
    if (el.contains(document.activeElement) && document.activeElement !== document.body) return true;
    var fields = el.querySelectorAll("input, textarea, select");
    for (var i = 0; i < fields.length; i++) {
      var f = fields[i];
      if (f.type === "hidden") continue;
      if (f.type === "checkbox" || f.type === "radio") { if (f.checked !== f.defaultChecked) return true; continue; }
      if (f.tagName === "SELECT") continue;
      if (f.value !== f.defaultValue) return true;
    }
    return false;
  }

  function swap(oldEl, newEl) {
    // Keep what the reader opened and where they scrolled.
    var open = Array.prototype.map.call(oldEl.querySelectorAll("details"), function (d) { return d.open; });
    var scrolls = Array.prototype.map.call(oldEl.querySelectorAll(".scroll"), function (s) { return [s.scrollLeft, s.scrollTop]; });
    var fresh = document.importNode(newEl, true);
    var details = fresh.querySelectorAll("details");
    if (details.length === open.length) details.forEach(function (d, i) { d.open = open[i]; });
    oldEl.replaceWith(fresh);
    var boxes = fresh.querySelectorAll(".scroll");
    if (boxes.length === scrolls.length) boxes.forEach(function (s, i) { s.scrollLeft = scrolls[i][0]; s.scrollTop = scrolls[i][1]; });
  }

  function refresh() {
    if (paused || busy || document.hidden) return;
    busy = true;
    fetch(location.href, { headers: { "X-Tasker-Live": "1" }, credentials: "same-origin", cache: "no-store" })
      .then(function (resp) {
        if (resp.status === 401) throw new Error("signed out; reload the page to sign in");
        return resp.text().then(function (text) { return [resp.status, text]; });
      })
      .then(function (r) {
        // Paused while the answer was on its way: the page stays as it is.
        if (paused) return;
        var doc = new DOMParser().parseFromString(r[1], "text/html");
        document.querySelectorAll("[data-live][id]").forEach(function (el) {
          var next = doc.getElementById(el.id);
          if (next && !inUse(el)) swap(el, next);
        });
        setupZoom();
        if (status) status.textContent = "updated " + new Date().toLocaleTimeString() + (r[0] !== 200 ? " (status " + r[0] + ")" : "");
        document.body.setAttribute("data-updated", String(Date.now()));
      })
      .catch(function (err) {
        if (status && !paused) status.textContent = "update failed: " + err.message;
      })
      .finally(function () { busy = false; });
  }
  setInterval(refresh, interval);
  document.addEventListener("visibilitychange", function () { if (!document.hidden) refresh(); });
})();
