// The desk's "Suggested knowledge" block: documents that resolved contacts like the selected one, each with why.
// desk.js calls cxAssist.show(advisor, key, contactId, canUse) when a contact is selected or refreshed, cxAssist.clear() when none is.
"use strict";
const cxAssist = (() => {
  const $ = (id) => document.getElementById(id);
  let shown = null;  // the contact whose suggestions are on screen

  function render(data, canUse) {
    const list = data.suggestions || [];
    $("assist-docs").replaceChildren(...list.map((s) => cx.el("option", { value: s.document })));
    if (!list.length) {
      const why = !data.model_version ? "No document learned yet: completions that name the document used teach it."
        : data.words_used ? "No document resolved a similar contact yet." : "The customer has not written anything on this contact yet.";
      $("assist-list").replaceChildren(cx.el("p", { class: "muted" }, why));
      return;
    }
    $("assist-list").replaceChildren(cx.el("ol", { id: "assist-suggestions" }, list.map((s) => cx.el("li", { "data-document": s.document },
      cx.el("strong", {}, s.document), " ", cx.el("span", { class: "badge" }, `${cx.pct(s.score)} of the votes`),
      canUse ? cx.el("button", { type: "button", class: "secondary", onclick: () => { $("disp-document").value = s.document; $("disp-document").focus(); },
        "aria-label": `Use ${s.document} in the disposition` }, "Use") : null,
      cx.el("ul", { class: "muted" }, s.why.map((w) => cx.el("li", {}, w)))))),
    cx.el("p", { class: "muted" }, `Model ${data.model_version}: ${data.documents_known} documents, ${data.contacts_remembered} past contacts.`));
  }

  async function show(advisor, key, contactId, canUse) {
    if (shown !== contactId) $("assist-list").replaceChildren(cx.el("p", { class: "muted" }, "Looking for similar contacts…"));
    shown = contactId;
    try {
      const data = await cx.api(key, "GET", `/advisors/${encodeURIComponent(advisor)}/contacts/${encodeURIComponent(contactId)}/suggestions`);
      if (shown === contactId) render(data, canUse);
    } catch (e) {
      if (shown === contactId && e.status !== 404) $("assist-list").replaceChildren(cx.el("p", { class: "error" }, `No suggestions: ${e.message}`));
    }
  }

  function clear() {
    shown = null;
    $("assist-list").replaceChildren(cx.el("p", { class: "muted" }, "Select a contact to see suggested knowledge."));
  }

  return { show, clear };
})();
