// Keeps a page current: every event on the server-sent events stream makes the page fetch its own
// fragment again, at most once per second or per two render times, whichever is longer, so a busy
// stream never keeps the server rendering. When SSE is blocked (a proxy that buffers or refuses it),
// the page polls instead.
(function () {
  "use strict";
  var POLL_MS = 5000;
  var AGE_MS = 30000;  // a stuck export sends no event: ages and "stuck" verdicts are refreshed anyway
  var OPEN_TIMEOUT_MS = 8000;
  var root = document.getElementById("live");
  var badge = document.getElementById("live-status");

  function say(text, mode) {
    if (!badge) return;
    badge.textContent = text;
    badge.dataset.mode = mode;
  }

  if (!root) { say("static", "static"); return; }

  var pending = null;
  var inFlight = false;
  var gap = 1000;
  var lastStart = 0;
  function refresh() {
    if (inFlight) { schedule(); return; }
    inFlight = true;
    var started = Date.now();
    lastStart = started;
    fetch(root.dataset.fragment, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) { return response.ok ? response.text() : Promise.reject(response.status); })
      .then(function (html) { root.innerHTML = html; root.dataset.refreshed = String(Date.now()); })
      .catch(function (status) { say("refresh failed (" + status + "), retrying", "error"); })
      .then(function () { inFlight = false; gap = Math.max(1000, 2 * (Date.now() - started)); });
  }
  function schedule() {
    if (pending) return;
    var wait = Math.max(250, lastStart + gap - Date.now());
    pending = setTimeout(function () { pending = null; refresh(); }, wait);
  }

  var polling = null;
  function poll(reason) {
    if (polling) return;
    say("polling every " + POLL_MS / 1000 + " s (" + reason + ")", "polling");
    polling = setInterval(refresh, POLL_MS);
    refresh();
  }

  if (!window.EventSource || !root.dataset.events) { poll("no server-sent events"); return; }
  var opened = false;
  var source = new EventSource(root.dataset.events);
  var timer = setTimeout(function () {
    if (!opened) { source.close(); poll("live updates blocked"); }
  }, OPEN_TIMEOUT_MS);
  source.addEventListener("open", function () { opened = true; clearTimeout(timer); say("live", "live"); });
  setInterval(function () { if (!polling) schedule(); }, AGE_MS);
  source.addEventListener("change", schedule);
  source.addEventListener("error", function () {
    // The browser reconnects by itself, sending Last-Event-ID; give up only if it never got through.
    if (!opened || source.readyState === EventSource.CLOSED) {
      clearTimeout(timer);
      source.close();
      poll("live updates blocked");
    } else {
      say("reconnecting…", "reconnecting");
    }
  });
})();
