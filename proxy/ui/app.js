// tbproxy status page: polls /status.json once a second and updates the page
// the server rendered. Everything from the server is set as text or as an
// attribute value, never parsed as markup: torrent names and URLs are hostile.
// The formatting rules mirror proxy/ui.go.
"use strict";

(function () {
  const POLL_MS = 1000;
  const HISTORY_EVERY = 10; // polls between plot updates
  const PLOT_W = 600, PLOT_H = 120, PLOT_SPAN_MS = 3600 * 1000, PLOT_MIN_SPAN_MS = 5 * 60 * 1000;
  const SVG_NS = "http://www.w3.org/2000/svg";

  function formatBytes(n) {
    n = Math.max(0, Math.floor(n || 0));
    if (n < 1024) return n + " B";
    let v = n / 1024, unit = "KiB";
    for (const next of ["MiB", "GiB", "TiB"]) {
      if (v < 1024) break;
      v /= 1024;
      unit = next;
    }
    return v.toFixed(1) + " " + unit;
  }
  const formatRate = (r) => formatBytes(r) + "/s";
  const formatPercent = (f) => Math.floor(Math.max(0, Math.min(1, f || 0)) * 100) + "%";
  const ratio = (n, of) => (of > 0 ? Math.min(1, n / of) : 0);
  const split = (a, b) => (a + b > 0 ? Math.floor((a / (a + b)) * 1000) : 0);

  function formatAgo(iso, now) {
    const t = Date.parse(iso);
    if (!iso || isNaN(t) || t <= 0 || iso.startsWith("0001-")) return "never";
    const s = (now - t) / 1000;
    if (s < 60) return "just now";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    if (s < 48 * 3600) return Math.floor(s / 3600) + " h ago";
    return Math.floor(s / 86400) + " days ago";
  }

  function seedingText(c) {
    if (!c.seeding) return "no (policy done)";
    if (!c.active) return "not running";
    if (c.peers === 0) return "waiting for peers";
    if (c.upload_rate >= 1) return c.peers + " peers, " + formatRate(c.upload_rate);
    return c.peers + " peers";
  }

  const field = (row, name) => row.querySelector('[data-f="' + name + '"]');
  function setText(el, s) {
    if (el && el.textContent !== s) el.textContent = s;
  }
  function setAttr(el, name, v) {
    v = String(v);
    if (el && el.getAttribute(name) !== v) el.setAttribute(name, v);
  }

  function drawPieces(svg, cells) {
    setAttr(svg, "viewBox", "0 0 " + Math.max(cells.length, 1) + " 1");
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    let i = 0;
    while (i < cells.length) {
      let j = i;
      while (j < cells.length && cells[j] === cells[i]) j++;
      const r = document.createElementNS(SVG_NS, "rect");
      r.setAttribute("x", i);
      r.setAttribute("width", j - i);
      r.setAttribute("height", 1);
      r.setAttribute("class", "l" + Number(cells[i]));
      svg.appendChild(r);
      i = j;
    }
  }

  function updateTransfer(row, t) {
    const app = field(row, "app");
    setText(app, t.app_name);
    setAttr(app, "title", t.app);
    setText(field(row, "file"), t.file);
    setText(field(row, "url"), t.url);
    setAttr(field(row, "progress"), "value", Math.floor(ratio(t.sent, t.size) * 1000));
    setText(field(row, "percent"), formatPercent(ratio(t.sent, t.size)));
    setText(field(row, "sent"), formatBytes(t.sent));
    setText(field(row, "size"), formatBytes(t.size));
    const key = (t.piece_map || []).join("");
    const pieces = field(row, "pieces");
    if (pieces.dataset.cells !== key) {
      pieces.dataset.cells = key;
      drawPieces(pieces, t.piece_map || []);
    }
    setText(field(row, "rate"), formatRate(t.download_rate));
    setText(field(row, "peers"), String(t.peers));
    const swarm = split(t.bytes_from_peers, t.bytes_from_origin);
    setAttr(field(row, "split-swarm"), "width", swarm);
    setAttr(field(row, "split-origin"), "x", swarm);
    setAttr(field(row, "split-origin"), "width", split(t.bytes_from_origin, t.bytes_from_peers));
    setText(field(row, "from-peers"), formatBytes(t.bytes_from_peers));
    setText(field(row, "from-origin"), formatBytes(t.bytes_from_origin));
  }

  function updateCached(row, c, now) {
    setText(field(row, "name"), c.name);
    setText(field(row, "infohash"), c.infohash);
    setText(field(row, "disk"), formatBytes(c.disk_bytes));
    setText(field(row, "size"), formatBytes(c.size));
    setText(field(row, "verified"), formatPercent(c.verified));
    setText(field(row, "seeding"), seedingText(c));
    setText(field(row, "uploaded"), formatBytes(c.uploaded));
    setText(field(row, "last-use"), formatAgo(c.last_use, now));
    const ih = field(row, "drop-infohash");
    if (ih) ih.value = c.infohash;
  }

  // updateRows makes tbody's keyed rows match items, in order, cloning new
  // rows from the <template> the server rendered.
  function updateRows(tbody, templateId, items, key, update) {
    if (!tbody) return;
    const tmpl = document.getElementById(templateId);
    const empty = tbody.querySelector("tr.empty");
    const rows = new Map();
    for (const row of tbody.querySelectorAll("tr[data-key]")) rows.set(row.dataset.key, row);
    let prev = empty;
    const keep = new Set();
    for (const item of items) {
      const k = String(key(item));
      keep.add(k);
      let row = rows.get(k);
      if (!row) {
        row = tmpl.content.firstElementChild.cloneNode(true);
        row.dataset.key = k;
      }
      update(row, item);
      if (prev ? prev.nextElementSibling !== row : tbody.firstElementChild !== row) {
        if (prev) prev.after(row);
        else tbody.prepend(row);
      }
      prev = row;
    }
    for (const [k, row] of rows) if (!keep.has(k)) row.remove();
    if (empty) empty.hidden = items.length > 0;
  }

  function updateTotals(st) {
    for (const el of document.querySelectorAll("[data-total]")) {
      const v = st[el.dataset.total];
      if (typeof v !== "number") continue;
      setText(el, el.dataset.fmt === "n" ? String(v) : formatBytes(v));
    }
  }

  function updateCache(c, now) {
    if (!c) return;
    const meter = document.getElementById("cache-meter");
    setAttr(meter, "max", c.limit);
    setAttr(meter, "value", c.used);
    setText(document.getElementById("cache-used"), formatBytes(c.used));
    setText(document.getElementById("cache-limit"), formatBytes(c.limit));
    const list = c.torrents || [];
    setText(document.getElementById("cache-count"), String(list.length));
    updateRows(document.getElementById("cache-rows"), "cache-row", list, (x) => x.infohash, (row, x) => updateCached(row, x, now));
  }

  function updatePlot(history, now) {
    let span = PLOT_SPAN_MS;
    if (history.length > 0) span = Math.min(span, Math.max(now - history[0].t, PLOT_MIN_SPAN_MS));
    const start = now - span;
    const recent = history.filter((s) => s.t >= start);
    let top = 1;
    for (const s of recent) top = Math.max(top, s.from_peers, s.from_origin);
    const points = (k) => recent
      .map((s) => ((s.t - start) / span * PLOT_W).toFixed(1) + "," + (PLOT_H - s[k] / top * PLOT_H).toFixed(1))
      .join(" ");
    setAttr(document.getElementById("plot-swarm"), "points", points("from_peers"));
    setAttr(document.getElementById("plot-origin"), "points", points("from_origin"));
    setText(document.getElementById("plot-max"), formatBytes(top));
    setText(document.getElementById("plot-span"),
      span >= PLOT_SPAN_MS ? "last hour" : "last " + Math.floor((span + 30000) / 60000) + " min");
  }

  let polls = 0;
  async function poll() {
    const withHistory = polls % HISTORY_EVERY === 0;
    polls++;
    const live = document.getElementById("live");
    try {
      const resp = await fetch("/status.json" + (withHistory ? "?history" : ""), { cache: "no-store", credentials: "same-origin" });
      if (!resp.ok) throw new Error("status " + resp.status);
      const st = await resp.json();
      const now = Date.parse(st.time) || Date.now();
      updateRows(document.getElementById("transfer-rows"), "transfer-row", st.transfers || [], (t) => t.id, updateTransfer);
      updateTotals(st);
      updateCache(st.cache, now);
      if (withHistory && st.history) updatePlot(st.history, now);
      setText(live, "Live.");
    } catch (e) {
      setText(live, "Not updating: tbproxy is not answering.");
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  document.addEventListener("submit", (e) => {
    const form = e.target;
    if (form.classList && form.classList.contains("drop") && !window.confirm("Drop this torrent from the cache?")) {
      e.preventDefault();
    }
  });

  poll();
})();
