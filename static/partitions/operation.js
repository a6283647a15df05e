// Operation page: follow /ws/operations/<id>/ and update steps, progress and the final layout.
(function () {
  "use strict";
  const root = document.getElementById("operation");
  if (!root) return;
  const id = root.dataset.id;
  const stateEl = document.getElementById("op-state");
  const live = document.getElementById("op-live");
  const bar = document.getElementById("op-progress");
  const steps = document.getElementById("op-steps");
  const errorEl = document.getElementById("op-error");
  const PROGRESS = {pending: "w-0", draining: "w-25", applying: "w-50", verifying: "w-75"};
  const LABELS = {pending: "Pending", draining: "Draining", applying: "Applying", verifying: "Verifying",
                  succeeded: "Succeeded", failed: "Failed", rolled_back: "Rolled back"};
  const seen = new Set();

  function text(tag, className, content) {
    const el = document.createElement(tag);
    if (className) el.className = className;
    el.textContent = content;
    return el;
  }

  function addStep(step) {
    if (seen.has(step.seq)) return;
    seen.add(step.seq);
    const li = document.createElement("li");
    if (!step.ok) li.className = "bad";
    li.appendChild(text("span", "muted small", new Date(step.created_at).toISOString().substring(11, 19) + " · " + step.state + " · " + step.action));
    li.appendChild(document.createElement("br"));
    li.appendChild(document.createTextNode(step.message));
    if (step.output) li.appendChild(text("pre", "output", step.output));
    steps.appendChild(li);
  }

  function showOperation(op) {
    root.dataset.state = op.state;
    stateEl.textContent = LABELS[op.state] || op.state;
    stateEl.className = "state state-" + op.state;
    bar.dataset.state = op.state;
    bar.firstElementChild.className = op.finished ? "w-100" : (PROGRESS[op.state] || "w-0");
    if (op.error_message) { errorEl.hidden = false; errorEl.textContent = op.error_message; }
    if (op.finished) { live.textContent = "finished"; refreshLayout(); }
  }

  function refreshLayout() {
    const gpu = root.dataset.gpu;
    if (!gpu) return;
    fetch("/api/v1/gpus/" + gpu + "/", {headers: {Accept: "application/json"}, credentials: "same-origin"})
      .then((r) => r.ok ? r.json() : null)
      .then((data) => {
        if (!data) return;
        const layout = document.getElementById("op-layout");
        layout.replaceChildren(...data.partitions.map((p) => {
          const box = document.createElement("div");
          box.className = "part";
          box.appendChild(text("span", "", "#" + p.logical_index));
          box.appendChild(text("span", "small", p.memory_gb + " GiB"));
          return box;
        }));
      });
  }

  if (["succeeded", "failed", "rolled_back"].includes(root.dataset.state)) return;
  document.querySelectorAll("#op-steps li").forEach((_, i) => seen.add(i + 1));
  let delay = 1000;
  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + "/ws/operations/" + id + "/");
    socket.onopen = () => { delay = 1000; live.textContent = "live"; };
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "operation.snapshot") message.steps.forEach(addStep);
      if (message.type === "operation.step") addStep(message.step);
      showOperation(message.operation);
      if (message.operation.finished) socket.close(1000);
    };
    socket.onclose = (event) => {
      if (root.dataset.state && ["succeeded", "failed", "rolled_back"].includes(root.dataset.state)) return;
      if (event.code >= 4400 && event.code < 4500) { live.textContent = "refused (" + event.code + ")"; return; }
      live.textContent = "reconnecting…";
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30000);
    };
  }
  connect();
})();
