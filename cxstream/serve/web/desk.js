// The advisor desktop: sign in, live offers with their countdown, accept/reject, the customer's context, completion.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const state = { advisor: null, key: null, group: "default", work: [], selected: null, skew: 0, abort: null, contexts: {} };
  const say = (text, cls = "muted") => { $("status").textContent = text; $("status").className = cls; };

  function parseSkills(text) {
    const out = {};
    for (const part of text.split(",").map((s) => s.trim()).filter(Boolean)) {
      const [name, level] = part.split(":").map((s) => s.trim());
      out[name] = level ? Number(level) : 3;
    }
    return out;
  }

  async function signIn(ev) {
    ev.preventDefault();
    $("signin-error").textContent = "";
    const advisor = $("advisor-id").value.trim(), key = $("desk-key").value.trim(), group = $("group").value.trim();
    const body = { routing_group: group, presence: "available", languages: $("languages").value.split(",").map((s) => s.trim()).filter(Boolean),
      capacity: { chat: +$("cap-chat").value, voice: +$("cap-voice").value, email: +$("cap-email").value } };
    const skills = parseSkills($("skills").value);
    if (Object.keys(skills).length) body.skills = skills;
    try {
      await cx.api(key, "POST", `/advisors/${encodeURIComponent(advisor)}/login`, body);
    } catch (e) {
      $("signin-error").textContent = `Sign-in failed: ${e.message}`;
      return;
    }
    Object.assign(state, { advisor, key, group });
    sessionStorage.setItem("cx-desk", JSON.stringify({ advisor, key, group }));
    showDesk();
  }

  function showDesk() {
    $("signin").hidden = true; $("desk").hidden = false; $("who").hidden = false;
    $("who-id").textContent = state.advisor; $("who-group").textContent = state.group;
    $("presence").value = "available";
    say("Signed in: waiting for offers.", "ok");
    listen();
  }

  async function listen() {
    state.abort = new AbortController();
    for (;;) {
      try {
        await cx.stream(state.key, `/advisors/${encodeURIComponent(state.advisor)}/events`, (name, data) => {
          if (name === "work") { state.skew = data.now - Date.now() / 1000; state.work = data.work; render(); }
        }, state.abort.signal);
      } catch (e) {
        if (state.abort.signal.aborted) return;
        say(`Live offers interrupted (${e.message}); reconnecting…`, "error");
      }
      if (state.abort.signal.aborted) return;
      await new Promise((r) => setTimeout(r, 1500));
    }
  }

  // A contact's reference: the router's key (two customers' contacts may share an id), else its id.
  const ref = (w) => w.contact_key || w.contact_id;
  const offers = () => state.work.filter((w) => w.status === "offered");
  const contacts = () => state.work.filter((w) => w.status === "active");
  const now = () => Date.now() / 1000 + state.skew;

  function card(w) {
    const selected = state.selected === ref(w);
    const c = cx.el("div", { class: `card ${w.status === "active" ? "active" : ""} ${selected ? "selected" : ""}`, "data-contact": ref(w) },
      cx.el("div", {}, cx.el("strong", {}, `${w.channel} contact`), " ", cx.el("span", { class: "badge" }, w.intent || "intent unknown"),
        " ", cx.el("span", { class: "muted" }, `waited ${cx.secs(w.waited_s)}`)),
      cx.el("div", { class: "muted" }, `Customer ${w.customer_id}`));
    const actions = cx.el("div", { class: "actions" });
    if (w.status === "offered") {
      const left = Math.max(0, w.expires_at - now());
      c.append(cx.el("div", {}, cx.el("span", { class: "countdown", "data-expires": w.expires_at }, `${Math.ceil(left)} s left to answer`)));
      actions.append(
        cx.el("button", { type: "button", onclick: () => answer(w, "accept"), "aria-label": `Accept ${w.channel} contact of ${w.customer_id}` }, "Accept"),
        cx.el("button", { type: "button", class: "danger", onclick: () => answer(w, "reject"), "aria-label": `Reject ${w.channel} contact of ${w.customer_id}` }, "Reject"));
    }
    actions.append(cx.el("button", { type: "button", class: "secondary", onclick: () => select(ref(w)), "aria-pressed": selected ? "true" : "false" }, "Show customer"));
    c.append(actions);
    return c;
  }

  function render() {
    const o = offers(), a = contacts();
    if (state.selected && state.work.some((w) => ref(w) === state.selected)) refreshContext();
    $("offers").replaceChildren(...(o.length ? o.map(card) : [cx.el("p", { class: "muted" }, "No offer waiting.")]));
    $("contacts").replaceChildren(...(a.length ? a.map(card) : [cx.el("p", { class: "muted" }, "No contact in hand.")]));
    if (state.selected && !state.work.some((w) => ref(w) === state.selected)) {
      state.selected = null; renderContext(); cxAssist.clear();
      document.dispatchEvent(new CustomEvent("cx-desk-select", { detail: { advisor: state.advisor, key: state.key, contactId: null } }));
    }
    if (!state.selected && state.work.length) select(ref(state.work[0]));
    else renderCompleteForm();
  }

  function tick() {
    for (const el of document.querySelectorAll(".countdown[data-expires]")) {
      const left = Math.max(0, Number(el.dataset.expires) - now());
      el.textContent = left > 0 ? `${Math.ceil(left)} s left to answer` : "Offer expired";
    }
  }

  async function answer(w, verb) {
    try {
      await cx.api(state.key, "POST", `/advisors/${encodeURIComponent(state.advisor)}/offers/${encodeURIComponent(w.assignment_id)}/${verb}`);
      say(verb === "accept" ? `Accepted the ${w.channel} contact of ${w.customer_id}.` : `Rejected the offer.`, "ok");
    } catch (e) { say(`Could not ${verb}: ${e.message}`, "error"); }
  }

  async function select(contactId) {
    state.selected = contactId;
    for (const el of document.querySelectorAll(".card")) el.classList.toggle("selected", el.dataset.contact === contactId);
    renderCompleteForm();
    suggest(contactId);
    document.dispatchEvent(new CustomEvent("cx-desk-select", { detail: { advisor: state.advisor, key: state.key, contactId } }));
    try {
      state.contexts[contactId] = await cx.api(state.key, "GET", `/advisors/${encodeURIComponent(state.advisor)}/contacts/${encodeURIComponent(contactId)}/context`);
    } catch (e) {
      state.contexts[contactId] = { error: e.message };
    }
    if (state.selected === contactId) renderContext();
  }

  // Suggested knowledge (desk-assist.js): documents that resolved similar contacts; "Use" fills the disposition's document.
  function suggest(contactId) {
    const w = state.work.find((x) => ref(x) === contactId);
    cxAssist.show(state.advisor, state.key, contactId, Boolean(w && w.status === "active"));
  }

  // The context changes while the contact is handled (new messages, a call on another channel): fetch it again.
  async function refreshContext() {
    const contactId = state.selected;
    if (!contactId || !state.advisor) return;
    try {
      state.contexts[contactId] = await cx.api(state.key, "GET", `/advisors/${encodeURIComponent(state.advisor)}/contacts/${encodeURIComponent(contactId)}/context`);
      if (state.selected === contactId) { renderContext(); suggest(contactId); }
    } catch (e) { /* the contact just ended: the next work event says so */ }
  }

  function renderCompleteForm() {
    const w = state.work.find((x) => ref(x) === state.selected);
    $("complete-form").hidden = !(w && w.status === "active");
    if (w && w.intent && !$("disp-intent").value) $("disp-intent").value = w.intent;
  }

  function facts(pairs) {
    return cx.el("dl", { class: "facts" }, pairs.filter(([, v]) => v !== null && v !== undefined && v !== "").flatMap(([k, v]) => [cx.el("dt", {}, k), cx.el("dd", {}, v)]));
  }

  // The churn model's own reasons (the context facts that raise this customer's risk most), as the scorer stored them.
  const FACTOR_NAMES = { tenure_months: "tenure (months)", contacts_30d: "contacts in 30 days", repeat_contacts: "repeat contacts",
    failed_payments: "failed payments", complaints: "complaints", negative_sentiment: "share of negative messages",
    days_since_contact: "days since last contact", monthly_charges: "monthly charges", total_charges: "total charges" };
  function riskReasons(c) {
    return (c.churn_reasons || []).map((r) => {
      const name = FACTOR_NAMES[r.factor] || r.factor.replaceAll("_", " ");
      return `${name}${r.value === null || r.value === undefined ? "" : `: ${r.value}`} (odds ×${Math.exp(r.weight).toFixed(1)})`;
    });
  }

  // Customer health (docs/INTEL.md "Customer health"): the 0-100 score, its band and the factors that move it most,
  // in points (10 points = the odds that the customer stays ×2.7); and the language of the latest message.
  const HEALTH_NAMES = { ...FACTOR_NAMES, csat: "CSAT (1-5)", nps: "NPS (0-10)", unresolved_contacts: "unresolved contacts",
    sentiment_trend: "sentiment trend", churn_risk: "churn risk", contract: "contract", payment_method: "payment method" };
  function healthSection(c) {
    const last = (c.recent || []).find((r) => r.direction === "inbound" && r.language_detected);
    const lang = last ? `${last.language || "unknown"} (detected ${last.language_detected}, confidence ${cx.pct(last.language_confidence)})`
      + (last.sentiment_label === "unknown" ? "; sentiment not scored in this language" : "") : (c.language || "–");
    const factors = (c.health_factors || []).map((f) => {
      const name = HEALTH_NAMES[f.factor] || f.factor.replaceAll("_", " ");
      return cx.el("li", {}, `${name}${f.value === null || f.value === undefined ? "" : `: ${f.value}`} (${f.points > 0 ? "+" : ""}${cx.num(f.points, 0)} points)`);
    });
    return cx.el("section", { id: "health", "aria-labelledby": "health-h" },
      cx.el("h3", { id: "health-h" }, c.health === null || c.health === undefined ? "Health: not computed yet" : `Health ${c.health} / 100 (${(c.health_band || "").replaceAll("_", " ")})`),
      factors.length ? cx.el("ul", { id: "health-factors" }, factors) : cx.el("p", { class: "muted" }, "Nothing on record moves it much."),
      facts([["Language", lang]]));
  }

  // One of the assignment's reasons as [name, value]: "_s" figures are seconds, and a negative one was not learned yet.
  function reasonRow([k, v]) {
    if (k.endsWith("_s")) return [k.slice(0, -2).replaceAll("_", " "), v < 0 ? "not learned yet" : `${cx.num(v, 1)} s`];
    return [k.replaceAll("_", " "), cx.num(v)];
  }

  function renderContext() {
    const w = state.work.find((x) => ref(x) === state.selected);
    const c = w && state.contexts[ref(w)];
    if (!w) { $("ctx").replaceChildren(cx.el("p", { class: "muted" }, "Select an offer or a contact to see the customer's context.")); return; }
    if (!c) { $("ctx").replaceChildren(cx.el("p", { class: "muted" }, "Loading the customer's context…")); return; }
    if (c.error) { $("ctx").replaceChildren(cx.el("p", { class: "error" }, `No context: ${c.error}`)); return; }
    const ids = Object.entries(c.identifiers || {}).map(([k, v]) => `${k}: ${v.join(", ")}`).join("; ");
    const trend = c.sentiment_trend === null || c.sentiment_trend === undefined ? "–" : c.sentiment_trend > 0.02 ? "improving" : c.sentiment_trend < -0.02 ? "falling" : "steady";
    const reasons = Object.entries(w.reasons || {}).map(reasonRow);  // in the router's order: what decided first
    const risk = riskReasons(c);
    const recent = (c.recent || []).slice(0, 10);
    const opens = Object.values(c.open_contacts || {});
    const consent = Object.entries(c.consent || {});
    $("ctx").replaceChildren(
      cx.el("h3", {}, `Customer ${c.customer_id}`),
      facts([["Identifiers", ids], ["Channels", Object.entries(c.channel_counts || {}).map(([k, v]) => `${k} (${v})`).join(", ") || "–"],
        ["Preferred", [c.preferred_channel, c.preferred_language].filter(Boolean).join(", ")], ["Tier", c.tier], ["Journey", c.journey_stage],
        ["Intent", c.latest_intent ? `${c.latest_intent} (confidence ${cx.pct(c.intent_confidence)})` : "–"],
        ["Sentiment", `${cx.num(c.sentiment_last)} last, ${cx.num(c.sentiment_avg)} average, ${trend}`],
        ["Churn risk", c.churn_risk === null || c.churn_risk === undefined ? "not scored" : cx.pct(c.churn_risk)],
        ["Contacts", `${c.contacts_total} in all, ${c.contacts_24h} in 24 h, ${c.contacts_7d} in 7 days${c.repeat_contact ? " — repeat contact" : ""}`],
        ["Consent", consent.length ? consent.map(([k, v]) => `${k}: ${v ? "yes" : "no"}`).join(", ") : "none recorded"],
        ["Last advisor", c.last_advisor_id]]),
      cx.el("h3", {}, "What raises the churn risk"),
      risk.length ? cx.el("ul", { id: "churn-reasons" }, risk.map((r) => cx.el("li", {}, r)))
        : cx.el("p", { class: "muted" }, c.churn_risk === null || c.churn_risk === undefined ? "Not scored yet (no churn model published)." : "Nothing on record raises it much."),
      healthSection(c),
      cx.el("h3", {}, "Why you were chosen"),
      reasons.length ? cx.el("table", {}, cx.el("thead", {}, cx.el("tr", {}, cx.el("th", { scope: "col" }, "Reason"), cx.el("th", { scope: "col", class: "num" }, "Value"))),
        cx.el("tbody", {}, reasons.map(([k, v]) => cx.el("tr", {}, cx.el("td", {}, k), cx.el("td", { class: "num" }, v))))) : cx.el("p", { class: "muted" }, "–"),
      cx.el("h3", {}, `Open contacts (${opens.length})`),
      opens.length ? cx.el("ul", {}, opens.map((o) => cx.el("li", {}, `${o.channel} ${o.contact_id}: ${o.state}${o.reason ? ` (${o.reason})` : ""}${o.advisor_id ? ` with ${o.advisor_id}` : ""}, opened ${cx.time(o.opened_at)}`))) : cx.el("p", { class: "muted" }, "None."),
      cx.el("h3", {}, "Recent interactions"),
      cx.el("table", {}, cx.el("thead", {}, cx.el("tr", {}, ...["When", "Channel", "What", "Text"].map((h) => cx.el("th", { scope: "col" }, h)))),
        cx.el("tbody", { id: "recent" }, recent.map((r) => cx.el("tr", {}, cx.el("td", {}, cx.time(r.at)), cx.el("td", {}, r.channel), cx.el("td", {}, r.kind.replaceAll("_", " ")), cx.el("td", {}, r.text || ""))))),
    );
  }

  async function complete(ev) {
    ev.preventDefault();
    const w = state.work.find((x) => ref(x) === state.selected);
    if (!w) return;
    const body = { intent: $("disp-intent").value.trim() || null, resolved: $("disp-resolved").value === "true" };
    if ($("disp-code").value.trim()) body.code = $("disp-code").value.trim();
    if ($("disp-notes").value.trim()) body.notes = $("disp-notes").value.trim();
    if (window.cxNba) Object.assign(body, window.cxNba.taken());  // the next-best-action block (desk-nba.js)
    if ($("disp-document").value.trim()) body.document = $("disp-document").value.trim();
    try {
      await cx.api(state.key, "POST", `/advisors/${encodeURIComponent(state.advisor)}/contacts/${encodeURIComponent(ref(w))}/complete`, body);
      say(`Completed contact ${w.contact_id} (${body.intent || "no intent"}, ${body.resolved ? "resolved" : "not resolved"}).`, "ok");
      for (const id of ["disp-intent", "disp-code", "disp-notes", "disp-document"]) $(id).value = "";
    } catch (e) { say(`Could not complete: ${e.message}`, "error"); }
  }

  async function transfer() {
    const w = state.work.find((x) => ref(x) === state.selected);
    if (!w) return;
    const body = {};
    if ($("xfer-advisor").value.trim()) body.to_advisor_id = $("xfer-advisor").value.trim();
    const skills = $("xfer-skills").value.split(",").map((s) => s.trim()).filter(Boolean);
    if (skills.length) body.to_skills = skills;
    try {
      await cx.api(state.key, "POST", `/advisors/${encodeURIComponent(state.advisor)}/contacts/${encodeURIComponent(ref(w))}/transfer`, body);
      say(`Transferred contact ${w.contact_id}.`, "ok");
    } catch (e) { say(`Could not transfer: ${e.message}`, "error"); }
  }

  async function setPresence() {
    try {
      await cx.api(state.key, "POST", `/advisors/${encodeURIComponent(state.advisor)}/presence`, { presence: $("presence").value, routing_group: state.group });
      say(`Presence: ${$("presence").selectedOptions[0].textContent}.`, "ok");
    } catch (e) { say(`Could not set presence: ${e.message}`, "error"); }
  }

  async function signOut() {
    try { await cx.api(state.key, "POST", `/advisors/${encodeURIComponent(state.advisor)}/logout`, { routing_group: state.group }); } catch (e) { /* signed out locally anyway */ }
    if (state.abort) state.abort.abort();
    sessionStorage.removeItem("cx-desk");
    Object.assign(state, { advisor: null, key: null, work: [], selected: null });
    $("desk").hidden = true; $("who").hidden = true; $("signin").hidden = false;
    say("Signed out.");
  }

  document.addEventListener("keydown", (e) => {
    if (!state.advisor || e.ctrlKey || e.metaKey || e.altKey) return;
    if (["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName)) return;
    const first = offers()[0];
    if (!first) return;
    if (e.key === "a" || e.key === "A") { e.preventDefault(); answer(first, "accept"); }
    if (e.key === "r" || e.key === "R") { e.preventDefault(); answer(first, "reject"); }
  });
  $("signin-form").addEventListener("submit", signIn);
  $("complete-form").addEventListener("submit", complete);
  $("transfer-button").addEventListener("click", transfer);
  $("presence").addEventListener("change", setPresence);
  $("signout").addEventListener("click", signOut);
  $("intents").replaceChildren(...["billing", "card_issue", "tech_support", "cancel_service", "refund", "complaint"].map((i) => cx.el("option", { value: i })));
  setInterval(tick, 500);
  setInterval(refreshContext, 3000);
  const fragKey = cx.takeKeyFromFragment("cx-desk-key");
  if (fragKey) $("desk-key").value = fragKey;
  const saved = JSON.parse(sessionStorage.getItem("cx-desk") || "null");
  if (saved) { Object.assign(state, saved); showDesk(); }
})();
