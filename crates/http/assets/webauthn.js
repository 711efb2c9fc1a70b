// Mamori passkey ceremonies (WebAuthn Level 2): registration and assertion, with the options and
// results carried as base64url JSON to and from the server. Served from the same origin under a
// CSP that allows only this script.
"use strict";
(function () {
  function enc(buf) {
    var s = "", b = new Uint8Array(buf);
    for (var i = 0; i < b.length; i++) s += String.fromCharCode(b[i]);
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function dec(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    var raw = atob(s), b = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) b[i] = raw.charCodeAt(i);
    return b.buffer;
  }
  function csrf() {
    var e = document.querySelector('input[name="csrf"]');
    return e ? e.value : "";
  }
  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
      body: JSON.stringify(body || {}),
    });
  }
  function fail() {
    var p = document.getElementById("passkey-error");
    if (p) p.hidden = false;
  }
  async function register(btn) {
    var r = await post("/login/passkey/register/begin");
    if (!r.ok) return fail();
    var pk = (await r.json()).publicKey;
    pk.challenge = dec(pk.challenge);
    pk.user.id = dec(pk.user.id);
    (pk.excludeCredentials || []).forEach(function (c) { c.id = dec(c.id); });
    var cred = await navigator.credentials.create({ publicKey: pk });
    var body = {
      id: cred.id, rawId: enc(cred.rawId), type: cred.type,
      response: { attestationObject: enc(cred.response.attestationObject), clientDataJSON: enc(cred.response.clientDataJSON) },
      extensions: cred.getClientExtensionResults(),
    };
    var nameField = document.getElementById("passkey-name");
    var q = "?next=" + encodeURIComponent(btn.dataset.next || "/account") + "&name=" + encodeURIComponent(nameField ? nameField.value : "");
    var f = await post("/login/passkey/register/finish" + q, body);
    if (!f.ok) return fail();
    location.assign((await f.json()).next);
  }
  async function login(btn) {
    var r = await post("/login/passkey/login/begin");
    if (!r.ok) return fail();
    var pk = (await r.json()).publicKey;
    pk.challenge = dec(pk.challenge);
    (pk.allowCredentials || []).forEach(function (c) { c.id = dec(c.id); });
    var a = await navigator.credentials.get({ publicKey: pk });
    var body = {
      id: a.id, rawId: enc(a.rawId), type: a.type,
      response: {
        authenticatorData: enc(a.response.authenticatorData), clientDataJSON: enc(a.response.clientDataJSON),
        signature: enc(a.response.signature), userHandle: a.response.userHandle ? enc(a.response.userHandle) : null,
      },
      extensions: a.getClientExtensionResults(),
    };
    var f = await post("/login/passkey/login/finish?next=" + encodeURIComponent(btn.dataset.next || "/account"), body);
    if (!f.ok) return fail();
    location.assign((await f.json()).next);
  }
  function wire(id, fn) {
    var b = document.getElementById(id);
    if (!b) return;
    if (!window.PublicKeyCredential) { b.disabled = true; return; }
    b.addEventListener("click", function () { fn(b).catch(function () { fail(); }); });
  }
  document.addEventListener("DOMContentLoaded", function () {
    wire("passkey-register", register);
    wire("passkey-login", login);
  });
})();
