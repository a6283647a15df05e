// Live utilization dashboard: Plotly charts fed by the telemetry WebSocket.
// Figures, trace template, palette and the socket path come from the page (json_script, built
// by partitions/charts.py and partitions/dashboard.py). One trace per partition (activity, VRAM)
// or GPU (power, hotspot temperature), added when first seen and extended with every sample,
// keeping the last `max_points` points. "stale" when a node sends nothing new for
// stale_after_intervals x interval_s. Reconnects with backoff unless the server refused us.
(function () {
  "use strict";

  const live = JSON.parse(document.getElementById("dashboard-live").textContent);
  const figures = JSON.parse(document.getElementById("dashboard-figures").textContent);
  const status = document.getElementById("dashboard-status");
  const staleBox = document.getElementById("dashboard-stale");
  const chartsBox = document.getElementById("dashboard-charts");
  const REFUSED = {
    4401: "not signed in (sign in again, then reload)",
    4403: "your role may not view telemetry",
    4404: "unknown node",
  };
  // Server clock minus browser clock (ms): ages of the snapshots sent on connect.
  const skew = live.server_time * 1000 - Date.now();

  function setStatus(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }

  if (typeof Plotly === "undefined") {
    setStatus("error", "live charts unavailable: plotly.min.js did not load");
    return;
  }

  // Mirrors partitions.charts.trace_name / trace_key.
  function traceName(node, gpu, part, derived) {
    return node + " gpu" + gpu + (part === null ? "" : "/p" + part) + (derived ? " (derived)" : "");
  }
  function traceKey(node, gpu, part) {
    return node + "|" + gpu + (part === null ? "" : "|" + part);
  }
  function round(value, digits) {
    if (value === null || value === undefined) return null;
    const f = Math.pow(10, digits);
    return Math.round(value * f) / f;
  }

  // What each chart plots: per partition or per GPU, and the value in the chart's unit.
  const SERIES = {
    activity: {perPartition: true, value: (gpu, part) => round(part.gfx_activity, 1)},
    vram: {perPartition: true, value: (gpu, part) => (part.vram_used_mb == null ? null : round(part.vram_used_mb / 1024, 2))},
    power: {perPartition: false, value: (gpu) => round(gpu.power_w, 1)},
    temperature: {perPartition: false, value: (gpu) => round(gpu.temperature_c, 1)},
  };

  // Same color for a partition in both partition charts, for a GPU in both GPU charts.
  const colors = {partition: new Map(), gpu: new Map()};
  function colorFor(kind, key) {
    const map = colors[kind];
    if (!map.has(key)) map.set(key, live.palette[map.size % live.palette.length]);
    return map.get(key);
  }

  chartsBox.hidden = false;  // before plotting, so Plotly sizes the charts
  const charts = {};
  for (const [id, spec] of Object.entries(SERIES)) {
    const el = document.getElementById("chart-" + id);
    if (!el || !figures[id]) continue;
    Plotly.newPlot(el, figures[id].data, figures[id].layout, live.plotly_config);
    charts[id] = {el: el, spec: spec, index: new Map(), names: new Map()};
  }

  function pad(n, width) {
    return String(n).padStart(width || 2, "0");
  }
  // Plotly date axes take local "YYYY-MM-DD HH:MM:SS.sss" strings as shown.
  function timeLabel(ts) {
    const d = new Date(ts * 1000);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()) + "." + pad(d.getMilliseconds(), 3);
  }

  const nodes = {};  // node -> {ts, intervalMs, lastSample (browser ms)}

  function ingest(node, snapshot, onConnect) {
    if (!snapshot || !Array.isArray(snapshot.gpus) || typeof snapshot.ts !== "number") return;
    const seen = nodes[node];
    if (seen && snapshot.ts <= seen.ts) return;  // already plotted (e.g. resent on reconnect)
    const now = Date.now();
    // Snapshots sent on connect may be old (the agent stopped): date them by the server clock.
    const age = onConnect ? Math.max(0, now + skew - snapshot.ts * 1000) : 0;
    nodes[node] = {
      ts: snapshot.ts,
      intervalMs: 1000 * (snapshot.interval_s || live.interval_s),
      lastSample: now - age,
    };
    const x = timeLabel(snapshot.ts);
    for (const chart of Object.values(charts)) {
      const added = [];
      const update = {x: [], y: []};
      const indices = [];
      const base = chart.el.data.length;
      for (const gpu of snapshot.gpus) {
        const parts = chart.spec.perPartition ? (gpu.partitions || []) : [null];
        for (const part of parts) {
          const partIndex = part === null ? null : part.index;
          const key = traceKey(node, gpu.index, partIndex);
          const name = traceName(node, gpu.index, partIndex, part !== null && part.derived);
          let i = chart.index.get(key);
          if (i === undefined) {
            i = base + added.length;
            const trace = JSON.parse(JSON.stringify(live.trace));
            trace.name = name;
            trace.line.color = colorFor(part === null ? "gpu" : "partition", key);
            trace.meta = {key: key};
            added.push(trace);
            chart.index.set(key, i);
            chart.names.set(key, name);
          } else if (chart.names.get(key) !== name) {  // became (or stopped being) derived
            chart.names.set(key, name);
            Plotly.restyle(chart.el, {name: [name]}, [i]);
          }
          indices.push(i);
          update.x.push([x]);
          update.y.push([chart.spec.value(gpu, part || {})]);
        }
      }
      if (added.length) Plotly.addTraces(chart.el, added);
      if (indices.length) Plotly.extendTraces(chart.el, update, indices, live.max_points);
    }
  }

  let connected = false;

  function checkStale() {
    const now = Date.now();
    const stale = [];
    let worst = 0;
    for (const [node, seen] of Object.entries(nodes)) {
      const quiet = now - seen.lastSample;
      if (quiet > live.stale_after_intervals * seen.intervalMs) {
        stale.push(node);
        worst = Math.max(worst, quiet);
      }
    }
    if (stale.length) {
      staleBox.hidden = false;
      staleBox.textContent = "stale: no new sample from " + stale.join(", ") + " for " + Math.round(worst / 1000) + " s";
      chartsBox.classList.add("is-stale");
      if (connected) setStatus("stale", "live: stale");
    } else {
      staleBox.hidden = true;
      chartsBox.classList.remove("is-stale");
      if (connected) setStatus(Object.keys(nodes).length ? "live" : "waiting", Object.keys(nodes).length ? "live" : "live: no data yet");
    }
  }

  let delay = 1000;
  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + live.ws_path);
    let opened = false;
    socket.onopen = function () {
      opened = true;
      connected = true;
      setStatus("waiting", "live: no data yet");
    };
    socket.onmessage = function (event) {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      const onConnect = message.type === "telemetry.snapshot";
      for (const [node, snapshot] of Object.entries(message.nodes || {})) ingest(node, snapshot, onConnect);
      delay = 1000;  // a working connection resets the backoff
      checkStale();
    };
    socket.onclose = function (event) {
      connected = false;
      if (REFUSED[event.code]) {
        setStatus("refused", "live data refused: " + (event.reason || REFUSED[event.code]) + " (" + event.code + ")");
        return;
      }
      const wait = delay + Math.round(Math.random() * 250);
      // A refusal before the handshake completes reaches the browser as 1006, without our code.
      const why = opened ? "disconnected" : "cannot connect (refused or unreachable)";
      setStatus("reconnecting", "live: " + why + ", retrying in " + Math.round(wait / 1000) + " s");
      setTimeout(connect, wait);
      delay = Math.min(delay * 2, 30000);
    };
  }

  setStatus("connecting", "live: connecting…");
  setInterval(checkStale, 250);
  connect();
})();
