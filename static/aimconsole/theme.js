/* Theme (auto / light / dark) and the phone-width menu. Loaded in <head>, not deferred: the
   theme kept in localStorage is applied before the first paint. The server's saved choice
   (data-theme-saved, signed-in users) wins and is mirrored into localStorage. No inline
   script anywhere (CSP); everything here also works as plain forms without JavaScript. */
(function () {
  "use strict";
  var KEY = "aim-theme";
  var THEMES = ["auto", "light", "dark"];
  var root = document.documentElement;
  root.classList.add("js");

  function stored() {
    try { return window.localStorage.getItem(KEY); } catch (e) { return null; }
  }
  function store(theme) {
    try { window.localStorage.setItem(KEY, theme); } catch (e) { /* private mode: the server keeps it */ }
  }
  if (root.hasAttribute("data-theme-saved")) {
    store(root.getAttribute("data-theme") || "auto");
  } else if (THEMES.indexOf(stored()) >= 0) {
    root.setAttribute("data-theme", stored());
  }

  function next(theme) { return THEMES[(THEMES.indexOf(theme) + 1) % THEMES.length]; }

  function showTheme(button, theme) {
    button.value = next(theme);
    button.setAttribute("data-theme-current", theme);
    button.setAttribute("aria-label", "Theme: " + theme + ". Switch theme");
    button.textContent = "Theme: " + theme;
  }

  function wireThemeToggle(form) {
    var button = form.querySelector("button[name=theme]");
    if (!button) { return; }
    showTheme(button, root.getAttribute("data-theme") || "auto");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var theme = button.value;
      root.setAttribute("data-theme", theme);
      store(theme);
      showTheme(button, theme);
      var data = new FormData(form);
      data.set("theme", theme);
      fetch(form.action, { method: "POST", body: data, credentials: "same-origin",
                           headers: { "X-Requested-With": "fetch" } }).catch(function () { /* kept locally */ });
    });
  }

  function wireMenu(toggle) {
    var nav = document.getElementById(toggle.getAttribute("aria-controls"));
    if (!nav) { return; }
    toggle.addEventListener("click", function () {
      var open = toggle.getAttribute("aria-expanded") !== "true";
      toggle.setAttribute("aria-expanded", String(open));
      nav.classList.toggle("open", open);
    });
    document.addEventListener("keydown", function (event) {
      if (event.key === "Escape" && toggle.getAttribute("aria-expanded") === "true") {
        toggle.setAttribute("aria-expanded", "false");
        nav.classList.remove("open");
        toggle.focus();
      }
    });
  }

  function wireSkipLink(link) {
    // Move focus, not only the scroll position, to the main region.
    link.addEventListener("click", function () {
      var target = document.getElementById("content");
      if (target) { window.setTimeout(function () { target.focus(); }, 0); }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("form.theme-toggle").forEach(wireThemeToggle);
    document.querySelectorAll(".navtoggle").forEach(wireMenu);
    document.querySelectorAll(".skip-link").forEach(wireSkipLink);
  });
})();
