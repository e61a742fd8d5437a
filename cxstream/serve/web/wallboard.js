// The supervisor wallboard: polls GET /wallboard/data every 2 s and draws it (tables and plain SVG plots).
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  let key = cx.takeKeyFromFragment("cx-api-key");
  const SVG = "http://www.w3.org/2000/svg";

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // A line plot of series [{name, color, points: [[t, y]]}] over the last hour; yMax fixed or from the data.
  function plot(title, series, { yMax, fmt }) {
    const W = 600, H = 160, L = 48, B = 22, T = 8, R = 8;
    const now = Date.now() / 1000, t0 = now - 3600;
    const all = series.flatMap((s) => s.points.map((p) => p[1])).filter((y) => y !== null);
    const top = yMax || Math.max(1e-3, ...all) * 1.1;
    const x = (t) => L + ((t - t0) / 3600) * (W - L - R), y = (v) => H - B - (v / top) * (H - B - T);
    const root = svg("svg", { class: "plot", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
    root.append(svg("title", {}, title));
    for (let i = 0; i <= 4; i++) {
      const v = (top * i) / 4;
      root.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#d0d5dd" }));
      root.append(svg("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end", "font-size": 11, fill: "#333" }, fmt(v)));
    }
    for (const m of [60, 45, 30, 15, 0]) root.append(svg("text", { x: x(now - m * 60), y: H - 6, "text-anchor": "middle", "font-size": 11, fill: "#333" }, m ? `-${m} min` : "now"));
    for (const s of series) {
      const pts = s.points.filter((p) => p[1] !== null && p[0] >= t0);
      if (pts.length) root.append(svg("polyline", { points: pts.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" "), fill: "none", stroke: s.color, "stroke-width": 2 }));
      for (const p of pts.slice(-1)) root.append(svg("circle", { cx: x(p[0]), cy: y(p[1]), r: 3, fill: s.color }));
    }
    const legend = cx.el("p", { class: "muted" }, series.map((s) => cx.el("span", { style: `color:${s.color};font-weight:700;margin-right:1rem` }, `— ${s.name}`)));
    return [root, legend];
  }

  function tile(label, value, id) {
    return cx.el("div", { class: "tile" }, cx.el("div", { class: "v", "data-figure": id }, value), cx.el("div", { class: "k" }, label));
  }

  function groupPanel(g) {
    const t = g.total || {}, a = g.advisors || {};
    const rows = Object.entries(g.queues || {}).map(([name, q]) => cx.el("tr", {},
      cx.el("th", { scope: "row" }, name), cx.el("td", { class: "num" }, q.waiting), cx.el("td", { class: "num" }, cx.secs(q.longest_wait_s)),
      cx.el("td", { class: "num" }, cx.pct(q.service_level)), cx.el("td", { class: "num" }, cx.secs(q.asa_s)), cx.el("td", { class: "num" }, cx.pct(q.abandon_rate)),
      cx.el("td", { class: "num" }, q.answered), cx.el("td", { class: "num" }, q.completed), cx.el("td", { class: "num" }, q.sla_breaches)));
    return cx.el("section", { class: "panel", "aria-labelledby": `g-${g.group}`, "data-group": g.group },
      cx.el("h2", { id: `g-${g.group}` }, `Routing group ${g.group}`, " ", cx.el("span", { class: "badge" }, `policy ${g.policy}`)),
      cx.el("div", { class: "tiles" },
        tile("waiting", t.waiting, "waiting"), tile("longest wait", cx.secs(t.longest_wait_s), "longest_wait"),
        tile("service level", cx.pct(t.service_level), "service_level"), tile("ASA", cx.secs(t.asa_s), "asa"),
        tile("abandonment", cx.pct(t.abandon_rate), "abandon_rate"), tile("answered", t.answered, "answered"),
        tile("completed", t.completed, "completed"), tile("occupancy", cx.pct(t.occupancy), "occupancy"),
        tile("advisors signed in", a.logged_in, "logged_in"), tile("available (idle)", a.available, "available"),
        tile("busy (holding a contact or in wrap-up)", a.busy, "busy"), tile("away", a.away, "away")),
      cx.el("h3", {}, "Queues"),
      cx.el("table", {}, cx.el("thead", {}, cx.el("tr", {}, ...["Queue", "Waiting", "Longest wait", "Service level", "ASA", "Abandoned", "Answered", "Completed", "SLA breaches"].map((h, i) => cx.el("th", { scope: "col", class: i ? "num" : "" }, h)))),
        cx.el("tbody", {}, rows.length ? rows : [cx.el("tr", {}, cx.el("td", { colspan: 9, class: "muted" }, "No queue yet."))])));
  }

  function render(d) {
    $("updated").textContent = `updated ${cx.time(d.now)}`;
    $("groups").replaceChildren(...(d.groups.length ? d.groups.map(groupPanel) : [cx.el("section", { class: "panel" }, cx.el("h2", {}, "Routing groups"), cx.el("p", { class: "muted" }, "No router has reported in the last minute."))]));
    const lat = d.latency || [];
    $("latency-plot").replaceChildren(...plot("End-to-end latency per minute, last hour", [
      { name: "median", color: "#0b57a4", points: lat.map((p) => [p.at + 30, p.p50_s]) },
      { name: "max", color: "#a4161a", points: lat.map((p) => [p.at + 30, p.max_s]) }], { fmt: (v) => `${v < 1 ? (v * 1000).toFixed(0) + " ms" : v.toFixed(1) + " s"}` }));
    const colors = ["#1e6b2f", "#0b57a4", "#8a4b00", "#6b21a8"];
    $("sl-plot").replaceChildren(...plot("Service level per routing group, last hour", Object.entries(d.service_level || {}).map(([g, pts], i) => (
      { name: g, color: colors[i % colors.length], points: pts.map((p) => [p.at, p.service_level]) })), { yMax: 1, fmt: (v) => `${Math.round(v * 100)} %` }));
    const models = Object.values(d.models || {});
    $("models").replaceChildren(models.length ? cx.el("table", { class: "compact" }, cx.el("thead", {}, cx.el("tr", {}, ...["Model", "Version", "Labels", "Accuracy (assist: in top 3)", "AUC", "At"].map((h) => cx.el("th", { scope: "col" }, h)))),
      cx.el("tbody", {}, models.map((m) => cx.el("tr", {}, cx.el("td", {}, m.model), cx.el("td", { class: "num" }, m.version), cx.el("td", { class: "num" }, m.labels_seen ?? 0),
        cx.el("td", { class: "num" }, cx.pct(m.progressive_accuracy ?? m.progressive_top3)), cx.el("td", { class: "num" }, cx.num(m.progressive_auc)), cx.el("td", {}, `${m.kind === "drift" ? "drift at " : ""}${cx.time(m.at)}`)))))
      : cx.el("p", { class: "muted" }, "No model published in the last hour."));
    const evs = d.routing_events || [];
    $("routing-events").replaceChildren(evs.length ? cx.el("ul", {}, evs.map((e) => cx.el("li", {}, `${cx.time(e.at)} ${e.kind.replaceAll("_", " ")}: ${e.routing_group} contact ${e.contact_id}${e.advisor_id ? ` (${e.advisor_id})` : ""}${e.detail ? ` — ${e.detail}` : ""}`)))
      : cx.el("p", { class: "muted" }, "None in the last hour."));
    const out = d.outreach || [];
    $("outreach").replaceChildren(out.length ? cx.el("ul", {}, out.map((o) => cx.el("li", {}, `${cx.time(o.created_at)} ${o.reason.replaceAll("_", " ")} → ${o.customer_id} by ${o.channel} (priority ${o.priority})`)))
      : cx.el("p", { class: "muted" }, "None in the last hour."));
  }

  async function poll() {
    try {
      render(await cx.api(key, "GET", "/wallboard/data"));
      $("status").textContent = ""; $("status").className = "muted";
    } catch (e) {
      if (e.status === 401 || e.status === 403) { sessionStorage.removeItem("cx-api-key"); key = null; showSignin(e.message); return; }
      $("status").textContent = `Could not refresh: ${e.message}`; $("status").className = "error";
    }
    setTimeout(poll, 2000);
  }

  function showSignin(msg) { $("board").hidden = true; $("signin").hidden = false; $("signin-error").textContent = msg || ""; }
  $("signin-form").addEventListener("submit", (ev) => {
    ev.preventDefault(); key = $("api-key").value.trim(); sessionStorage.setItem("cx-api-key", key);
    $("signin").hidden = true; $("board").hidden = false; poll();
  });
  if (key) { $("board").hidden = false; poll(); } else showSignin();
})();
