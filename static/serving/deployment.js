// Deployment page: follow /ws/deployments/<id>/ and keep its state and its running copies live.
(function () {
  "use strict";
  const root = document.getElementById("deployment");
  if (!root) return;
  const stateEl = document.getElementById("deployment-state");
  const messageEl = document.getElementById("deployment-message");
  const table = document.getElementById("copies");
  const body = table.querySelector("tbody");
  const none = document.getElementById("no-copies");
  const live = document.getElementById("copies-live");

  function cell(content, className) {
    const td = document.createElement("td");
    if (className) td.className = className;
    if (content instanceof Node) td.appendChild(content); else td.textContent = content;
    return td;
  }

  function code(text) {
    const el = document.createElement("code");
    el.textContent = text;
    return el;
  }

  function row(c) {
    const tr = document.createElement("tr");
    tr.id = "copy-" + c.key;
    tr.dataset.state = c.state;
    tr.appendChild(cell(String(c.replica), "num"));
    const node = document.createElement("span");
    node.textContent = c.node;
    if (c.emulated) {
      const badge = document.createElement("span");
      badge.className = "badge emulated";
      badge.textContent = "emulated";
      node.append(" ", badge);
    }
    tr.appendChild(cell(node));
    tr.appendChild(cell(c.runtime));
    tr.appendChild(cell(c.state, "state state-" + c.state));
    tr.appendChild(cell(c.endpoint ? code(c.endpoint) : "—", "small"));
    tr.appendChild(cell(String(c.restarts), "num"));
    const why = cell(c.reason, "small");
    if (c.log_tail) {
      const details = document.createElement("details");
      const summary = document.createElement("summary");
      summary.textContent = "Last log lines";
      const pre = document.createElement("pre");
      pre.className = "output";
      pre.textContent = c.log_tail;
      details.append(summary, pre);
      why.appendChild(details);
    }
    tr.appendChild(why);
    return tr;
  }

  function show(snapshot) {
    const d = snapshot.deployment;
    stateEl.textContent = d.state;
    stateEl.className = "state state-" + d.state;
    if (messageEl) { messageEl.textContent = d.state_message; messageEl.hidden = !d.state_message; }
    body.replaceChildren(...snapshot.copies.map(row));
    table.hidden = snapshot.copies.length === 0;
    none.hidden = snapshot.copies.length !== 0;
  }

  let delay = 1000;
  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + "/ws/deployments/" + root.dataset.id + "/");
    socket.onopen = () => { delay = 1000; live.textContent = "live"; };
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "deployment.snapshot") show(message);
    };
    socket.onclose = (event) => {
      if (event.code >= 4400 && event.code < 4500) { live.textContent = "refused (" + event.code + ")"; return; }
      live.textContent = "reconnecting…";
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30000);
    };
  }
  connect();
})();
