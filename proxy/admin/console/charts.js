// Small SVG charts for the console: a line chart and a stacked bar chart.
// Series are told apart by dash patterns and fill patterns as well as colour, and every
// chart carries a text legend and an aria-label that says what it shows.
"use strict";

const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  let uid = 0;

  function el(tag, attrs, parent) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (parent) parent.appendChild(e);
    return e;
  }

  // An axis label: at most three significant digits, no trailing zeros.
  const tick = (v) => String(Number(v.toPrecision(3)));

  // A "nice" top for the y axis: 1, 2, 2.5 or 5 times a power of ten.
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function frame(container, opts, label) {
    container.textContent = "";
    const W = Math.max(280, Math.round(container.clientWidth || opts.width || 640));
    const H = opts.height || 220;
    const svg = el("svg", {
      viewBox: `0 0 ${W} ${H}`,
      class: "chart",
      role: "img",
      "aria-label": label,
      width: W,
      height: H,
    });
    el("title", {}, svg).textContent = label;
    const id = `c${++uid}`;
    const defs = el("defs", {}, svg);
    // Fill patterns: solid, hatched, dotted, cross-hatched, vertical lines, checks.
    const pats = [
      null,
      (p) => el("path", { d: "M0,8 L8,0", class: "pat-line" }, p),
      (p) => el("circle", { cx: 4, cy: 4, r: 1.6, class: "pat-dot" }, p),
      (p) => el("path", { d: "M0,0 L8,8 M0,8 L8,0", class: "pat-line" }, p),
      (p) => el("path", { d: "M4,0 L4,8", class: "pat-line" }, p),
      (p) => el("path", { d: "M0,4 L8,4", class: "pat-line" }, p),
    ];
    pats.forEach((draw, i) => {
      if (!draw) return;
      const p = el("pattern", {
        id: `${id}-p${i}`,
        width: 8,
        height: 8,
        patternUnits: "userSpaceOnUse",
      }, defs);
      el("rect", { width: 8, height: 8, class: `pat-bg b${i}` }, p);
      draw(p);
    });
    container.appendChild(svg);
    return { svg, W, H, id };
  }

  function legend(container, series, kind) {
    const ul = document.createElement("ul");
    ul.className = "legend";
    series.forEach((s, i) => {
      const li = document.createElement("li");
      const sw = el("svg", { viewBox: "0 0 28 12", width: 28, height: 12, "aria-hidden": "true" });
      if (kind === "line") {
        el("line", { x1: 1, y1: 6, x2: 27, y2: 6, class: `ln s${i}` }, sw);
        marker(sw, i, 14, 6);
      }
      else el("rect", { x: 1, y: 1, width: 26, height: 10, class: `bar b${i} swatch`, "data-i": i }, sw);
      li.appendChild(sw);
      li.appendChild(document.createTextNode(" " + s.name));
      ul.appendChild(li);
    });
    container.appendChild(ul);
    return ul;
  }

  // A point marker whose shape tells the series apart: circle, square, triangle, diamond.
  function marker(g, i, x, y) {
    const k = i % 4, r = 3.5;
    if (k === 0) return el("circle", { cx: x, cy: y, r, class: `mk s${i}` }, g);
    if (k === 1) return el("rect", { x: x - r, y: y - r, width: 2 * r, height: 2 * r, class: `mk s${i}` }, g);
    const d = k === 2
      ? `M${x},${y - r - 1} L${x + r + 1},${y + r} L${x - r - 1},${y + r} Z`
      : `M${x},${y - r - 1} L${x + r + 1},${y} L${x},${y + r + 1} L${x - r - 1},${y} Z`;
    return el("path", { d, class: `mk s${i}` }, g);
  }

  function yAxis(g, x0, x1, y0, y1, top, fmt) {
    for (let i = 0; i <= 4; i++) {
      const v = (top * i) / 4;
      const y = y1 - ((y1 - y0) * i) / 4;
      el("line", { x1: x0, x2: x1, y1: y, y2: y, class: "grid" }, g);
      const t = el("text", { x: x0 - 6, y: y + 4, class: "tick", "text-anchor": "end" }, g);
      t.textContent = fmt(v);
    }
  }

  // series: [{name, points: [[x, y], ...]}] (x: numbers, e.g. times in ms)
  function line(container, series, opts = {}) {
    const fmtY = opts.yFormat || tick;
    const fmtX = opts.xFormat || ((v) => String(v));
    const label = opts.label || "line chart";
    const { svg, W, H } = frame(container, opts, label);
    const L = 48, R = 10, T = 10, B = 24;
    const all = series.flatMap((s) => s.points);
    if (!all.length) {
      const t = el("text", { x: W / 2, y: H / 2, class: "empty", "text-anchor": "middle" }, svg);
      t.textContent = opts.empty || "no data yet";
      legend(container, series, "line");
      return;
    }
    const xs = all.map((p) => p[0]);
    let xmin = Math.min(...xs), xmax = Math.max(...xs);
    if (xmax === xmin) xmax = xmin + 1;
    const top = niceMax(Math.max(...all.map((p) => p[1] || 0)));
    const g = el("g", {}, svg);
    yAxis(g, L, W - R, T, H - B, top, fmtY);
    const px = (x) => L + ((x - xmin) / (xmax - xmin)) * (W - L - R);
    const py = (y) => H - B - ((y || 0) / top) * (H - T - B);
    for (const [x, anchor] of [[xmin, "start"], [(xmin + xmax) / 2, "middle"], [xmax, "end"]]) {
      const t = el("text", { x: px(x), y: H - 6, class: "tick", "text-anchor": anchor }, g);
      t.textContent = fmtX(x);
    }
    series.forEach((s, i) => {
      if (!s.points.length) return;
      const d = s.points.map((p, j) => `${j ? "L" : "M"}${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`).join(" ");
      el("path", { d, class: `ln s${i}` }, g);
      // Markers on every point of a short series, else on its latest point only.
      const marked = s.points.length <= 40 ? s.points : s.points.slice(-1);
      marked.forEach((p) => marker(g, i, px(p[0]), py(p[1])));
    });
    legend(container, series, "line");
  }

  // labels: ["00", "01", ...]; series: [{name, values: [n, ...]}], stacked.
  function bars(container, labels, series, opts = {}) {
    const fmtY = opts.yFormat || tick;
    const label = opts.label || "bar chart";
    const { svg, W, H, id } = frame(container, opts, label);
    const L = 48, R = 10, T = 10, B = 24;
    const totals = labels.map((_, j) => series.reduce((a, s) => a + (s.values[j] || 0), 0));
    if (!labels.length || !totals.some((v) => v > 0)) {
      const t = el("text", { x: W / 2, y: H / 2, class: "empty", "text-anchor": "middle" }, svg);
      t.textContent = opts.empty || "no messages in this range";
      legend(container, series, "bar");
      return;
    }
    const top = niceMax(Math.max(...totals));
    const g = el("g", {}, svg);
    yAxis(g, L, W - R, T, H - B, top, fmtY);
    const slot = (W - L - R) / labels.length;
    const bw = Math.max(1, slot * 0.78);
    const every = Math.ceil(labels.length / (opts.maxTicks || 12));
    labels.forEach((lab, j) => {
      let y = H - B;
      const x = L + j * slot + (slot - bw) / 2;
      series.forEach((s, i) => {
        const v = s.values[j] || 0;
        if (!v) return;
        const h = (v / top) * (H - T - B);
        y -= h;
        const r = el("rect", { x, y, width: bw, height: h, class: `bar b${i}` }, g);
        if (i % 6) r.setAttribute("fill", `url(#${id}-p${i % 6})`);
        el("title", {}, r).textContent = `${lab}: ${s.name} ${v}`;
      });
      if (j % every === 0) {
        const t = el("text", { x: x + bw / 2, y: H - 6, class: "tick", "text-anchor": "middle" }, g);
        t.textContent = lab;
      }
    });
    const ul = legend(container, series, "bar");
    // The legend's swatches use the same patterns as the bars.
    ul.querySelectorAll("rect.swatch").forEach((r) => {
      const i = Number(r.getAttribute("data-i"));
      if (i % 6) {
        const sw = r.ownerSVGElement;
        const defs = el("defs", {}, sw);
        const p = svg.querySelector(`#${id}-p${i % 6}`).cloneNode(true);
        p.setAttribute("id", `${id}-l${i}`);
        defs.appendChild(p);
        r.setAttribute("fill", `url(#${id}-l${i})`);
      }
    });
  }

  return { line, bars, niceMax };
})();
