// Copy buttons: [data-copy-target] copies the text of the element with that id (the container
// spec's JSON on a deployment's page) with navigator.clipboard; where that is refused (no
// secure context, no permission) it selects the text for Ctrl+C and says so.
(function () {
  "use strict";
  function selectText(el) {
    const range = document.createRange();
    range.selectNodeContents(el);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }
  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-copy-target]");
    if (!button) return;
    const source = document.getElementById(button.dataset.copyTarget);
    if (!source) return;
    const status = button.parentElement.querySelector(".copy-status");
    const say = (text) => { if (status) status.textContent = text; };
    const fallback = () => { selectText(source); say("Selected: press Ctrl+C (or ⌘C) to copy."); };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(source.textContent).then(() => say("Copied."), fallback);
    } else {
      fallback();
    }
  });
})();
