// Fleet overview: colour each partition by its live GFX activity (from /ws/telemetry/).
(function () {
  "use strict";
  const status = document.getElementById("live-status");
  const lastSeen = {};  // node -> {ts, interval}

  function setStatus(state, text) {
    if (!status) return;
    status.dataset.state = state;
    status.textContent = text;
  }

  function utilClass(value) {
    if (value === null || value === undefined) return "unknown";
    const bucket = Math.min(100, Math.max(0, Math.round(value / 10) * 10));
    return "util-" + bucket;
  }

  function apply(nodeName, snapshot) {
    const section = document.querySelector('section.node[data-node="' + CSS.escape(nodeName) + '"]');
    if (!section || !snapshot || !snapshot.gpus) return;
    lastSeen[nodeName] = {ts: Date.now(), interval: (snapshot.interval_s || 1) * 1000};
    for (const gpu of snapshot.gpus) {
      for (const part of gpu.partitions) {
        const box = section.querySelector('.part[data-logical="' + part.logical_index + '"]');
        if (!box) continue;
        box.className = box.className.replace(/\b(util-\d+|unknown|stale)\b/g, "").trim() + " " + utilClass(part.gfx_activity);
        const label = box.querySelector(".util");
        if (label) {
          label.textContent = part.gfx_activity === null ? "" : Math.round(part.gfx_activity) + "%" + (part.derived ? "*" : "");
          label.title = part.derived ? "derived from the primary partition's per-XCP busy" : "";
        }
      }
    }
  }

  function markStale() {
    const now = Date.now();
    for (const [node, seen] of Object.entries(lastSeen)) {
      if (now - seen.ts > 3 * seen.interval) {
        const section = document.querySelector('section.node[data-node="' + CSS.escape(node) + '"]');
        if (section) section.querySelectorAll(".part").forEach((box) => box.classList.add("stale"));
      }
    }
  }

  let delay = 1000;
  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + "/ws/telemetry/");
    socket.onopen = () => { delay = 1000; setStatus("live", "live"); };
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      for (const [node, snapshot] of Object.entries(message.nodes || {})) apply(node, snapshot);
    };
    socket.onclose = (event) => {
      if (event.code >= 4400 && event.code < 4500) { setStatus("error", "live data refused (" + event.code + ")"); return; }
      setStatus("down", "live: reconnecting…");
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30000);
    };
  }
  setInterval(markStale, 1000);
  connect();
})();
