// Fleet overview, live: partition colours from /ws/telemetry/, and the cards themselves from
// /ws/fleet/. A fleet event only says "node X (GPUs i, j) changed"; the page then fetches that
// node's or GPU's card, rendered by the server with the same template as the first load, and
// swaps it in. Only cards on the page shown are fetched: changes to nodes on other pages are
// ignored, and when more than MAX_CARD_FETCHES nodes of the page changed at once (a
// fleet-wide change), the page's results come in one GET of /fleet/cards/ instead.
// Heartbeats come on the same socket; a node whose next one is late turns "agent down" (and
// its GPUs' health "unknown") without waiting for the server.
// Paging and search work as plain links and a GET form; with JavaScript they fetch the same
// fragment and keep the URL (history) in step, so links and reloads land on the same page.
(function () {
  "use strict";
  const status = document.getElementById("live-status");
  const container = document.getElementById("fleet-nodes");  // at load: the server's clock below
  const MAX_CARD_FETCHES = 3;
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

  // The page's results (totals, pager, cards) anew, in one GET; open tables stay open.
  function refreshPage() {
    const holder = document.getElementById("fleet-page");
    if (!holder) return Promise.resolve();
    return get("/fleet/cards/").then((html) => swapPage(holder, html))
      .catch((error) => setStatus("error", "live: could not refresh the page (" + error.message + ")"));
  }

  function swapPage(holder, html) {
    const open = {};
    holder.querySelectorAll("section.node[data-node]").forEach((root) => { open[root.dataset.node] = openTables(root); });
    holder.innerHTML = html;
    holder.querySelectorAll("section.node[data-node]").forEach((root) => {
      const name = root.dataset.node;
      if (open[name]) reopen(root, open[name]);
      agentDown[name] = root.querySelector('[data-agent="stale"]') !== null;
      if (lastSnapshot[name]) apply(name, lastSnapshot[name]);
    });
  }

  // Node cards due for a refetch, gathered for a moment so a burst becomes one request.
  const dueNodes = new Set();
  let dueTimer = null;
  function scheduleNode(nodeName) {
    if (!section(nodeName)) return;  // not on this page
    dueNodes.add(nodeName);
    if (dueTimer === null) dueTimer = setTimeout(flushNodes, 50);
  }

  function flushNodes() {
    dueTimer = null;
    const names = Array.from(dueNodes);
    dueNodes.clear();
    if (names.length > MAX_CARD_FETCHES) refreshPage();
    else names.forEach(refreshNode);
  }

  function refreshNode(nodeName) {
    if (!section(nodeName)) return Promise.resolve();  // not on this page
    return get("/fleet/node/" + encodeURIComponent(nodeName) + "/card/").then((html) => {
      const old = section(nodeName);
      const open = openTables(old);
      const fresh = html.trim() ? fragment(html) : null;
      if (!fresh) { if (old) old.remove(); return; }
      if (!old) return;
      old.replaceWith(fresh);
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
    const onPage = Object.entries(nodes || {}).filter(([nodeName]) => section(nodeName));
    const gpuFetches = onPage.reduce((n, [, change]) => n + (change && change.gpus ? change.gpus.length : 1), 0);
    if (gpuFetches > MAX_CARD_FETCHES) { refreshPage(); return; }
    for (const [nodeName, change] of onPage) {
      if (!change || !change.gpus) scheduleNode(nodeName);
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
      if (down !== shown) scheduleNode(name);  // the server renders agent and health anew
    });
  }

  // --- sockets ------------------------------------------------------------------------------

  function socket(path, onMessage, onOpen) {
    let delay = 1000;
    let opened = 0;
    function connect() {
      const scheme = location.protocol === "https:" ? "wss://" : "ws://";
      const ws = new WebSocket(scheme + location.host + path);
      ws.onopen = () => { delay = 1000; opened += 1; setStatus("live", "live"); if (onOpen) onOpen(opened, ws); };
      ws.onmessage = (event) => onMessage(JSON.parse(event.data));
      ws.onclose = (event) => {
        // 4408: the server closed a client that fell behind (partitions/consumers.py): reconnect.
        if (event.code >= 4400 && event.code < 4500 && event.code !== 4408) { setStatus("error", "live data refused (" + event.code + ")"); return; }
        setStatus("down", "live: reconnecting…");
        setTimeout(connect, delay);
        delay = Math.min(delay * 2, 30000);
      };
    }
    connect();
  }

  // --- live telemetry: the nodes on screen, and the fleet's figures ------------------------
  // /ws/telemetry/ sends what the page subscribes to (partitions/consumers.py TelemetryConsumer):
  // each node section on screen (its partitions, about once a second), and the fleet view
  // (aggregates per node and GPU, at most twice a second) only when the page shows fleet
  // figures (elements with data-fleet-stat="activity_mean" | "vram_used_mb" | ...).
  const MAX_WATCHED = 63;  // the consumer's MAX_TARGETS, less the fleet view
  const onScreen = new Set();
  let telemetry = null;
  let subscribed = "";
  let subscribeTimer = null;

  function resubscribe() {
    clearTimeout(subscribeTimer);
    subscribeTimer = setTimeout(() => {
      const targets = document.querySelector("[data-fleet-stat]") ? [{}] : [];
      for (const name of Array.from(onScreen).sort()) {
        if (targets.length > MAX_WATCHED) break;
        if (section(name)) targets.push({node: name});
      }
      const text = JSON.stringify({type: "subscribe", targets: targets});
      if (!telemetry || telemetry.readyState !== WebSocket.OPEN || text === subscribed) return;
      telemetry.send(text);
      subscribed = text;
    }, 150);
  }

  const watched = new WeakSet();
  const visibility = "IntersectionObserver" in window ? new IntersectionObserver((entries) => {
    for (const entry of entries) {
      const name = entry.target.dataset.node;
      if (entry.isIntersecting) { onScreen.add(name); continue; }
      onScreen.delete(name);
      delete lastSeen[name];  // not watched off screen: not "stale" either
    }
    resubscribe();
  }, {rootMargin: "200px"}) : null;

  function watchSections() {
    document.querySelectorAll("section.node[data-node]").forEach((root) => {
      if (watched.has(root)) return;
      watched.add(root);
      if (visibility) visibility.observe(root); else onScreen.add(root.dataset.node);
    });
    for (const name of Array.from(onScreen)) if (!section(name)) onScreen.delete(name);
    resubscribe();
  }

  function touchesSections(mutations) {
    const isSection = (n) => n.nodeType === 1 && (n.matches("section.node") || n.querySelector("section.node"));
    return mutations.some((m) => Array.from(m.addedNodes).some(isSection) || Array.from(m.removedNodes).some(isSection));
  }

  new MutationObserver((mutations) => { if (touchesSections(mutations)) watchSections(); })
    .observe(document.body, {childList: true, subtree: true});
  watchSections();

  function applyFleet(view) {
    document.querySelectorAll("[data-fleet-stat]").forEach((el) => {
      const value = view.fleet ? view.fleet[el.dataset.fleetStat] : null;
      el.textContent = value === null || value === undefined ? "—" : (Math.round(value * 10) / 10) + (el.dataset.unit || "");
    });
    for (const name of view.stale || []) {
      const root = section(name);
      if (root) root.querySelectorAll(".part").forEach((box) => box.classList.add("stale"));
    }
  }

  socket("/ws/telemetry/?subscribe", (message) => {
    if (message.type === "telemetry.node") apply(message.node, message.snapshot);
    else if (message.type === "telemetry.fleet") applyFleet(message);
  }, (opened, ws) => { telemetry = ws; subscribed = ""; resubscribe(); });
  socket("/ws/fleet/", (message) => {
    if (message.type === "fleet.update") { changed(message.nodes); heartbeats(message.heartbeats); }
  }, (opened) => {
    // After a dropped connection, events may have been missed: refetch what is shown.
    if (opened > 1) refreshPage();
  });

  // --- paging and search without a reload ---------------------------------------------------

  function show(query, push) {
    const holder = document.getElementById("fleet-page");
    if (!holder) return;
    const url = location.pathname + (query && query !== "?" ? query : "");
    if (push) history.pushState(null, "", url);
    setStatus("live", "loading…");
    fetch("/fleet/cards/" + (query && query !== "?" ? query : ""),
          {credentials: "same-origin", headers: {"HX-Request": "true", Accept: "text/html"}})
      .then((r) => (r.ok ? r.text() : Promise.reject(new Error("HTTP " + r.status))))
      .then((html) => { swapPage(holder, html); setStatus("live", "live"); })
      .catch((error) => setStatus("error", "could not load the page (" + error.message + ")"));
  }

  document.addEventListener("click", (event) => {
    const link = event.target.closest && event.target.closest("#fleet-page nav.pager a[href^='?']");
    if (!link || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
    event.preventDefault();
    show(link.getAttribute("href"), true);
  });
  const form = document.getElementById("fleet-filters");
  if (form) form.addEventListener("submit", (event) => {
    event.preventDefault();
    const params = new URLSearchParams(new FormData(form));
    for (const [key, value] of Array.from(params.entries())) if (value === "") params.delete(key);
    const query = params.toString();
    show(query ? "?" + query : "?", true);
  });
  window.addEventListener("popstate", () => show(location.search, false));
  setInterval(markStale, 1000);
  setInterval(checkAgents, 2000);
})();
