// Clarity dashboard: live updates over Server-Sent Events, and a confirm step for Cancel.
// No framework and no inline script (the Content-Security-Policy forbids it).
"use strict";

(function () {
  // Forms that change something ask first (Cancel).
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });

  var body = document.body;
  var mode = body.getAttribute("data-live");
  if (!mode) return;

  var stateEl = document.getElementById("live-status");
  var updatedEl = document.getElementById("last-updated");
  var requestId = body.getAttribute("data-request");
  var source = null;
  var backoff = 1000;
  var hadError = false;
  var signedOut = false;
  var inFlight = false;
  var queued = null; // null, "some" or "full"

  function setState(text, cls) {
    if (!stateEl) return;
    stateEl.textContent = text;
    stateEl.className = "state" + (cls ? " " + cls : "");
  }

  function touched(text) {
    if (updatedEl) updatedEl.textContent = text;
  }

  function showSignedOut() {
    signedOut = true;
    if (source) source.close();
    setState("Signed out — type /clarity dashboard in Slack for a new link", "off");
  }

  // -- fetching what changed ------------------------------------------------------------

  function refresh(full) {
    if (signedOut) return;
    if (inFlight) {
      queued = full || queued === "full" ? "full" : "some";
      return;
    }
    inFlight = true;
    var work = mode === "request" ? refreshRequest(full) : refreshList();
    work.catch(function () {
      setState("Reconnecting…", "down");
    }).then(function () {
      inFlight = false;
      if (queued) {
        var next = queued === "full";
        queued = null;
        refresh(next);
      }
    });
  }

  function get(url, asJson) {
    return fetch(url, {
      credentials: "same-origin",
      headers: { "X-Clarity-Fragment": "1" },
      cache: "no-store",
    }).then(function (response) {
      if (response.status === 401) {
        showSignedOut();
        throw new Error("signed out");
      }
      if (!response.ok) throw new Error("HTTP " + response.status);
      return asJson ? response.json() : response.text();
    });
  }

  function keepFocus(container, replace) {
    var active = document.activeElement;
    var id = active && container.contains(active) ? active.id : null;
    replace();
    if (id) {
      var again = document.getElementById(id);
      if (again) again.focus();
    }
  }

  function refreshList() {
    var container = document.getElementById("list-live");
    return get(window.location.pathname + window.location.search, false).then(function (html) {
      if (container.getAttribute("data-html") !== html) {
        keepFocus(container, function () {
          container.innerHTML = html;
        });
        container.setAttribute("data-html", html);
      }
      touched(new Date().toISOString().slice(11, 19) + " UTC");
    });
  }

  function swap(id, html) {
    var el = document.getElementById(id);
    if (el && el.getAttribute("data-html") !== html) {
      keepFocus(el, function () {
        el.innerHTML = html;
      });
      el.setAttribute("data-html", html);
    }
  }

  function refreshRequest(full) {
    var after = full ? 0 : Number(body.getAttribute("data-last") || 0);
    var url = "/requests/" + encodeURIComponent(requestId) + "/live?after=" + after;
    if (/[?&]all=1/.test(window.location.search)) url += "&all=1";
    return get(url, true).then(function (data) {
      swap("request-header", data.header);
      swap("conversation", data.conversation);
      if (typeof data.changes === "string") swap("changes-live", data.changes);
      var runs = document.getElementById("runs");
      if (full) {
        // Keep open/closed as the reader left them.
        var open = {};
        runs.querySelectorAll("details.run").forEach(function (d) {
          open[d.getAttribute("data-run")] = d.open;
        });
        runs.innerHTML = "";
        data.runs.forEach(function (run) {
          if (!run.section) return;
          runs.insertAdjacentHTML("beforeend", run.section);
          var d = runs.lastElementChild;
          if (open[String(run.run)] !== undefined) d.open = open[String(run.run)];
        });
        if (!runs.children.length) {
          runs.innerHTML = '<p class="empty" id="no-runs">No agent activity yet.</p>';
        }
      } else {
        data.runs.forEach(function (run) {
          var section = document.getElementById("run-" + run.run);
          if (section) {
            section.querySelector("summary").innerHTML = run.summary;
            if (run.items) section.querySelector("ol.activity").insertAdjacentHTML("beforeend", run.items);
          } else if (run.section) {
            var empty = document.getElementById("no-runs");
            if (empty) empty.remove();
            runs.insertAdjacentHTML("beforeend", run.section);
          }
        });
      }
      body.setAttribute("data-last", String(data.last));
      touched(data.updated);
    });
  }

  // -- the event stream -----------------------------------------------------------------

  function listCares(data) {
    var list = document.getElementById("list-live");
    if (list && list.getAttribute("data-first-page") === "true") return true;
    var ids = [];
    try {
      ids = JSON.parse(data);
    } catch (e) {
      return true;
    }
    return ids.some(function (id) {
      return document.querySelector('tr[data-id="' + CSS.escape(id) + '"]') !== null;
    });
  }

  function connect() {
    if (signedOut) return;
    var url = mode === "request" ? "/events?request=" + encodeURIComponent(requestId) : "/events";
    source = new EventSource(url);
    source.addEventListener("open", function () {
      setState("Live");
      backoff = 1000;
      if (hadError) {
        hadError = false;
        refresh(true); // whatever happened while we were away
      }
    });
    source.addEventListener("change", function (event) {
      if (mode === "list" && !listCares(event.data)) return;
      refresh(false);
    });
    source.addEventListener("resync", function () {
      refresh(true);
    });
    source.addEventListener("reload", function () {
      refresh(true);
    });
    source.addEventListener("signedout", showSignedOut);
    source.addEventListener("error", function () {
      hadError = true;
      setState("Reconnecting…", "down");
      // The browser retries a dropped stream by itself; it gives up on an HTTP error
      // (a restarting server behind a proxy, or a 401), so then we try again ourselves.
      if (source.readyState === EventSource.CLOSED) {
        source.close();
        setTimeout(function () {
          get(mode === "request" ? "/requests/" + encodeURIComponent(requestId) + "/live?after=" + (body.getAttribute("data-last") || 0) : window.location.pathname + window.location.search, mode === "request")
            .then(function () {}, function () {})
            .then(connect);
        }, backoff);
        backoff = Math.min(backoff * 2, 30000);
      }
    });
  }

  connect();
})();
