// Ordo console: progressive enhancement only. Every page works without
// this script; with it, live regions follow their order's event stream
// (or poll) and re-render from the server, forms confirm and resist
// double submits.
(function () {
  "use strict";

  function refresh(el) {
    var url = el.getAttribute("data-fragment");
    if (!url) return Promise.resolve();
    return fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) {
        if (r.status === 401 || r.redirected) { stop(el); return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        if (html === null || html === undefined) return;
        el.innerHTML = html;
        el.setAttribute("data-refreshed", String(Date.now()));
        wire(el);
      })
      .catch(function () { /* offline for a moment: the next event retries */ });
  }

  function stop(el) {
    if (el._source) { el._source.close(); el._source = null; }
    if (el._timer) { clearInterval(el._timer); el._timer = null; }
    live(el, false);
  }

  function live(el, on) {
    var dots = document.querySelectorAll("[data-live-for='" + el.id + "']");
    for (var i = 0; i < dots.length; i++) {
      dots[i].classList.toggle("on", on);
      dots[i].setAttribute("title", on ? "live" : "not live");
    }
  }

  function debounced(el) {
    var pending = null;
    return function () {
      if (pending) return;
      pending = setTimeout(function () { pending = null; refresh(el); }, 120);
    };
  }

  function follow(el) {
    if (!window.EventSource) return poll(el, 4000);
    var source = new EventSource(el.getAttribute("data-follow"));
    el._source = source;
    var update = debounced(el);
    var types = (el.getAttribute("data-events") || "").split(/\s+/).filter(Boolean);
    types.push("status");
    types.forEach(function (t) { source.addEventListener(t, update); });
    source.addEventListener("end", function () {
      source.close();
      el._source = null;
      live(el, false);
      // Other services finish their part (a release, a refund) just after.
      refresh(el);
      setTimeout(function () { refresh(el); }, 2000);
      setTimeout(function () { refresh(el); }, 6000);
    });
    source.addEventListener("open", function () { live(el, true); });
    source.addEventListener("error", function () {
      if (source.readyState === EventSource.CLOSED) { el._source = null; live(el, false); poll(el, 5000); }
    });
  }

  function poll(el, every) {
    if (el._timer) return;
    live(el, true);
    el._timer = setInterval(function () {
      if (document.visibilityState === "visible") refresh(el);
    }, every);
  }

  function wire(root) {
    var forms = root.querySelectorAll("form");
    for (var i = 0; i < forms.length; i++) {
      var form = forms[i];
      if (form._wired) continue;
      form._wired = true;
      form.addEventListener("submit", function (e) {
        var f = e.currentTarget;
        var question = f.getAttribute("data-confirm");
        if (question && !window.confirm(question)) { e.preventDefault(); return; }
        if (f._sent) { e.preventDefault(); return; }
        f._sent = true;
        var buttons = f.querySelectorAll("button[type=submit], button:not([type])");
        for (var j = 0; j < buttons.length; j++) buttons[j].setAttribute("aria-busy", "true");
      });
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    wire(document);
    var followed = document.querySelectorAll("[data-follow]");
    for (var i = 0; i < followed.length; i++) follow(followed[i]);
    var polled = document.querySelectorAll("[data-refresh]");
    for (var k = 0; k < polled.length; k++) {
      poll(polled[k], Math.max(1000, parseInt(polled[k].getAttribute("data-refresh"), 10) || 5000));
    }
    // Back from the cache: show the current state, not the one left.
    window.addEventListener("pageshow", function (e) {
      if (!e.persisted) return;
      var all = document.querySelectorAll("[data-fragment]");
      for (var n = 0; n < all.length; n++) refresh(all[n]);
    });
  });
})();
