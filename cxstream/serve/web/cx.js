// Shared by the cxstream pages: the key, JSON calls to the API, and a server-sent events reader.
"use strict";
const cx = {
  // A key in the page's fragment (#key=...) is kept for this tab only and removed from the address bar.
  takeKeyFromFragment(name) {
    const m = /(?:^|[#&])key=([^&]+)/.exec(location.hash);
    if (m) {
      sessionStorage.setItem(name, decodeURIComponent(m[1]));
      history.replaceState(null, "", location.pathname + location.search);
    }
    return sessionStorage.getItem(name);
  },
  async api(key, method, path, body) {
    const headers = { "X-API-Key": key };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    if (!resp.ok) {
      const err = new Error(data && data.detail ? data.detail : `HTTP ${resp.status}`);
      err.status = resp.status; err.code = data && data.error;
      throw err;
    }
    return data;
  },
  // Reads a text/event-stream with fetch (EventSource cannot send the key header); calls onEvent(name, data).
  async stream(key, path, onEvent, signal) {
    const resp = await fetch(path, { headers: { "X-API-Key": key, "Accept": "text/event-stream" }, signal });
    if (!resp.ok) {
      let detail = `HTTP ${resp.status}`;
      try { detail = (await resp.json()).detail || detail; } catch (e) { /* not JSON */ }
      const err = new Error(detail); err.status = resp.status; throw err;
    }
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, cut); buf = buf.slice(cut + 2);
        let name = "message", data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event: ")) name = line.slice(7);
          else if (line.startsWith("data: ")) data += line.slice(6);
        }
        if (data) onEvent(name, JSON.parse(data));
      }
    }
  },
  el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
    return e;
  },
  pct(x) { return x === null || x === undefined ? "–" : `${(100 * x).toFixed(0)} %`; },
  secs(x) { return x === null || x === undefined ? "–" : x < 60 ? `${x.toFixed(1)} s` : `${Math.floor(x / 60)} min ${Math.round(x % 60)} s`; },
  time(t) { return t ? new Date(t * 1000).toLocaleTimeString() : "–"; },
  num(x, d = 2) { return x === null || x === undefined ? "–" : Number(x).toFixed(d); },
};
