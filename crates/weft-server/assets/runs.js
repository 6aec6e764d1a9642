// Optional: a running run's counts follow the run live (server-sent events from
// /runs/ID/events). Without JavaScript the page refreshes itself every few seconds instead.
(function () {
  var live = document.querySelector("[data-events]");
  if (!live || !window.EventSource) { return; }
  var source = new EventSource(live.getAttribute("data-events"));
  var show = function (data) {
    var s = data.summary || {};
    live.querySelectorAll("[data-count]").forEach(function (cell) {
      var v = s[cell.getAttribute("data-count")];
      if (v !== undefined) { cell.textContent = v; }
    });
    var status = document.querySelector("[data-outcome]");
    if (status && data.outcome) { status.textContent = data.outcome; }
  };
  source.addEventListener("progress", function (e) { show(JSON.parse(e.data)); });
  source.addEventListener("end", function (e) {
    source.close();
    try { show(JSON.parse(e.data)); } catch (_) { /* the run is gone */ }
    window.location.reload();
  });
})();
