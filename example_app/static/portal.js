// Keeps each page's live sections ([data-live]) current: every few seconds it asks the same URL
// with ?partial=1 and swaps in the sections the server rendered again. Forms live outside these
// sections, so what the operator is typing is never replaced.
(function () {
  "use strict";
  var seconds = Number(document.body.dataset.refreshSeconds || 0);
  var live = document.querySelectorAll("[data-live]");
  var status = document.getElementById("refresh-status");
  if (!seconds || !live.length) { return; }

  function partialUrl() {
    var url = new URL(window.location.href);
    url.searchParams.set("partial", "1");
    return url.toString();
  }

  function refresh() {
    fetch(partialUrl(), {headers: {"Accept": "application/json"}, credentials: "same-origin"})
      .then(function (response) {
        if (response.redirected || !response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (data) {
        Object.keys(data.sections).forEach(function (id) {
          var element = document.getElementById(id);
          if (element) { element.innerHTML = data.sections[id]; }
        });
        if (status) { status.textContent = "Updated " + data.generated_at.slice(11, 19) + " UTC"; }
      })
      .catch(function (error) {
        // Logged out or the server is away: say so, and keep trying.
        if (status) { status.textContent = "Not updated (" + error.message + "); retrying"; }
      })
      .finally(function () { window.setTimeout(refresh, seconds * 1000); });
  }
  window.setTimeout(refresh, seconds * 1000);
}());
