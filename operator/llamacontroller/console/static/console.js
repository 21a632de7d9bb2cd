// LlamaController console: refreshes the parts of a page marked data-poll, without reloading it,
// and asks before an unload. The pages work without it.
"use strict";

function refresh(part) {
  if (document.hidden || part.dataset.busy) return;
  part.dataset.busy = "1";
  fetch(part.dataset.poll, { credentials: "same-origin", cache: "no-store" })
    .then(function (answer) {
      if (answer.status === 401) { window.location.assign("/ui/login"); return null; }
      return answer.ok ? answer.text() : null;
    })
    .then(function (text) {
      if (text !== null && text !== part.innerHTML) part.innerHTML = text;
    })
    .catch(function () { /* the next round tries again */ })
    .finally(function () { delete part.dataset.busy; });
}

document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("[data-poll]").forEach(function (part) {
    var every = parseInt(part.dataset.every || "2000", 10);
    window.setInterval(function () { refresh(part); }, every);
  });
  document.addEventListener("submit", function (event) {
    var question = event.target.dataset && event.target.dataset.confirm;
    if (question && !window.confirm(question)) event.preventDefault();
  });
});
