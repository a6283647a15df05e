// Confirmation before a destructive action. A submit button with data-confirm="<dialog id>"
// opens that native <dialog> instead of posting; the dialog sits inside the same form and holds
// the submit that posts it, and a button with data-dialog-close (or Escape) closes it. Without
// JS (or without <dialog> support) the page's button posts the form as it always did: the
// server side is the same action either way. Loaded with defer (the CSP allows no inline code).
(function () {
  "use strict";
  document.addEventListener("click", function (event) {
    const target = event.target instanceof Element ? event.target : null;
    if (!target) return;
    const opener = target.closest("button[data-confirm]");
    if (opener) {
      const dialog = document.getElementById(opener.dataset.confirm);
      if (!dialog || typeof dialog.showModal !== "function") return;
      event.preventDefault();
      if (!dialog.open) dialog.showModal();
      return;
    }
    const closer = target.closest("dialog [data-dialog-close]");
    if (closer) {
      event.preventDefault();
      closer.closest("dialog").close();
    }
  });
})();
