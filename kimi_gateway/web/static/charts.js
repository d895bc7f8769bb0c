// Two small SVG charts (stacked bars; uptime strips): shorter than vendoring a chart library for them.
import { el } from "./common.js";

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  for (const child of children) node.append(child);
  return node;
}

function title(text) {
  const t = document.createElementNS(SVG, "title");
  t.textContent = text;
  return t;
}

// points: [{label, values: {key: number}}]; series: [{key, label, color}]. Bars stack in series order.
export function stackedBars(points, series, { height = 160, format = String } = {}) {
  const width = 720;
  const pad = { left: 44, bottom: 20, top: 6 };
  const totals = points.map((p) => series.reduce((sum, s) => sum + (p.values[s.key] || 0), 0));
  const max = Math.max(1, ...totals);
  const inner = height - pad.bottom - pad.top;
  const step = (width - pad.left) / Math.max(points.length, 1);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", class: "bars" });
  chart.append(
    svg("text", { x: pad.left - 6, y: pad.top + 10, "text-anchor": "end", "font-size": 11, fill: "#868e96" }, format(max)),
    svg("text", { x: pad.left - 6, y: height - pad.bottom, "text-anchor": "end", "font-size": 11, fill: "#868e96" }, "0"),
    svg("line", { x1: pad.left, x2: width, y1: height - pad.bottom, y2: height - pad.bottom, stroke: "#dee2e6" }),
  );
  points.forEach((point, i) => {
    let y = height - pad.bottom;
    const x = pad.left + i * step + step * 0.15;
    const w = Math.max(step * 0.7, 1);
    for (const s of series) {
      const value = point.values[s.key] || 0;
      if (!value) continue;
      const h = (value / max) * inner;
      y -= h;
      chart.append(
        svg(
          "rect",
          { x, y, width: w, height: Math.max(h, 0.5), fill: s.color, "data-series": s.key },
          title(`${point.label} · ${s.label}: ${format(value)}`),
        ),
      );
    }
    if (points.length <= 31 && (points.length <= 8 || i % Math.ceil(points.length / 8) === 0)) {
      chart.append(
        svg("text", { x: x + w / 2, y: height - 5, "text-anchor": "middle", "font-size": 10, fill: "#868e96" }, point.label),
      );
    }
  });
  const legend = el(
    "div",
    { class: "legend" },
    series.map((s) => {
      const swatch = el("i");
      swatch.style.background = s.color; // a CSSOM property, which the style policy allows
      return el("span", {}, swatch, s.label);
    }),
  );
  return el("div", { class: "chart" }, chart, legend);
}

// The last `n` UTC days as YYYY-MM-DD, oldest first: a daily chart's axis, so that days without requests
// show as gaps rather than disappearing.
export function lastDays(n) {
  const today = Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth(), new Date().getUTCDate());
  return Array.from({ length: n }, (_, i) => new Date(today - (n - 1 - i) * 86400000).toISOString().slice(0, 10));
}

export function uptimeColor(uptime) {
  if (uptime === null || uptime === undefined) return "var(--none)";
  if (uptime >= 99) return "var(--ok)";
  if (uptime >= 95) return "var(--warn)";
  return "var(--bad)";
}

// One strip per provider: a cell per bucket, coloured by the share of requests that did not fail.
export function uptimeStrip(points, label) {
  const width = 600;
  const height = 22;
  const step = width / Math.max(points.length, 1);
  const strip = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", class: "uptime" });
  points.forEach((p, i) => {
    const cell = svg(
      "rect",
      { x: i * step + 1, y: 0, width: Math.max(step - 2, 1), height, rx: 2, "data-uptime": p.uptime ?? "" },
      title(`${label(p)}: ${p.uptime === null || p.uptime === undefined ? "no requests" : p.uptime.toFixed(1) + "%"}`),
    );
    cell.style.fill = uptimeColor(p.uptime);
    strip.append(cell);
  });
  return strip;
}
