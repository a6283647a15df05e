// The compose page: "Add a … row" and "Remove" work without JS (they post the form back); with
// JS they act in place. A new row is the kind's <template> with __i__ replaced by the next index
// (the server reads rows 0..count-1 and skips empty or missing ones). Loaded with defer.
(function () {
  "use strict";
  const form = document.getElementById("compose-form");
  if (!form) return;

  form.addEventListener("click", function (event) {
    const button = event.target instanceof Element ? event.target.closest("button") : null;
    if (!button) return;
    if (button.dataset.add) {
      const kind = button.dataset.add;
      const set = form.querySelector('fieldset[data-kind="' + kind + '"]');
      const template = document.getElementById("row-template-" + kind);
      if (!set || !template) return;
      event.preventDefault();
      const count = set.querySelector("input[data-count]");
      const index = parseInt(count.value, 10) || 0;
      const holder = document.createElement("div");
      holder.innerHTML = template.innerHTML.split("__i__").join(String(index));
      const list = set.querySelector(".row-list");
      const empty = list.querySelector(".empty-rows");
      if (empty) empty.remove();
      const row = holder.firstElementChild;
      list.appendChild(row);
      count.value = String(index + 1);
      const first = row.querySelector("input, select");
      if (first) first.focus();
    } else if (button.hasAttribute("data-remove")) {
      event.preventDefault();
      const row = button.closest(".compose-row");
      if (row) row.remove();
    }
  });
})();
