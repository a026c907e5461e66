// The Slack simulator's page: sends what the person does, swaps in what the server renders.
// Every HTML fragment comes from the server already escaped (bot/simulator/blockkit.py).
(function () {
  "use strict";
  const body = document.body;
  const base = body.dataset.base;
  const user = body.dataset.user;
  const channel = body.dataset.channel;
  const tab = body.dataset.tab;
  const messages = document.getElementById("messages");
  const thread = document.getElementById("thread");
  const threadMessages = document.getElementById("thread-messages");
  const modalRoot = document.getElementById("modal-root");
  const confirmRoot = document.getElementById("confirm-root");
  let openThread = null; // {channel, ts}

  function post(what, data) {
    return fetch(base + "/ui/" + what, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(Object.assign({ user: user }, data)),
    }).then(function (r) {
      if (!r.ok) {
        return r.json().then(
          function (j) { notice(j.error || "That did not work."); },
          function () { notice("That did not work (" + r.status + ")."); }
        );
      }
    }, function () { notice("The simulator did not answer."); });
  }

  function notice(text) {
    const box = document.getElementById("notices");
    const item = document.createElement("div");
    item.className = "notice";
    item.textContent = text;
    box.appendChild(item);
    setTimeout(function () { item.remove(); }, 6000);
  }

  function fragment(html) {
    const t = document.createElement("template");
    t.innerHTML = html;
    return t.content.firstElementChild;
  }

  function domId(prefix, ch, ts) { return prefix + "-" + ch + "-" + ts.replace(".", "-"); }

  // Each rendering carries the workspace's version (data-v): a fetch and a live update can
  // cross, and the older rendering must not replace the newer.
  function version(el) { return parseInt(el.dataset.v || "0", 10); }

  function upsert(container, id, html) { place(container, id, fragment(html)); }

  // A new message at the end scrolls to it; someone reading the end also stays there when a
  // message grows (an agent's progress message is edited in place).
  function atEnd(el) { return el.scrollHeight - el.scrollTop - el.clientHeight < 40; }

  function place(container, id, node) {
    const stick = atEnd(container);
    const old = document.getElementById(id);
    if (old) {
      if (version(node) >= version(old)) { old.replaceWith(node); }
    } else {
      const ts = parseFloat(node.dataset.ts);
      const after = Array.prototype.find.call(container.children, function (el) {
        return parseFloat(el.dataset.ts) > ts;
      });
      container.insertBefore(node, after || null);
      if (!after) { container.scrollTop = container.scrollHeight; }
    }
    if (stick) { container.scrollTop = container.scrollHeight; }
  }

  function scrollDown(el) { if (el) { el.scrollTop = el.scrollHeight; } }

  // --- live updates ---------------------------------------------------------------------
  const stream = new EventSource(base + "/events?user=" + encodeURIComponent(user));
  // Once the stream is open (again), catch up on what changed since the page was drawn;
  // App Home tells the app it was opened only then, so its answer is not missed.
  let opened = false;
  stream.addEventListener("ready", function () {
    const q = "?user=" + encodeURIComponent(user) + "&tab=" + tab +
      "&channel=" + encodeURIComponent(channel);
    fetch(base + "/ui/pane" + q).then(function (r) { return r.json(); }).then(function (d) {
      const atBottom = !messages || messages.scrollHeight - messages.scrollTop - messages.clientHeight < 40;
      if (messages) { merge(messages, d.main, d.v); } else { document.getElementById("home").innerHTML = d.main; }
      modalRoot.innerHTML = d.modal;
      if (atBottom) { scrollDown(messages); }
      if (tab === "home" && !opened) { post("home", {}); }
      opened = true;
      body.dataset.live = "1";
    });
  });
  stream.addEventListener("message", function (e) {
    const d = JSON.parse(e.data);
    if (messages && d.channel === channel && d.top) {
      upsert(messages, domId("m", d.channel, d.ts), d.html);
    }
    if (openThread && d.channel === openThread.channel &&
        (d.ts === openThread.ts || d.thread_ts === openThread.ts)) {
      upsert(threadMessages, domId("t", d.channel, d.ts), d.thread_html);
    }
  });
  stream.addEventListener("message_deleted", function (e) {
    const d = JSON.parse(e.data);
    ["m", "t"].forEach(function (p) {
      const el = document.getElementById(domId(p, d.channel, d.ts));
      if (el) { el.remove(); }
    });
  });
  stream.addEventListener("view", function (e) {
    modalRoot.innerHTML = JSON.parse(e.data).html;
    focusModal();
  });
  stream.addEventListener("home", function (e) {
    const home = document.getElementById("home");
    if (home) { home.innerHTML = JSON.parse(e.data).html; }
  });
  stream.addEventListener("notice", function (e) { notice(JSON.parse(e.data).text); });

  // --- composing ------------------------------------------------------------------------
  function composer(form, threadTs) {
    if (!form) { return; }
    const box = form.querySelector("textarea");
    function send() {
      const text = box.value;
      if (!text.trim()) { return; }
      box.value = "";
      const data = { channel: threadTs ? openThread.channel : channel, text: text };
      if (threadTs) { data.thread_ts = openThread.ts; }
      post("say", data);
    }
    form.addEventListener("submit", function (e) { e.preventDefault(); send(); });
    box.addEventListener("keydown", function (e) {
      if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); send(); }
    });
  }
  composer(document.getElementById("composer"), false);
  composer(document.getElementById("thread-composer"), true);

  // --- threads --------------------------------------------------------------------------
  // What a fetched pane or thread shows, merged into what live updates already brought.
  // With `snapshot` (the version it was rendered at), a message it lacks that was shown
  // before then is gone; one that arrived later is kept.
  function merge(container, html, snapshot) {
    const t = document.createElement("template");
    t.innerHTML = html;
    const seen = new Set();
    Array.prototype.slice.call(t.content.children).forEach(function (node) {
      seen.add(node.id);
      place(container, node.id, node);
    });
    if (snapshot === undefined) { return; }
    Array.prototype.slice.call(container.children).forEach(function (el) {
      if (!seen.has(el.id) && version(el) <= snapshot) { el.remove(); }
    });
  }

  function showThread(ch, ts) {
    const same = openThread && openThread.channel === ch && openThread.ts === ts;
    openThread = { channel: ch, ts: ts };
    if (!same) { threadMessages.innerHTML = ""; }
    fetch(base + "/ui/thread?channel=" + encodeURIComponent(ch) + "&ts=" +
          encodeURIComponent(ts) + "&user=" + encodeURIComponent(user))
      .then(function (r) { return r.ok ? r.text() : ""; })
      .then(function (html) {
        if (!openThread || openThread.channel !== ch || openThread.ts !== ts) { return; }
        merge(threadMessages, html);
        thread.hidden = false;
        body.classList.add("thread-open");
        scrollDown(threadMessages);
        thread.querySelector("textarea").focus();
      });
  }
  document.getElementById("thread-close").addEventListener("click", function () {
    thread.hidden = true;
    openThread = null;
    body.classList.remove("thread-open");
  });

  // --- confirm dialogs ------------------------------------------------------------------
  function confirmThen(spec, go) {
    const c = JSON.parse(spec);
    confirmRoot.innerHTML =
      '<div class="modal-backdrop confirm"><div class="modal" role="alertdialog" aria-modal="true">' +
      '<header class="modal-head"><h2>' + c.title + '</h2></header>' +
      '<div class="modal-body">' + c.text + '</div>' +
      '<footer class="modal-foot"><button type="button" class="btn" data-deny>' + c.deny +
      '</button><button type="button" class="btn ' + (c.style === "danger" ? "danger" : "primary") +
      '" data-confirm-ok>' + c.confirm + '</button></footer></div></div>';
    confirmRoot.querySelector("[data-deny]").onclick = function () { confirmRoot.innerHTML = ""; };
    confirmRoot.querySelector("[data-confirm-ok]").onclick = function () {
      confirmRoot.innerHTML = "";
      go();
    };
  }

  // --- modals ---------------------------------------------------------------------------
  function focusModal() {
    const first = modalRoot.querySelector(".bk-field-input");
    if (first) { first.focus(); }
  }
  function modalValues(modal) {
    const values = {};
    modal.querySelectorAll(".bk-field-input").forEach(function (el) {
      const b = el.dataset.blockId;
      values[b] = values[b] || {};
      values[b][el.dataset.actionId] = el.value;
    });
    return values;
  }

  // --- clicks ---------------------------------------------------------------------------
  document.addEventListener("click", function (e) {
    const target = e.target.closest("button, a");
    if (!target) { return; }
    const msg = target.closest(".msg");
    if (target.classList.contains("bk-button")) {
      e.preventDefault();
      const data = { block_id: target.dataset.blockId, action_id: target.dataset.actionId };
      const view = target.closest("[data-view-id]");
      if (view) { data.view_id = view.dataset.viewId; }
      else if (msg) { data.channel = msg.dataset.channel; data.ts = msg.dataset.ts; }
      const go = function () {
        if (target.dataset.url) { window.open(target.dataset.url, "_blank", "noopener"); }
        target.classList.add("pressed");
        post("click", data).then(function () { target.classList.remove("pressed"); });
      };
      if (target.dataset.confirm) { confirmThen(target.dataset.confirm, go); } else { go(); }
      return;
    }
    if (target.matches("[data-submit]")) {
      const modal = target.closest(".modal");
      post("submit", { view_id: modal.dataset.viewId, values: modalValues(modal) });
      return;
    }
    if (target.matches("[data-close]")) {
      const modal = target.closest(".modal");
      post("close", { view_id: modal.dataset.viewId });
      return;
    }
    if (msg && (target.classList.contains("reaction") || target.classList.contains("quick-react"))) {
      post("react", { channel: msg.dataset.channel, ts: msg.dataset.ts, name: target.dataset.name });
      return;
    }
    if (msg && target.classList.contains("open-thread")) {
      showThread(msg.dataset.channel, msg.dataset.ts);
      return;
    }
    if (target.id === "menu-toggle") {
      document.getElementById("sidebar").classList.toggle("shown");
    }
  });

  document.getElementById("as-user").addEventListener("change", function (e) {
    const url = new URL(window.location.href);
    url.searchParams.set("user", e.target.value);
    window.location.href = url.toString();
  });

  scrollDown(messages);
  if (body.dataset.openThread) { showThread(channel, body.dataset.openThread); }
  focusModal();
})();
