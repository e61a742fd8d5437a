// The desk's next-best-action block: the ranked actions of the selected contact, with why, and the action taken.
// Separate from desk.js: it listens to desk.js's "cx-desk-select" event and answers nothing back but the
// "nba-taken" select, which desk.js sends with the completion.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const NAMES = { resolve: "Resolve the intent", offer_retention: "Offer retention", call_back: "Call back",
    escalate_tier: "Escalate a tier", vip_desk: "VIP desk" };
  const sel = { advisor: null, key: null, contactId: null, shown: null };

  function why(r) {
    if (!r.pulls) return "no outcome learned yet";
    const src = r.source === "intent" ? "of this intent" : "of all intents (too few of this one yet)";
    return `estimated reward ${cx.pct(r.estimate)} from ${r.pulls} outcome${r.pulls === 1 ? "" : "s"} ${src}`;
  }

  function render(answer) {
    const d = answer && answer.decision;
    const box = $("nba");
    if (!d) { box.replaceChildren(cx.el("p", { class: "muted" }, "No next-best action for this contact yet.")); return; }
    const chosen = d.ranked[0];
    const items = d.ranked.map((r, i) => cx.el("li", { "data-action": r.action },
      cx.el("strong", {}, `${NAMES[r.action] || r.action}${r.document_id ? ` with document ${r.document_id}` : ""}`),
      ` — ${why(r)}; chosen with probability ${cx.pct(r.probability)}${i === 0 && d.explored ? " (exploring: not the best-ranked)" : ""}`));
    box.replaceChildren(
      cx.el("p", {}, `For intent ${d.intent === "-" ? "not known yet" : d.intent}, model ${d.model_version}: `,
        cx.el("strong", { id: "nba-chosen" }, NAMES[chosen.action] || chosen.action), d.explored ? " (exploring)" : ""),
      cx.el("ol", { id: "nba-ranked" }, items),
    );
    if (sel.shown !== d.decision_id) {  // preselect the recommendation once per decision; the advisor may change it
      $("nba-taken").value = chosen.action;
      // the recommended document goes into the completion's "Document used" (shared with the suggested knowledge)
      if (chosen.document_id && !$("disp-document").value.trim()) $("disp-document").value = chosen.document_id;
      sel.shown = d.decision_id;
    }
  }

  async function load() {
    if (!sel.contactId || !sel.key) return;
    const contactId = sel.contactId;
    try {
      const answer = await cx.api(sel.key, "GET", `/advisors/${encodeURIComponent(sel.advisor)}/contacts/${encodeURIComponent(contactId)}/nba`);
      if (sel.contactId === contactId) render(answer);
    } catch (e) {
      if (sel.contactId === contactId) $("nba").replaceChildren(cx.el("p", { class: "muted" }, `No next-best action: ${e.message}`));
    }
  }

  document.addEventListener("cx-desk-select", (e) => {
    Object.assign(sel, e.detail);
    $("nba-panel").hidden = !sel.contactId;
    load();
  });
  setInterval(load, 3000);
  window.cxNba = {  // what desk.js adds to a completion
    taken() {
      const action = $("nba-taken").value;
      return action ? { action } : {};
    },
  };
})();
