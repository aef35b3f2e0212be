// Gristmill web UI: live runs table and live job logs. Plain JavaScript, no build step.
"use strict";

(function liveRuns() {
  const results = document.getElementById("results");
  const live = document.getElementById("live");
  if (!results || !live) return;
  const status = document.getElementById("live-status");
  const url = results.dataset.liveUrl;
  let timer = null;
  let inFlight = false;

  async function refresh() {
    if (inFlight || !live.checked) return;
    inFlight = true;
    try {
      const answer = await fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (answer.redirected || !answer.ok) { status.textContent = "live updates paused (signed out?)"; return; }
      results.innerHTML = await answer.text();
      status.textContent = "updated " + new Date().toLocaleTimeString();
    } catch (err) {
      status.textContent = "live updates: cannot reach the server";
    } finally {
      inFlight = false;
    }
  }

  function schedule() {
    if (timer) clearInterval(timer);
    timer = live.checked ? setInterval(refresh, 2000) : null;
    if (!live.checked) status.textContent = "";
  }
  live.addEventListener("change", schedule);
  schedule();
})();

(function liveLogs() {
  const logs = document.getElementById("logs");
  if (!logs || !logs.dataset.stream) return;
  const source = new EventSource(logs.dataset.stream);
  source.onmessage = (event) => {
    const entry = JSON.parse(event.data);
    const span = document.createElement("span");
    span.className = entry.stream;
    span.textContent = entry.line;
    logs.append(span, "\n");
    logs.scrollTop = logs.scrollHeight;
  };
  source.addEventListener("end", () => {
    source.close();
    // The job completed: show its result, error and attempts.
    window.location.reload();
  });
  source.onerror = () => {
    // The browser retries by itself; once the job is over the stream ends with "end".
  };
})();

(function liveFlowSteps() {
  // A running flow's step graph, refreshed until the flow ends (the page then reloads).
  const steps = document.getElementById("flow-steps");
  if (!steps || !steps.dataset.liveUrl) return;
  let inFlight = false;
  setInterval(async () => {
    if (inFlight || steps.contains(document.activeElement)) return;
    inFlight = true;
    try {
      const answer = await fetch(steps.dataset.liveUrl, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (answer.ok && !answer.redirected) steps.innerHTML = await answer.text();
    } catch (err) {
      // The next tick tries again.
    } finally {
      inFlight = false;
    }
  }, 1500);
})();
