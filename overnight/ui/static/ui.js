// overnight ui: charts, the live log, the runs list's live statuses. No inline scripts (the
// page's Content-Security-Policy forbids them); data comes from <script type="application/json">.
"use strict";

function drawCharts() {
  document.querySelectorAll("[data-chart]").forEach(function (el) {
    var source = document.getElementById(el.dataset.chart);
    if (!source || el.dataset.drawn) return;
    var d = JSON.parse(source.textContent);
    var names = Object.keys(d.series);
    var points = el.dataset.points === "yes";
    var opts = {
      title: d.title, width: el.classList.contains("wide") ? 900 : 440, height: 220,
      scales: { x: { time: false } },
      axes: [{ label: d.x_label }, { size: 64 }],
      series: [{ label: d.x_label }].concat(names.map(function (n) {
        return points ? { label: n, stroke: "#2563eb", paths: function () { return null; },
                          points: { show: true, size: 8 } }
                      : { label: n, stroke: "#2563eb", width: 1.5 };
      })),
    };
    new uPlot(opts, [d.x].concat(names.map(function (n) { return d.series[n]; })), el);
    el.dataset.drawn = "1";
  });
}

function followLog() {
  var log = document.getElementById("log");
  if (!log) return;
  var follow = document.getElementById("log-follow");
  var search = document.getElementById("log-search");
  var toEnd = function () { log.scrollTop = log.scrollHeight; };
  var matches = function (div) {
    var q = search.value.toLowerCase();
    return !q || div.textContent.toLowerCase().indexOf(q) >= 0;
  };
  search.addEventListener("input", function () {
    log.querySelectorAll(".l").forEach(function (div) { div.classList.toggle("hidden", !matches(div)); });
  });
  document.getElementById("log-end").addEventListener("click", function () { follow.checked = true; toEnd(); });
  toEnd();
  if (log.dataset.final === "yes") return;
  var source = new EventSource(log.dataset.stream);
  source.addEventListener("line", function (event) {
    var data = JSON.parse(event.data);
    var div = document.createElement("div");
    div.className = "l l-" + data.kind;
    div.innerHTML = data.html; // built by overnight.ui.ansi: escaped text in class-only spans
    if (!matches(div)) div.classList.add("hidden");
    log.appendChild(div);
    if (follow.checked) toEnd();
  });
  source.addEventListener("end", function () { source.close(); });
}

function liveStatuses() {
  var table = document.querySelector("#runs");
  if (!table) return;
  var rows = Array.prototype.slice.call(document.querySelectorAll("tr.run[data-final=no]"));
  if (rows.length === 0) return;
  var query = rows.map(function (r) { return "id=" + encodeURIComponent(r.dataset.id); }).join("&");
  fetch("/runs/statuses?" + query, { credentials: "same-origin" })
    .then(function (response) { return response.json(); })
    .then(function (found) {
      rows.forEach(function (row) {
        var s = found[row.dataset.id];
        if (!s) return;
        var status = row.querySelector(".status");
        status.textContent = s.status;
        status.className = "status s-" + s.status;
        var failure = row.querySelector(".failure");
        failure.textContent = s.failure;
        failure.hidden = !s.failure;
        row.querySelector(".time").textContent = s.time;
        var error = row.querySelector(".error-line");
        error.textContent = s.error;
        error.hidden = !s.error;
        if (s.final) row.dataset.final = "yes";
      });
    })
    .catch(function () {});
}

document.addEventListener("DOMContentLoaded", function () {
  drawCharts();
  followLog();
  setInterval(liveStatuses, 2000);
});
document.addEventListener("htmx:afterSettle", drawCharts);
