// Deployment form: a type-ahead filter over the profile picker (grouped by model). Without JS
// the <select> is the whole picker; with it, words typed in #profile-filter hide the options
// (and model groups) that do not contain every word. Nothing is ever preselected here.
(function () {
  "use strict";
  const select = document.getElementById("profile-select");
  const filter = document.getElementById("profile-filter");
  if (!select || !filter) return;
  const count = document.getElementById("profile-filter-count");
  const wrapper = filter.closest(".profile-filter");
  if (wrapper) wrapper.hidden = false;

  const options = Array.from(select.querySelectorAll("optgroup > option"));
  const haystack = new Map(options.map((o) => [o, (o.parentElement.label + " " + o.textContent).toLowerCase()]));

  function apply() {
    const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    let shown = 0;
    for (const option of options) {
      const text = haystack.get(option);
      const match = words.every((w) => text.includes(w));
      option.hidden = !match;
      option.disabled = !match && !option.selected;
      if (match) shown += 1;
    }
    for (const group of select.querySelectorAll("optgroup")) {
      group.hidden = !Array.from(group.children).some((o) => !o.hidden);
    }
    if (count) {
      count.textContent = words.length ? shown + " of " + options.length + " profiles match" : "";
    }
  }

  filter.addEventListener("input", apply);
  filter.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      // Enter picks the only match rather than submitting the form.
      event.preventDefault();
      const visible = options.filter((o) => !o.hidden);
      if (visible.length === 1) {
        select.value = visible[0].value;
        select.dispatchEvent(new Event("change", { bubbles: true }));
      }
      select.focus();
    }
  });
})();
