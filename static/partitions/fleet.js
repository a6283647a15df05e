// Fleet overview, live: partition colours from /ws/telemetry/, and the cards themselves from
// /ws/fleet/. A fleet event only says "node X (GPUs i, j) changed"; the page then fetches that
// node's or GPU's card, rendered by the server with the same template as the first load, and
// swaps it in. Heartbeats come on the same socket; a node whose next one is late turns "agent
// down" (and its GPUs' health "unknown") without waiting for the server.
(function () {
  "use strict";
  const status = document.getElementById("live-status");
  const container = document.getElementById("fleet-nodes");
  const lastSeen = {};  // node -> {ts, interval}
  const lastSnapshot = {};  // node -> latest telemetry snapshot, re-applied to swapped cards
  const agentDown = {};  // node -> whether the page shows it down
  // Heartbeats are the server's clock: judge them against it (the browser's may be off).
  const skew = container && container.dataset.serverNow ? Date.now() / 1000 - parseFloat(container.dataset.serverNow) : 0;

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

  function section(nodeName) {
    return document.querySelector('section.node[data-node="' + CSS.escape(nodeName) + '"]');
  }

  function apply(nodeName, snapshot) {
    const root = section(nodeName);
    if (!snapshot || !snapshot.gpus) return;
    lastSnapshot[nodeName] = snapshot;
    lastSeen[nodeName] = {ts: Date.now(), interval: (snapshot.interval_s || 1) * 1000};
    if (!root) return;
    for (const gpu of snapshot.gpus) {
      for (const part of gpu.partitions) {
        const text = part.gfx_activity === null || part.gfx_activity === undefined ? ""
          : Math.round(part.gfx_activity) + "%" + (part.derived ? "*" : "");
        const hint = part.derived ? "derived from the primary partition's per-XCP busy (see * in the legend)" : "";
        root.querySelectorAll('.part[data-logical="' + part.logical_index + '"]').forEach((box) => {
          box.className = box.className.replace(/\b(util-\d+|unknown|stale)\b/g, "").trim() + " " + utilClass(part.gfx_activity);
          const label = box.querySelector(".util");
          if (label) { label.textContent = text; label.title = hint; }
        });
        root.querySelectorAll('.util-cell[data-logical="' + part.logical_index + '"]').forEach((cell) => {
          cell.textContent = text || "—";
          cell.title = hint;
        });
      }
    }
  }

  function markStale() {
    const now = Date.now();
    for (const [node, seen] of Object.entries(lastSeen)) {
      if (now - seen.ts > 3 * seen.interval) {
        const root = section(node);
        if (root) root.querySelectorAll(".part").forEach((box) => box.classList.add("stale"));
      }
    }
  }

  // --- swapping server-rendered cards ------------------------------------------------------

  function fragment(html) {
    const template = document.createElement("template");
    template.innerHTML = html.trim();
    return template.content.firstElementChild;
  }

  function openTables(root) {
    const open = new Set();
    if (root) root.querySelectorAll("article.gpu").forEach((card) => {
      const details = card.querySelector("details.parttable");
      if (details && details.open) open.add(card.dataset.gpu);
    });
    return open;
  }

  function reopen(root, open) {
    if (!root) return;
    root.querySelectorAll("article.gpu").forEach((card) => {
      const details = card.querySelector("details.parttable");
      if (details && open.has(card.dataset.gpu)) details.open = true;
    });
  }

  function get(url) {
    return fetch(url + location.search, {credentials: "same-origin", headers: {"HX-Request": "true", Accept: "text/html"}})
      .then((r) => (r.ok ? r.text() : Promise.reject(new Error("HTTP " + r.status))));
  }

  function insertSorted(el) {
    if (!container) return;
    const empty = document.getElementById("fleet-empty");
    if (empty) empty.remove();
    const after = Array.from(container.querySelectorAll("section.node")).find((s) => s.dataset.node > el.dataset.node);
    container.insertBefore(el, after || null);
  }

  function refreshNode(nodeName) {
    return get("/fleet/node/" + encodeURIComponent(nodeName) + "/card/").then((html) => {
      const old = section(nodeName);
      const open = openTables(old);
      const fresh = html.trim() ? fragment(html) : null;
      if (!fresh) { if (old) old.remove(); return; }
      if (old) old.replaceWith(fresh); else insertSorted(fresh);
      reopen(fresh, open);
      agentDown[nodeName] = fresh.querySelector('[data-agent="stale"]') !== null;
      fresh.querySelectorAll("article.gpu").forEach((card) => card.classList.add("refreshed"));
      if (lastSnapshot[nodeName]) apply(nodeName, lastSnapshot[nodeName]);
    }).catch((error) => setStatus("error", "live: could not refresh " + nodeName + " (" + error.message + ")"));
  }

  function refreshGpu(nodeName, index) {
    const root = section(nodeName);
    const old = root && root.querySelector('article.gpu[data-gpu="' + index + '"]');
    if (!old) return refreshNode(nodeName);
    return get("/fleet/gpu/" + encodeURIComponent(nodeName) + "/" + index + "/card/").then((html) => {
      const open = openTables(root);
      const fresh = html.trim() ? fragment(html) : null;
      if (!fresh) { old.remove(); return; }
      old.replaceWith(fresh);
      reopen(root, open);
      fresh.classList.add("refreshed");
      if (lastSnapshot[nodeName]) apply(nodeName, lastSnapshot[nodeName]);
    }).catch((error) => setStatus("error", "live: could not refresh " + nodeName + " (" + error.message + ")"));
  }

  function changed(nodes) {
    for (const [nodeName, change] of Object.entries(nodes || {})) {
      if (!change || !change.gpus) refreshNode(nodeName);
      else change.gpus.forEach((index) => refreshGpu(nodeName, index));
    }
  }

  function heartbeats(beats) {
    for (const [nodeName, at] of Object.entries(beats || {})) {
      const root = section(nodeName);
      if (root) root.dataset.heartbeat = String(at);
    }
    checkAgents();
  }

  function checkAgents() {
    const now = Date.now() / 1000 - skew;
    document.querySelectorAll("section.node[data-node]").forEach((root) => {
      const name = root.dataset.node;
      const beat = parseFloat(root.dataset.heartbeat || "");
      const after = parseFloat(root.dataset.staleAfter || "30");
      const down = !(beat > 0) || now - beat >= after;
      const badge = root.querySelector(".badge.agent");
      const shown = badge ? badge.dataset.agent === "stale" : down;
      if (down !== shown) refreshNode(name);  // the server renders agent and health anew
    });
  }

  // --- sockets ------------------------------------------------------------------------------

  function socket(path, onMessage, onOpen) {
    let delay = 1000;
    let opened = 0;
    function connect() {
      const scheme = location.protocol === "https:" ? "wss://" : "ws://";
      const ws = new WebSocket(scheme + location.host + path);
      ws.onopen = () => { delay = 1000; opened += 1; setStatus("live", "live"); if (onOpen) onOpen(opened); };
      ws.onmessage = (event) => onMessage(JSON.parse(event.data));
      ws.onclose = (event) => {
        if (event.code >= 4400 && event.code < 4500) { setStatus("error", "live data refused (" + event.code + ")"); return; }
        setStatus("down", "live: reconnecting…");
        setTimeout(connect, delay);
        delay = Math.min(delay * 2, 30000);
      };
    }
    connect();
  }

  socket("/ws/telemetry/", (message) => {
    for (const [node, snapshot] of Object.entries(message.nodes || {})) apply(node, snapshot);
  });
  socket("/ws/fleet/", (message) => {
    if (message.type === "fleet.update") { changed(message.nodes); heartbeats(message.heartbeats); }
  }, (opened) => {
    // After a dropped connection, events may have been missed: refetch what is shown.
    if (opened > 1) document.querySelectorAll("section.node[data-node]").forEach((root) => refreshNode(root.dataset.node));
  });
  setInterval(markStale, 1000);
  setInterval(checkAgents, 2000);
})();
