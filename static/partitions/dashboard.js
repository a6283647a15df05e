// Utilization dashboard: bounded frames from /ws/dashboard/ (partitions/aggregate.py), one per
// second, accumulated into the page's live window (max_points frames); or, for 15 min - 24 h,
// series from /dashboard/history/ (Prometheus). Figures, thresholds, palette, timezone and the
// socket path come from the page (json_script: partitions/charts.py, partitions/dashboard.py).
// Line charts: at most a dozen series, legends as tables (last, mean, max), tooltips only near
// the cursor. Heatmap: one row per partition / GPU / node (the frame says which), one column
// per frame; a click on a row drills down. "stale" when no node sent a new sample for
// stale_after_intervals x interval_s. Reconnects with backoff unless the server refused us.
(function () {
  "use strict";

  const live = JSON.parse(document.getElementById("dashboard-live").textContent);
  const figures = JSON.parse(document.getElementById("dashboard-figures").textContent);
  const firstFrame = JSON.parse(document.getElementById("dashboard-frame").textContent);
  const status = document.getElementById("dashboard-status");
  const staleBox = document.getElementById("dashboard-stale");
  const chartsBox = document.getElementById("dashboard-charts");
  const heatEl = document.getElementById("chart-heatmap");
  const REFUSED = {
    4401: "not signed in (sign in again, then reload)",
    4403: "your role may not view telemetry",
    4404: "unknown node",
  };
  const skew = live.server_time * 1000 - Date.now();  // server clock minus browser clock (ms)

  function setStatus(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }

  if (typeof Plotly === "undefined") {
    setStatus("error", "live charts unavailable: plotly.min.js did not load");
    return;
  }

  // Wall-clock strings in the console's timezone: Plotly date axes show strings as given.
  const fmt = new Intl.DateTimeFormat("en-CA", {
    timeZone: live.timezone, year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
  });
  function timeLabel(ts) {
    const p = {};
    for (const part of fmt.formatToParts(new Date(ts * 1000))) p[part.type] = part.value;
    return p.year + "-" + p.month + "-" + p.day + " " + p.hour + ":" + p.minute + ":" + p.second;
  }
  function round(value, digits) {
    if (value === null || value === undefined || Number.isNaN(value)) return null;
    const f = Math.pow(10, digits);
    return Math.round(value * f) / f;
  }
  function show(value, digits) {
    const v = round(value, digits);
    return v === null ? "–" : v.toFixed(digits);
  }

  // The value each chart plots for one series of a frame (see partitions/aggregate.py).
  const perPartition = (level) => level === "partition";
  const VALUE = {
    activity: (s) => s.activity_mean,
    vram: (s, level) => (perPartition(level) ? s.vram_used_gib : s.vram_pct),
    power: (s) => s.power_w,
    temperature: (s) => s.temperature_c,
  };
  const UNIT = {activity: "%", vram: "GiB", power: "W", temperature: "°C"};
  function unit(chart, level) {
    return chart === "vram" && !perPartition(level) ? "%" : UNIT[chart];
  }

  const colors = new Map();
  function colorFor(key) {
    if (!colors.has(key)) colors.set(key, live.palette[colors.size % live.palette.length]);
    return colors.get(key);
  }

  // The live window: times (epoch s) and per chart, per series key, values aligned to them.
  const store = {times: [], level: null, series: {}, meta: new Map()};
  for (const id of Object.keys(VALUE)) store.series[id] = new Map();
  const heat = {times: [], keys: [], labels: [], full: [], hrefs: [], rows: new Map(), level: null};
  let mode = "live";
  let lastSample = null;  // sample_ts of the last frame plotted
  let lastSampleAt = Date.now();
  let currentFrame = firstFrame;

  chartsBox.hidden = false;  // before plotting, so Plotly sizes the charts
  heatEl.hidden = false;
  const charts = {};
  for (const id of Object.keys(VALUE)) {
    const el = document.getElementById("chart-" + id);
    if (!el || !figures[id]) continue;
    Plotly.newPlot(el, [], figures[id].layout, live.plotly_config);
    charts[id] = el;
  }
  Plotly.newPlot(heatEl, figures.heatmap.data, figures.heatmap.layout, live.plotly_config);
  heatEl.on("plotly_click", function (event) {
    const point = event && event.points && event.points[0];
    if (!point) return;
    const i = heat.labels.indexOf(point.y);
    if (i >= 0 && heat.hrefs[i]) location.search = heat.hrefs[i];
  });

  function push(list, value) {
    list.push(value);
    if (list.length > live.max_points) list.shift();
  }

  function ingest(frame) {
    currentFrame = frame;
    updateTables(frame);
    if (frame.sample_ts === null || frame.sample_ts === undefined) return;
    if (lastSample !== null && frame.sample_ts <= lastSample) return;  // nothing new sampled
    lastSample = frame.sample_ts;
    lastSampleAt = Date.now();
    const ts = frame.ts;
    const level = frame.series.level;
    if (store.level !== level) {  // another kind of line: start over
      store.level = level;
      store.times = [];
      for (const id of Object.keys(VALUE)) store.series[id] = new Map();
    }
    const dropped = store.times.length >= live.max_points;
    push(store.times, ts);
    for (const id of Object.keys(VALUE)) {
      const map = store.series[id];
      const present = new Set();
      for (const s of frame.series.items) {
        // Power and temperature are per GPU: one partition-level line per GPU, not per partition.
        const gpuLevel = perPartition(level) && (id === "power" || id === "temperature");
        const key = gpuLevel ? s.key.split("|").slice(0, 2).join("|") : s.key;
        if (present.has(key)) continue;
        present.add(key);
        if (!map.has(key)) map.set(key, new Array(store.times.length - 1).fill(null));
        store.meta.set(key, gpuLevel
          ? {label: s.label.replace(/\/p\d+$/, ""), full: s.full.replace(/\/p\d+$/, ""), href: s.href, derived: false}
          : {label: s.label, full: s.full, href: s.href, derived: s.derived});
        map.get(key).push(VALUE[id](s, level));
      }
      for (const [key, values] of map) {
        if (!present.has(key)) values.push(null);
        if (dropped) values.shift();
        if (values.every((v) => v === null)) map.delete(key);  // left the top series long ago
      }
    }
    ingestHeat(frame);
    if (mode === "live") drawLive();
  }

  function ingestHeat(frame) {
    const h = frame.heatmap;
    const keys = h.hrefs.map((href, i) => h.full[i]);
    if (heat.level !== h.level || keys.join("\n") !== heat.keys.join("\n")) {
      // Rows changed (the layout or the fleet did): keep the rows still there.
      const old = heat.rows;
      heat.rows = new Map();
      for (const key of keys) heat.rows.set(key, old.get(key) || new Array(heat.times.length).fill(null));
      heat.level = h.level;
      heat.keys = keys;
    }
    heat.labels = h.labels;
    heat.full = h.full;
    heat.hrefs = h.hrefs;
    const dropped = heat.times.length >= live.max_points;
    push(heat.times, frame.ts);
    keys.forEach((key, i) => {
      const row = heat.rows.get(key);
      row.push(h.values[i]);
      if (dropped) row.shift();
    });
    const x = heat.times.map(timeLabel);
    const trace = Object.assign({}, figures.heatmap.data[0], {
      x: x, y: heat.labels, z: keys.map((key) => heat.rows.get(key)), customdata: heat.full.map((f) => x.map(() => f)),
      hovertemplate: "%{customdata}<br>%{x}<br>%{z:.1f} %<extra></extra>",
    });
    const layout = Object.assign({}, figures.heatmap.layout, {height: Math.max(260, Math.min(900, 60 + 12 * keys.length))});
    Plotly.react(heatEl, [trace], layout, live.plotly_config);
    document.getElementById("heatmap-rows-are").textContent = "rows: " + h.rows_are +
      (h.level !== "partition" ? " (too many partitions in view for one row each)" : "") + "; columns: time. Click a row to drill down.";
  }

  function traceName(chart, meta) {
    return meta.label + (chart === "activity" && meta.derived ? " (derived)" : "");
  }

  function drawLive() {
    const x = store.times.map(timeLabel);
    for (const [id, el] of Object.entries(charts)) {
      const traces = [];
      const rows = [];
      for (const [key, values] of store.series[id]) {
        const meta = store.meta.get(key);
        traces.push(lineTrace(id, key, traceName(id, meta), meta.full, x, values, unit(id, store.level)));
        rows.push({key: key, name: traceName(id, meta), full: meta.full, href: meta.href, values: values});
      }
      Plotly.react(el, traces, layoutFor(id), live.plotly_config);
      legend(id, rows);
    }
  }

  // Partition lines: the partitions' VRAM total (when they share one) as a threshold line.
  function layoutFor(id) {
    const layout = figures[id].layout;
    if (id !== "vram" || !perPartition(store.level)) return layout;
    const totals = new Set(currentFrame.series.items.map((s) => s.vram_total_gib).filter((v) => v !== null));
    if (totals.size !== 1) return layout;
    const total = totals.values().next().value;
    return Object.assign({}, layout, {shapes: [{
      type: "line", xref: "paper", x0: 0, x1: 1, yref: "y", y0: total, y1: total,
      line: {color: "#c0392b", width: 1, dash: "dash"},
      label: {text: "VRAM total " + round(total, 2) + " GiB", textposition: "end", font: {size: 10, color: "#c0392b"}},
    }]});
  }

  function lineTrace(chart, key, name, full, x, y, u) {
    return {
      type: "scatter", mode: "lines", name: name, x: x, y: y, meta: {key: key},
      line: {color: colorFor(key), width: 2}, connectgaps: false,
      customdata: x.map(() => full),
      hovertemplate: "%{customdata}<br>%{x}<br>%{y:.1f} " + u + "<extra></extra>",
    };
  }

  // The legend: one row per series with its last, mean and max over what the chart shows.
  function legend(chart, rows) {
    const body = document.querySelector("#legend-" + chart + " tbody");
    if (!body) return;
    const fragment = document.createDocumentFragment();
    for (const row of rows) {
      const present = row.values.filter((v) => v !== null && v !== undefined);
      const tr = document.createElement("tr");
      tr.dataset.key = row.key;
      const name = document.createElement("td");
      const swatch = document.createElement("span");
      swatch.className = "dash-swatch";
      swatch.dataset.color = colorFor(row.key);
      const link = document.createElement(row.href ? "a" : "span");
      if (row.href) link.href = row.href;
      link.textContent = row.name;
      link.title = row.full;
      name.append(swatch, link);
      tr.append(name);
      const last = present.length ? present[present.length - 1] : null;
      const mean = present.length ? present.reduce((a, b) => a + b, 0) / present.length : null;
      const max = present.length ? Math.max.apply(null, present) : null;
      for (const value of [last, mean, max]) {
        const td = document.createElement("td");
        td.className = "num";
        td.textContent = show(value, 1);
        tr.append(td);
      }
      fragment.append(tr);
    }
    body.replaceChildren(fragment);
    // Colors without inline style attributes (CSP): set through the CSSOM.
    for (const swatch of body.querySelectorAll(".dash-swatch")) swatch.style.backgroundColor = swatch.dataset.color;
  }

  function cell(text, cls) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    td.textContent = text;
    return td;
  }

  function updateTables(frame) {
    for (const [id, list] of [["top-busy", frame.top_busy], ["top-idle", frame.top_idle]]) {
      const body = document.querySelector("#" + id + " tbody");
      if (!body) continue;
      const rows = list.map((t) => {
        const tr = document.createElement("tr");
        const name = document.createElement("td");
        const a = document.createElement("a");
        a.href = t.href;
        a.textContent = t.label;
        a.title = t.full;
        name.append(a);
        tr.append(name, cell(show(t.activity, 1) + (t.derived ? " (derived)" : ""), "num"),
          cell(show(t.vram_used_gib, 1), "num"), cell(t.deployment || "–"));
        return tr;
      });
      body.replaceChildren.apply(body, rows);
    }
    const deployments = document.querySelector("#dashboard-deployments tbody");
    if (deployments && frame.deployments.items.length) {
      deployments.replaceChildren.apply(deployments, frame.deployments.items.map((d) => {
        const tr = document.createElement("tr");
        let name = cell(d.full);
        if (d.href) {
          name = document.createElement("td");
          const a = document.createElement("a");
          a.href = d.href;
          a.title = "dashboard of " + d.full;
          a.textContent = d.full;
          name.append(a);
        }
        tr.append(name, cell(String(d.partitions), "num"),
          cell(show(d.activity_mean, 1) + " / " + show(d.activity_max, 1), "num"),
          cell(show(d.vram_used_gib, 1) + " / " + show(d.vram_total_gib, 1), "num"));
        return tr;
      }));
    }
    const counts = document.getElementById("dashboard-counts");
    if (counts) {
      const c = frame.counts;
      counts.textContent = c.nodes + " of " + c.expected_nodes + " node" + (c.expected_nodes === 1 ? "" : "s") +
        " reporting · " + c.gpus + " GPUs · " + c.partitions + " partitions · times in " + live.timezone;
    }
  }

  // --- time ranges: live, or history from Prometheus ---------------------------------------
  const note = document.getElementById("dashboard-history-note");
  for (const button of document.querySelectorAll(".dash-range")) {
    button.addEventListener("click", function () {
      if (button.disabled) return;
      for (const b of document.querySelectorAll(".dash-range")) b.setAttribute("aria-pressed", b === button ? "true" : "false");
      mode = button.dataset.range;
      if (mode === "live") {
        drawLive();
        return;
      }
      loadHistory(mode);
    });
  }

  function loadHistory(range) {
    const url = live.history_url + (live.history_url.indexOf("?") >= 0 ? "&" : "?") + "range=" + encodeURIComponent(range);
    note.textContent = "loading " + range + " from Prometheus…";
    fetch(url, {credentials: "same-origin", headers: {Accept: "application/json"}})
      .then((r) => r.json().then((body) => ({ok: r.ok, body: body})))
      .then(({ok, body}) => {
        if (mode !== range) return;
        if (!ok) {
          note.textContent = "history: " + (body.error || "unavailable");
          return;
        }
        note.textContent = range + " from Prometheus (step " + body.step_s + " s).";
        const level = body.level;
        for (const [id, el] of Object.entries(charts)) {
          const rows = [];
          const traces = (body.charts[id] || []).map((s) => {
            const x = s.x.map(timeLabel);
            rows.push({key: s.key, name: s.label, full: s.full, href: "", values: s.y});
            return lineTrace(id, s.key, s.label, s.full, x, s.y, unit(id, level));
          });
          Plotly.react(el, traces, figures[id].layout, live.plotly_config);
          legend(id, rows);
        }
      })
      .catch((e) => {
        note.textContent = "history unavailable: " + e;
      });
  }

  // --- staleness and the socket ------------------------------------------------------------
  let connected = false;

  function checkStale() {
    if (lastSample === null) return;
    // Age of the newest sample by the server's clock (a frame may repeat an old sample).
    const age = Date.now() + skew - lastSample * 1000;
    const quiet = Math.max(age, Date.now() - lastSampleAt);
    const limit = live.stale_after_intervals * live.interval_s * 1000 + live.tick_s * 1000;
    if (quiet > limit) {
      staleBox.hidden = false;
      staleBox.textContent = "stale: no new sample from the nodes in view for " + Math.round(quiet / 1000) + " s";
      chartsBox.classList.add("is-stale");
      if (connected) setStatus("stale", "live: stale");
    } else {
      staleBox.hidden = true;
      chartsBox.classList.remove("is-stale");
      if (connected) setStatus("live", "live");
    }
  }

  ingest(firstFrame);
  if (currentFrame.sample_ts === null || currentFrame.sample_ts === undefined) setStatus("connecting", "live: connecting…");

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
      if (message.type !== "dashboard.frame") return;
      ingest(message);
      delay = 1000;  // a working connection resets the backoff
      if (lastSample === null) setStatus("waiting", "live: no data yet");
      else checkStale();
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
