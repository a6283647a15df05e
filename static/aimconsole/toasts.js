// Toasts for the signed-in user, on every console page: an operation or deployment they
// started reached a final state (/ws/me/, partitions/consumers.py UserConsumer). Text only
// (textContent): nothing from the message is parsed as HTML.
(function () {
  "use strict";
  const root = document.getElementById("toasts");
  if (!root || !("WebSocket" in window)) return;
  const SHOWN_MS = 12000;
  const MAX = 5;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function show(notice) {
    const toast = el("div", "toast toast-" + (notice.level || "info"));
    toast.setAttribute("role", notice.level === "bad" ? "alert" : "status");
    toast.dataset.kind = notice.kind || "";
    toast.dataset.state = notice.state || "";
    const title = el("div", "toast-title");
    if (notice.url && notice.url.charAt(0) === "/") {
      const link = el("a", "", notice.title || "");
      link.href = notice.url;
      title.appendChild(link);
    } else {
      title.textContent = notice.title || "";
    }
    const close = el("button", "toast-close", "×");
    close.type = "button";
    close.setAttribute("aria-label", "Dismiss");
    close.addEventListener("click", () => toast.remove());
    toast.appendChild(title);
    toast.appendChild(close);
    toast.appendChild(el("span", "toast-state", (notice.kind || "") + " · " + (notice.state || "").replace("_", " ")));
    if (notice.message) toast.appendChild(el("div", "toast-message", notice.message));
    root.appendChild(toast);
    while (root.children.length > MAX) root.firstElementChild.remove();
    let timer = setTimeout(() => toast.remove(), SHOWN_MS);
    toast.addEventListener("mouseenter", () => clearTimeout(timer));
    toast.addEventListener("mouseleave", () => { timer = setTimeout(() => toast.remove(), SHOWN_MS / 2); });
  }

  let delay = 2000;
  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + (root.dataset.socket || "/ws/me/"));
    socket.onopen = () => { delay = 2000; root.dataset.live = "yes"; };
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "user.notice") show(message);
    };
    socket.onclose = (event) => {
      root.dataset.live = "no";
      if (event.code >= 4400 && event.code < 4500) return;
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 60000);
    };
  }
  connect();
})();
