// The customer chat: POST /chat/messages (the first opens a chat contact that needs an advisor), POST .../close.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  let key = cx.takeKeyFromFragment("cx-api-key");
  let contact = null;
  if (!key) $("signin").hidden = false;
  const line = (text, cls) => { $("log").append(cx.el("p", { class: `msg ${cls}` }, text)); $("log").scrollTop = $("log").scrollHeight; };
  const who = () => {
    const body = {};
    if ($("email").value.trim()) body.email = $("email").value.trim();
    if ($("phone").value.trim()) body.phone = $("phone").value.trim();
    return body;
  };

  $("send-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("error").textContent = "";
    key = key || $("api-key").value.trim();
    const text = $("text").value.trim();
    if (!text) return;
    const body = { ...who(), text };
    if (contact) body.contact_id = contact;
    try {
      const r = await cx.api(key, "POST", "/chat/messages", body);
      line(text, "me");
      $("text").value = "";
      if (r.opened) {
        contact = r.contact_id;
        $("end").disabled = false;
        for (const id of ["email", "phone"]) $(id).readOnly = true;
        line(`Chat ${contact} started: an advisor will be with you shortly.`, "sys");
      }
    } catch (e) { $("error").textContent = `Not sent: ${e.message}`; }
  });

  $("end").addEventListener("click", async () => {
    if (!contact) return;
    try {
      await cx.api(key, "POST", `/chat/contacts/${encodeURIComponent(contact)}/close`, who());
      line("You ended the chat. Thank you!", "sys");
      contact = null; $("end").disabled = true;
      for (const id of ["email", "phone"]) $(id).readOnly = false;
    } catch (e) { $("error").textContent = `Could not end the chat: ${e.message}`; }
  });
})();
