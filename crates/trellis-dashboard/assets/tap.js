// The live tap: reads the server-sent events of /dashboard/tap/events and adds one row
// per request at the top of the table, keeping the newest MAX_ROWS.
"use strict";

(function () {
  var MAX_ROWS = 300;

  function cell(row, text, className) {
    var td = document.createElement("td");
    td.textContent = text;
    if (className) {
      td.className = className;
    }
    row.appendChild(td);
  }

  function time(unixNanos) {
    var date = new Date(Number(unixNanos) / 1e6);
    return date.toLocaleTimeString([], { hour12: false }) + "." + String(date.getMilliseconds()).padStart(3, "0");
  }

  function statusClass(status) {
    if (status >= 500 || status === 0) {
      return "num bad";
    }
    return status >= 400 ? "num warn" : "num ok";
  }

  document.addEventListener("DOMContentLoaded", function () {
    var state = document.getElementById("tap-state");
    var body = document.querySelector("#tap-rows tbody");
    var select = document.getElementById("tap-service");
    if (select) {
      // The namespace goes with the chosen service.
      select.addEventListener("change", function () {
        var option = select.options[select.selectedIndex];
        var namespace = select.form.querySelector("input[name=namespace]");
        if (option && option.dataset.namespace && namespace) {
          namespace.value = option.dataset.namespace;
        }
      });
    }
    if (!state || !body || !state.dataset.stream) {
      return;
    }
    var count = 0;
    var source = new EventSource(state.dataset.stream);
    source.onopen = function () {
      state.textContent = "Watching: new requests appear at the top.";
    };
    source.onerror = function () {
      state.textContent = "The stream stopped; reconnecting…";
    };
    source.onmessage = function (event) {
      var tap;
      try {
        tap = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      var row = document.createElement("tr");
      row.className = "tap-row";
      cell(row, time(tap.unixNanos));
      cell(row, tap.direction);
      cell(row, tap.workload);
      cell(row, tap.sourceIdentity || "(no identity)", "mono");
      cell(row, tap.method);
      cell(row, tap.authority);
      cell(row, tap.path, "mono");
      cell(row, String(tap.status), statusClass(tap.status));
      cell(row, (tap.latencyMicros / 1000).toFixed(1) + "ms", "num");
      cell(row, tap.route);
      body.insertBefore(row, body.firstChild);
      while (body.rows.length > MAX_ROWS) {
        body.deleteRow(body.rows.length - 1);
      }
      count += 1;
      state.textContent = "Watching: " + count + " requests so far.";
    };
  });
})();
