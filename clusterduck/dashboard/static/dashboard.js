// clusterduck dashboard: hand-written, no library, no build step, nothing from a CDN.
// The index page polls /api/topologies; a topology page draws its graph once from
// /api/topologies/NAME/graph and then follows /api/topologies/NAME/events (server-sent
// events, one status document a second) without ever reloading.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const BAD = ["failed", "crashed", "failing"];

function el(tag, attrs, ...children) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.setAttribute("class", v);
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

const int = (n) => Number(n || 0).toLocaleString("en-US");
function short(n) {
  n = Number(n || 0);
  if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (n >= 1e4) return (n / 1e3).toFixed(0) + "k";
  if (n >= 1e3) return (n / 1e3).toFixed(1) + "k";
  return n >= 10 ? n.toFixed(0) : n.toFixed(1).replace(/\.0$/, "");
}
// An instance's uptime: "0s" once it has reported, if under a second; "-" before
// (cli/console.py's _uptime).
function uptime(r) {
  if (!r.uptime && !(r.pid && ["running", "draining", "finished"].includes(r.state))) return "-";
  const s = Math.floor(r.uptime || 0);
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
  return Math.floor(s / 3600) + "h" + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
}
function anomalies(a) {
  const parts = Object.entries(a || {}).filter(([, v]) => v).sort();
  return parts.map(([k, v]) => k + "=" + v).join(", ") || "-";
}
function setLive(ok, text) {
  const live = document.getElementById("live");
  live.className = "live " + (ok ? "ok" : "bad");
  live.textContent = text;
}

// -- index page -----------------------------------------------------------------------

async function indexPage() {
  const body = document.querySelector("#topologies tbody");
  async function refresh() {
    try {
      const response = await fetch("/api/topologies");
      const list = await response.json();
      body.replaceChildren(...list.map((t) => el("tr", {"data-topology": t.name},
        el("td", {}, el("a", {href: "/topologies/" + encodeURIComponent(t.name), text: t.name})),
        el("td", {class: "st st-" + t.state, text: t.state}),
        el("td", {text: t.hosts.join(", ")}),
        el("td", {text: new Date(t.started * 1000).toLocaleString()}),
        el("td", {text: t.file}))));
      document.getElementById("empty").hidden = list.length > 0;
      setLive(true, "live · " + new Date().toLocaleTimeString());
    } catch (err) {
      setLive(false, "dashboard server unreachable");
    }
  }
  await refresh();
  setInterval(refresh, 2000);
}

// -- topology page: the graph ---------------------------------------------------------

const NODE_W = 226, NODE_H = 96, GAP_X = 120, GAP_Y = 26, PAD = 16;

// Columns by longest path from a spout, then a few barycentre sweeps against crossings.
function layout(components) {
  const byName = Object.fromEntries(components.map((c) => [c.name, c]));
  const depth = {};
  const depthOf = (name) => {
    if (depth[name] !== undefined) return depth[name];
    depth[name] = 0;
    const inputs = byName[name].inputs;
    depth[name] = inputs.length ? 1 + Math.max(...inputs.map(depthOf)) : 0;
    return depth[name];
  };
  components.forEach((c) => depthOf(c.name));
  const columns = [];
  for (const c of components) (columns[depth[c.name]] ||= []).push(c.name);
  const row = {};
  columns.forEach((col) => col.forEach((n, i) => (row[n] = i)));
  for (let sweep = 0; sweep < 4; sweep++) {
    for (const col of columns.slice(1)) {
      const bary = (n) => {
        const ins = byName[n].inputs;
        return ins.length ? ins.reduce((s, i) => s + row[i], 0) / ins.length : row[n];
      };
      col.sort((a, b) => bary(a) - bary(b));
      col.forEach((n, i) => (row[n] = i));
    }
  }
  const tallest = Math.max(...columns.map((c) => c.length));
  const height = tallest * NODE_H + (tallest - 1) * GAP_Y;
  const pos = {};
  columns.forEach((col, x) => {
    const colHeight = col.length * NODE_H + (col.length - 1) * GAP_Y;
    col.forEach((n, i) => {
      pos[n] = {x: PAD + x * (NODE_W + GAP_X),
        y: PAD + (height - colHeight) / 2 + i * (NODE_H + GAP_Y)};
    });
  });
  return {pos, width: 2 * PAD + columns.length * NODE_W + (columns.length - 1) * GAP_X,
    height: 2 * PAD + height};
}

function drawGraph(svg, graph) {
  const {pos, width, height} = layout(graph.components);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  // natural size on a wide screen, scaled down (never up) to fit a narrow one
  svg.setAttribute("width", "100%");
  svg.style.maxWidth = width + "px";
  svg.style.aspectRatio = `${width} / ${height}`;
  const defs = el("svg:defs", {}, el("svg:marker", {id: "arrow", viewBox: "0 0 10 10", refX: "9",
    refY: "5", markerWidth: "9", markerHeight: "9", markerUnits: "userSpaceOnUse",
    orient: "auto-start-reverse"},
  el("svg:path", {d: "M 0 0 L 10 5 L 0 10 z", fill: "#57606a"})));
  svg.replaceChildren(defs);
  const edges = {}, nodes = {};
  for (const c of graph.components) {
    for (const input of c.inputs) {
      const a = pos[input], b = pos[c.name];
      const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x - 2, y2 = b.y + NODE_H / 2;
      const mx = (x1 + x2) / 2;
      const path = el("svg:path", {d: `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2} ${y2}`,
        "marker-end": "url(#arrow)", "stroke-width": "1.5"});
      const label = el("svg:text", {x: mx, y: (y1 + y2) / 2 + 4, "text-anchor": "middle",
        text: "–"});
      const box = el("svg:rect", {x: mx - 34, y: (y1 + y2) / 2 - 9, width: 68, height: 18,
        rx: 9});
      svg.append(el("svg:g", {class: "edge", "data-edge": input + "->" + c.name}, path, box,
        label));
      edges[input + "->" + c.name] = {path, label, from: input};
    }
  }
  for (const c of graph.components) {
    const {x, y} = pos[c.name];
    const flags = [c.kind];
    if (c.bundle) flags.push("bundle");
    if (c.sequential) flags.push("sequential");
    if (c.grouping && c.grouping !== "shuffle") flags.push("by " + c.grouping);
    flags.push("×" + c.parallelism);
    const hosts = [...new Set(c.hosts)].join(", ");
    const box = el("svg:rect", {class: "box", x, y, width: NODE_W, height: NODE_H, rx: 8});
    const band = el("svg:rect", {x, y, width: 6, height: NODE_H, rx: 3});
    const state = el("svg:text", {class: "state", x: x + 16, y: y + 72, text: "…"});
    const rate = el("svg:text", {x: x + NODE_W - 10, y: y + 72, "text-anchor": "end", text: ""});
    const track = el("svg:rect", {x: x + 16, y: y + 81, width: NODE_W - 32, height: 5, rx: 2.5,
      fill: "#eef1f4"});
    const bar = el("svg:rect", {x: x + 16, y: y + 81, width: 0, height: 5, rx: 2.5});
    const title = el("svg:title", {text: ""});
    svg.append(el("svg:g", {class: "node", "data-component": c.name}, title, box, band,
      el("svg:text", {class: "title", x: x + 16, y: y + 21, text: c.name}),
      el("svg:text", {class: "meta", x: x + 16, y: y + 39, text: flags.join(" · ")}),
      el("svg:text", {class: "meta", x: x + 16, y: y + 55, text: "on " + hosts}),
      state, rate, track, bar));
    nodes[c.name] = {box, band, state, rate, bar, title, inputs: c.inputs};
  }
  return {edges, nodes};
}

// The state a component shows: the worst of its instances', "restarting" while a
// restart is recent, "broken" when its host does not answer.
function componentState(rows, restartedRecently) {
  const states = rows.map((r) => r.state);
  if (states.includes("unreachable")) return "broken";
  if (states.some((s) => BAD.includes(s))) return "failing";
  if (restartedRecently) return "restarting";
  for (const s of ["starting", "draining", "running"]) if (states.includes(s)) return s;
  return states.every((s) => s === "finished") ? "finished" : states[0] || "starting";
}

function pressureColour(p) {
  if (p < 0.1) return "#2da44e";
  if (p < 0.5) return "#d4a72c";
  return "#cf222e";
}

// -- topology page: everything live ---------------------------------------------------

function topologyPage() {
  const name = decodeURIComponent(location.pathname.split("/")[2] || "");
  document.title = name + " · clusterduck";
  document.getElementById("name").textContent = name;
  const base = "/api/topologies/" + encodeURIComponent(name);
  const restarts = {};  // component -> {count, at}
  const cells = {};  // "comp/i" -> {field: td}
  let drawn = null;
  let selected = null;

  const legend = document.getElementById("legend");
  for (const s of ["running", "restarting", "failing", "broken", "finished", "starting"]) {
    legend.append(el("span", {}, el("i", {class: "bg-" + s}), s));
  }
  legend.append(el("span", {}, el("i", {style: "background:#2da44e"}), "input free"),
    el("span", {}, el("i", {style: "background:#d4a72c"}), "filling"),
    el("span", {}, el("i", {style: "background:#cf222e"}), "full (back-pressure)"));

  fetch(base + "/graph").then((r) => r.json()).then((graph) => {
    drawn = drawGraph(document.getElementById("graph"), graph);
    const select = document.getElementById("log-instance");
    for (const c of graph.components) {
      for (let i = 0; i < c.parallelism; i++) {
        select.append(el("option", {value: c.name + "/" + i, text: c.name + "/" + i}));
      }
    }
    select.onchange = () => chooseLog(select.value);
    const sinks = graph.components.filter((c) => !graph.components.some(
      (d) => d.inputs.includes(c.name)));
    chooseLog((sinks[0] || graph.components[0]).name + "/0");
  });

  function chooseLog(instance) {
    selected = instance;
    document.getElementById("log-instance").value = instance;
    document.querySelectorAll("#instances tbody tr").forEach(
      (tr) => tr.classList.toggle("selected", tr.dataset.instance === instance));
    loadLog();
  }
  async function loadLog() {
    if (!selected) return;
    const pre = document.getElementById("log");
    try {
      const r = await fetch(base + "/logs?lines=40&instance=" + encodeURIComponent(selected));
      const doc = await r.json();
      const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.textContent = r.ok ? (doc.lines.join("\n") || "(empty)") : doc.error;
      if (atBottom) pre.scrollTop = pre.scrollHeight;
    } catch (err) { /* the live indicator says the server is gone */ }
  }
  setInterval(loadLog, 2000);

  function table(status) {
    const body = document.querySelector("#instances tbody");
    const seen = new Set();
    for (const comp of status.components) {
      for (const r of comp.instances) {
        const key = comp.name + "/" + r.index;
        seen.add(key);
        if (!cells[key]) {
          const tr = el("tr", {"data-instance": key});
          const fields = {};
          for (const [f, cls] of [["component", "comp"], ["index", "num"], ["host", ""],
            ["pid", "num"], ["state", "st"], ["received", "num"], ["emitted", "num"],
            ["errors", "num"], ["anomalies", ""], ["backlog", "num"], ["rate", "num"],
            ["restarts", "num"], ["uptime", "num"], ["last_error", "err"]]) {
            fields[f] = el("td", {class: cls, "data-field": f});
            tr.append(fields[f]);
          }
          tr.onclick = () => chooseLog(key);
          cells[key] = fields;
          body.append(tr);
        }
        const f = cells[key];
        const values = {component: comp.name, index: r.index, host: r.host, pid: r.pid || "-",
          state: r.state, received: int(r.received), emitted: int(r.emitted),
          errors: int(r.errors), anomalies: anomalies(r.anomalies), backlog: int(r.backlog),
          rate: int(Math.round(r.rate)), restarts: r.restarts, uptime: uptime(r),
          last_error: r.last_error || ""};
        for (const [k, v] of Object.entries(values)) {
          const text = String(v);
          if (f[k].textContent !== text) {
            if (["restarts", "errors", "state"].includes(k) && f[k].textContent) {
              f[k].classList.remove("changed"); void f[k].offsetWidth; f[k].classList.add("changed");
            }
            f[k].textContent = text;
          }
        }
        f.state.className = "st st-" + r.state;
        f.last_error.title = r.last_error || "";
      }
    }
    if (selected) chooseSelectedRow();
  }
  function chooseSelectedRow() {
    document.querySelectorAll("#instances tbody tr").forEach(
      (tr) => tr.classList.toggle("selected", tr.dataset.instance === selected));
  }

  function graph(status, history) {
    if (!drawn) return;
    const now = Date.now();
    for (const comp of status.components) {
      const node = drawn.nodes[comp.name];
      if (!node) continue;
      const total = comp.instances.reduce((s, r) => s + (r.restarts || 0), 0);
      const seen = restarts[comp.name];
      if (!seen || total !== seen.count) {
        restarts[comp.name] = {count: total, at: seen && total > seen.count ? now : 0};
      }
      const recent = restarts[comp.name].at && now - restarts[comp.name].at < 10000;
      const state = componentState(comp.instances, recent);
      const colour = `var(--${state}, #6e7781)`;
      node.box.style.stroke = colour;
      node.band.style.fill = colour;
      node.state.textContent = state + (total ? ` · ${total} restart${total > 1 ? "s" : ""}` : "");
      node.state.style.fill = colour;
      const rate = comp.instances.reduce((s, r) => s + (r.rate || 0), 0);
      node.rate.textContent = short(rate) + " msg/s";
      // How full the input is: the largest share of time its inputs spent blocked on it.
      const p = Math.max(0, ...node.inputs.map((i) => (history[i] || {}).blocked || 0));
      const backlog = comp.instances.reduce((s, r) => s + (r.backlog || 0), 0);
      node.bar.setAttribute("width", Math.max(p > 0 ? 3 : 0, p * (NODE_W - 32)));
      node.bar.setAttribute("fill", pressureColour(p));
      node.box.style.strokeWidth = p >= 0.5 ? 3.5 : 2;
      node.title.textContent = `${comp.name}: ${state}; input ${Math.round(p * 100)}% full ` +
        `(inputs blocked that share of the time); backlog ${int(backlog)}`;
    }
    for (const [, edge] of Object.entries(drawn.edges)) {
      const r = (history[edge.from] || {}).emitted_rate || 0;
      edge.label.textContent = short(r) + "/s";
      edge.path.classList.toggle("flowing", r > 0);
      edge.path.setAttribute("stroke-width", (1.5 + Math.min(3, Math.log10(1 + r) * 0.8)).toFixed(2));
    }
  }

  function charts(history) {
    const box = document.getElementById("charts");
    for (const [comp, h] of Object.entries(history)) {
      let chart = box.querySelector(`[data-chart="${CSS.escape(comp)}"]`);
      if (!chart) {
        chart = el("div", {class: "chart", "data-chart": comp},
          el("div", {class: "head"}, el("b", {text: comp}), el("span", {text: ""})),
          el("svg:svg", {viewBox: "0 0 300 70", preserveAspectRatio: "none"}));
        box.append(chart);
      }
      const points = h.rates;
      const last = points.length ? points[points.length - 1][1] : 0;
      const peak = Math.max(1, ...points.map((p) => p[1]));
      chart.querySelector(".head span").textContent =
        `${short(last)}/s now · peak ${short(peak)}/s`;
      // t: seconds ago (negative); the window grows from one minute to five
      const span = Math.min(300, Math.max(60, points.length ? -points[0][0] : 60));
      const X = (t) => 300 + (t * 300) / span;
      const Y = (v) => 62 - (v / (peak * 1.1)) * 56;
      const line = points.map(([t, v]) => `${X(t).toFixed(1)},${Y(v).toFixed(1)}`).join(" ");
      const svg = chart.querySelector("svg");
      const area = points.length ? `${X(points[0][0])},62 ${line} ${X(points[points.length - 1][0])},62` : "";
      svg.replaceChildren(
        el("svg:line", {x1: 0, y1: 62, x2: 300, y2: 62}),
        el("svg:line", {x1: 0, y1: 34, x2: 300, y2: 34}),
        el("svg:polygon", {points: area}),
        el("svg:polyline", {points: line, "vector-effect": "non-scaling-stroke"}));
    }
  }

  function events(list) {
    const body = document.querySelector("#events tbody");
    document.getElementById("no-events").hidden = list.length > 0;
    body.replaceChildren(...list.slice().reverse().map((e) => el("tr", {class: e.level},
      el("td", {class: "lvl", text: e.time.slice(11)}),
      el("td", {class: "inst", text: e.instance}),
      el("td", {class: "num", text: e.seq === null ? "-" : String(e.seq)}),
      el("td", {class: "msg", text: e.message}))));
  }

  function header(status, age) {
    const badge = document.getElementById("state");
    badge.textContent = status.state;
    badge.className = "badge bg-" + status.state;
    document.getElementById("problems").replaceChildren(
      ...(status.problems || []).map((p) => el("li", {text: p})));
    setLive(age < 5, age < 5 ? "live · " + new Date().toLocaleTimeString()
      : `no fresh status for ${Math.round(age)}s`);
  }

  const source = new EventSource(base + "/events");
  source.onmessage = (message) => {
    const doc = JSON.parse(message.data);
    if (!doc.status) {
      setLive(false, doc.error || "waiting for the first status…");
      return;
    }
    header(doc.status, doc.age);
    table(doc.status);
    graph(doc.status, doc.history);
    charts(doc.history);
    events(doc.events);
  };
  source.onerror = () => setLive(false, "dashboard server unreachable; retrying");
}

if (document.body.dataset.page === "index") indexPage();
else topologyPage();
