// Meridian passkey ceremonies. The page carries the options the server
// made (data-options on #passkey) and a form (#passkey-form) with a hidden
// "credential" field; the button #passkey-go runs the ceremony and posts
// the result. Nothing else runs on Meridian's pages.
(function () {
  "use strict";
  var el = document.getElementById("passkey");
  var go = document.getElementById("passkey-go");
  var form = document.getElementById("passkey-form");
  if (!el || !go || !form) { return; }
  function b64(s) {
    var bin = atob(s.replace(/-/g, "+").replace(/_/g, "/"));
    var out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) { out[i] = bin.charCodeAt(i); }
    return out.buffer;
  }
  function enc(buf) {
    if (!buf) { return undefined; }
    var bytes = new Uint8Array(buf), bin = "";
    for (var i = 0; i < bytes.length; i++) { bin += String.fromCharCode(bytes[i]); }
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function ids(list) {
    return (list || []).map(function (c) { var d = Object.assign({}, c); d.id = b64(c.id); return d; });
  }
  function fail(msg) {
    var e = document.getElementById("passkey-error");
    if (e) { e.textContent = msg; e.hidden = false; }
  }
  go.addEventListener("click", function () {
    if (!window.PublicKeyCredential) { fail("This browser does not support passkeys."); return; }
    var opts = JSON.parse(el.getAttribute("data-options")).publicKey;
    opts.challenge = b64(opts.challenge);
    var p;
    if (el.getAttribute("data-mode") === "create") {
      opts.user.id = b64(opts.user.id);
      opts.excludeCredentials = ids(opts.excludeCredentials);
      p = navigator.credentials.create({ publicKey: opts }).then(function (c) {
        return {
          id: c.id, rawId: enc(c.rawId), type: c.type, authenticatorAttachment: c.authenticatorAttachment || undefined,
          clientExtensionResults: c.getClientExtensionResults(),
          response: {
            clientDataJSON: enc(c.response.clientDataJSON), attestationObject: enc(c.response.attestationObject),
            transports: c.response.getTransports ? c.response.getTransports() : []
          }
        };
      });
    } else {
      opts.allowCredentials = ids(opts.allowCredentials);
      p = navigator.credentials.get({ publicKey: opts }).then(function (c) {
        return {
          id: c.id, rawId: enc(c.rawId), type: c.type, authenticatorAttachment: c.authenticatorAttachment || undefined,
          clientExtensionResults: c.getClientExtensionResults(),
          response: {
            clientDataJSON: enc(c.response.clientDataJSON), authenticatorData: enc(c.response.authenticatorData),
            signature: enc(c.response.signature), userHandle: enc(c.response.userHandle)
          }
        };
      });
    }
    p.then(function (result) {
      form.elements.credential.value = JSON.stringify(result);
      form.submit();
    }, function (err) {
      fail("The passkey was not used (" + (err && err.name ? err.name : "error") + "). Try again.");
    });
  });
})();
