// "Try it" panels of the API reference: send an operation to this origin
// with the bearer token kept for this tab (sessionStorage), show the answer.
"use strict";

(function () {
  var TOKEN_KEY = "ordo.docs.token";
  // An event stream never ends on its own: show what came in this long.
  var STREAM_MS = 5000;
  var MAX_BODY = 256 * 1024;

  function storedToken() {
    try { return sessionStorage.getItem(TOKEN_KEY) || ""; } catch (e) { return ""; }
  }

  function storeToken(value) {
    try {
      if (value) { sessionStorage.setItem(TOKEN_KEY, value); } else { sessionStorage.removeItem(TOKEN_KEY); }
    } catch (e) { /* storage disabled: the token lives in the field only */ }
  }

  var tokenInput = document.getElementById("try-token");
  var tokenBar = tokenInput && tokenInput.closest(".token-bar");
  if (tokenInput) {
    tokenInput.value = storedToken();
    tokenInput.addEventListener("input", function () { storeToken(tokenInput.value.trim()); });
    var clear = document.getElementById("try-token-clear");
    if (clear) {
      clear.addEventListener("click", function () { tokenInput.value = ""; storeToken(""); tokenInput.focus(); });
    }
    if (tokenBar) { tokenBar.hidden = false; }
  }

  function currentToken() {
    return tokenInput ? tokenInput.value.trim() : storedToken();
  }

  function show(output, status, statusText, contentType, body) {
    output.textContent = "";
    var line = document.createElement("p");
    var code = document.createElement("span");
    code.className = "try-status status status-" + String(status).charAt(0);
    code.textContent = status ? status + " " + statusText : statusText;
    line.appendChild(code);
    if (contentType) {
      var type = document.createElement("span");
      type.className = "muted";
      type.textContent = " · " + contentType;
      line.appendChild(type);
    }
    output.appendChild(line);
    if (body) {
      var pre = document.createElement("pre");
      var c = document.createElement("code");
      c.textContent = body;
      pre.appendChild(c);
      output.appendChild(pre);
    }
  }

  function pretty(text, contentType) {
    if (contentType && contentType.indexOf("json") !== -1) {
      try { return JSON.stringify(JSON.parse(text), null, 2); } catch (e) { return text; }
    }
    return text;
  }

  async function readSome(response, controller) {
    var type = response.headers.get("content-type") || "";
    if (type.indexOf("text/event-stream") === -1 || !response.body) {
      return response.text();
    }
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var text = "";
    var timer = setTimeout(function () { controller.abort(); }, STREAM_MS);
    try {
      for (;;) {
        var chunk = await reader.read();
        if (chunk.done) { break; }
        text += decoder.decode(chunk.value, { stream: true });
        if (text.length > MAX_BODY) { break; }
      }
    } catch (e) {
      text += "\n… (shown for " + STREAM_MS / 1000 + " s)";
    } finally {
      clearTimeout(timer);
      controller.abort();
    }
    return text;
  }

  async function send(form) {
    var output = form.querySelector(".try-result");
    var button = form.querySelector("button[type=submit]");
    var method = form.dataset.method;
    var path = form.dataset.path;
    var query = new URLSearchParams();
    var headers = new Headers();
    var body = null;
    var fields = form.querySelectorAll("[data-in]");
    for (var i = 0; i < fields.length; i++) {
      var field = fields[i];
      var value = field.value;
      var where = field.dataset.in;
      var name = field.dataset.name;
      if (where === "body") {
        if (value.trim()) { body = value; }
      } else if (value === "") {
        continue;
      } else if (where === "path") {
        path = path.split("{" + name + "}").join(encodeURIComponent(value));
      } else if (where === "query") {
        query.append(name, value);
      } else if (where === "header") {
        headers.set(name, value);
      }
    }
    if (body !== null && form.dataset.contentType) {
      headers.set("Content-Type", form.dataset.contentType);
    }
    var token = currentToken();
    if (token && form.dataset.auth === "bearer") {
      headers.set("Authorization", "Bearer " + token);
    }
    var url = path + (query.toString() ? "?" + query.toString() : "");
    var controller = new AbortController();
    button.disabled = true;
    show(output, "", "Sending " + method + " " + url + " …", "", "");
    try {
      var response = await fetch(url, {
        method: method,
        headers: headers,
        body: body,
        credentials: "same-origin",
        signal: controller.signal,
      });
      var contentType = response.headers.get("content-type") || "";
      var text = await readSome(response, controller);
      show(output, response.status, response.statusText, contentType, pretty(text, contentType));
      // A token obtained here is the one the other panels then use.
      if (response.ok && path === "/oauth/token" && tokenInput) {
        try {
          var issued = JSON.parse(text).access_token;
          if (issued) { tokenInput.value = issued; storeToken(issued); }
        } catch (e) { /* not JSON: nothing to keep */ }
      }
    } catch (e) {
      show(output, "", "Request failed: " + e.message, "", "");
    } finally {
      button.disabled = false;
    }
  }

  // On a narrow screen the table of contents folds away, and folds again
  // once a link in it was followed.
  var toc = document.getElementById("toc-details");
  var narrow = window.matchMedia("(max-width: 60rem)");
  if (toc) {
    if (narrow.matches) { toc.open = false; }
    toc.addEventListener("click", function (event) {
      if (narrow.matches && event.target.closest("a")) { toc.open = false; }
    });
  }

  var forms = document.querySelectorAll("form.try-form");
  for (var i = 0; i < forms.length; i++) {
    forms[i].addEventListener("submit", function (event) {
      event.preventDefault();
      send(event.currentTarget);
    });
    var panel = forms[i].closest("details.try");
    if (panel) { panel.hidden = false; }
  }
})();
