// The layout editors' what-if form (GPU and node editor). htmx drops 4xx answers by default, so
// a refused preview (400: the reason, as the plan fragment) would show nothing: swap those into
// the plan slot like any answer. Anything else that fails (a 500, a lost connection) says so in
// the slot as text. Loaded with defer (the CSP allows no inline code).
(function () {
  "use strict";
  const SLOT = "plan-slot";

  function inSlot(event) {
    const target = event.detail && event.detail.target;
    return target instanceof Element && target.id === SLOT;
  }

  function say(slot, text) {
    const box = document.createElement("div");
    box.className = "plan card";
    box.id = "plan";
    const p = document.createElement("p");
    p.className = "error";
    p.id = "plan-error";
    p.setAttribute("role", "alert");
    p.textContent = text;
    box.appendChild(p);
    slot.replaceChildren(box);
  }

  document.addEventListener("htmx:beforeSwap", function (event) {
    if (!inSlot(event)) return;
    const status = event.detail.xhr.status;
    if (status === 400) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    } else if (status >= 400) {
      event.detail.shouldSwap = false;
      say(event.detail.target, "The preview failed (HTTP " + status + "); nothing changed. Reload the page and try again.");
    }
  });

  document.addEventListener("htmx:sendError", function (event) {
    if (inSlot(event)) say(event.detail.target, "The console could not be reached; nothing changed.");
  });
})();
