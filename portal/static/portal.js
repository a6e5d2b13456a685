// Sealed links: the key that opens the message is in the URL fragment, which the
// browser never sends with a request. Hand it to the portal once (it keeps it only in
// a cookie for this message's pages), then drop it from the address bar and history.
"use strict";
(function () {
  var page = document.getElementById("link-page");
  if (!page || page.getAttribute("data-sealed") !== "1") {
    return;
  }
  var key = window.location.hash.replace(/^#/, "");
  if (!/^[A-Za-z0-9_-]{43}$/.test(key)) {
    var missing = document.getElementById("key-missing");
    if (missing) { missing.hidden = false; }
    return;
  }
  var body = new URLSearchParams();
  body.set("csrf", page.getAttribute("data-csrf"));
  body.set("key", key);
  fetch(page.getAttribute("data-key-url"), {
    method: "POST",
    body: body,
    credentials: "same-origin",
    cache: "no-store"
  }).then(function (response) {
    if (!response.ok) { throw new Error("key not accepted"); }
    history.replaceState(null, "", window.location.pathname);
    var waiting = document.querySelectorAll("[data-needs-key]");
    for (var i = 0; i < waiting.length; i++) { waiting[i].disabled = false; }
    var next = page.getAttribute("data-next");
    if (next) { window.location.assign(next); }
  }).catch(function () {
    var missing = document.getElementById("key-missing");
    if (missing) { missing.hidden = false; }
  });
})();
