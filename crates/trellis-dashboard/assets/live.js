// Live refresh: every element with data-live="URL" is replaced, every data-every
// seconds, by the HTML fragment the dashboard serves at URL. Nothing is fetched while
// the tab is hidden; a failed fetch leaves the last good view and marks it stale.
"use strict";

(function () {
  function refresh(element) {
    if (document.hidden) {
      return;
    }
    fetch(element.dataset.live, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        return response.text().then(function (text) {
          return { ok: response.ok, text: text };
        });
      })
      .then(function (answer) {
        if (answer.ok) {
          element.innerHTML = answer.text;
          element.classList.remove("stale");
          element.dataset.updates = String(Number(element.dataset.updates || "0") + 1);
        } else {
          element.classList.add("stale");
        }
      })
      .catch(function () {
        element.classList.add("stale");
      });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live]").forEach(function (element) {
      var seconds = Math.max(1, Number(element.dataset.every || "10"));
      window.setInterval(function () {
        refresh(element);
      }, seconds * 1000);
    });
  });
})();
