// Small SVG charts drawn by hand: a line chart over time and horizontal bars.
// No library: the page has a strict CSP and no build step, and these two
// shapes are all the dashboard needs. Colours come from CSS classes
// (c0..c7, and the status classes), so the stylesheet owns the palette.

import { h, s } from "./dom.js";
import { hhmm } from "./format.js";

const W = 560;
const H = 190;
const M = { left: 48, right: 14, top: 12, bottom: 26 };

/** A "nice" upper bound for an axis: 1, 2, 2.5 or 5 times a power of ten. */
export function niceMax(value) {
  if (!(value > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 2.5, 5, 10]) if (value <= m * p) return m * p;
  return 10 * p;
}

/**
 * A line chart over time. ``series``: [{name, colour: 0..7, points: [{x: epoch s, y, title}]}].
 * Consecutive points at most ``gap`` seconds apart are joined; a longer gap
 * (a minute without outcomes) leaves the line open. Every point is also a
 * dot with a tooltip, so a lone point shows.
 */
export function lineChart({ series, x0, x1, yMax, yFormat, label, testid, gap = 60 }) {
  const top = yMax ?? niceMax(Math.max(0, ...series.flatMap((se) => se.points.map((p) => p.y))) * 1.1);
  const iw = W - M.left - M.right;
  const ih = H - M.top - M.bottom;
  const span = Math.max(1, x1 - x0);
  const X = (x) => M.left + ((x - x0) / span) * iw;
  const Y = (y) => M.top + ih - (Math.min(y, top) / top) * ih;

  const grid = [];
  for (let i = 0; i <= 4; i++) {
    const v = (top * i) / 4;
    grid.push(s("line", { class: "grid", x1: M.left, x2: W - M.right, y1: Y(v), y2: Y(v) }));
    grid.push(s("text", { class: "tick", x: M.left - 6, y: Y(v) + 4, "text-anchor": "end" }, yFormat(v)));
  }
  const ticks = 5;
  for (let i = 0; i <= ticks; i++) {
    const x = x0 + (span * i) / ticks;
    grid.push(s("text", { class: "tick", x: X(x), y: H - 8, "text-anchor": i === 0 ? "start" : i === ticks ? "end" : "middle" }, hhmm(x)));
  }

  const lines = series.map((se) => {
    const pts = se.points.filter((p) => p.y != null).sort((a, b) => a.x - b.x);
    let d = "";
    pts.forEach((p, i) => {
      const join = i > 0 && p.x - pts[i - 1].x <= gap;
      d += `${join ? "L" : "M"}${X(p.x).toFixed(1)},${Y(p.y).toFixed(1)}`;
    });
    return s("g", { class: ["series", `c${se.colour % 8}`], dataset: { series: se.name } },
      s("path", { class: "line", d }),
      pts.map((p) => s("circle", { class: "point", cx: X(p.x).toFixed(1), cy: Y(p.y).toFixed(1), r: 3.2 }, s("title", {}, p.title ?? yFormat(p.y)))),
    );
  });

  const empty = series.every((se) => se.points.every((p) => p.y == null));
  return h("figure", { class: "chart", testid },
    h("figcaption", {}, label),
    s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label, class: "chart-svg" },
      s("rect", { class: "plot", x: M.left, y: M.top, width: iw, height: ih }),
      grid,
      lines,
      empty ? s("text", { class: "empty-note", x: M.left + iw / 2, y: M.top + ih / 2, "text-anchor": "middle" }, "no outcomes in this window") : null,
    ),
  );
}

/** Horizontal bars: [{key, label, value, cls}]; widths relative to the largest. */
export function bars(items, { testid, itemTestid, total }) {
  const max = Math.max(1, ...items.map((i) => i.value));
  return h("div", { class: "bars", testid },
    items.map((item) => {
      const fill = h("span", { class: ["bar-fill", item.cls] });
      fill.style.width = `${((item.value / max) * 100).toFixed(1)}%`; // CSSOM, which the CSP allows
      const share = total ? ` · ${Math.round((item.value / total) * 100)}%` : "";
      return h("div", { class: "bar-row", testid: itemTestid, dataset: { key: item.key, value: item.value } },
        h("span", { class: "bar-label" }, item.label),
        h("span", { class: "bar-track" }, fill),
        h("span", { class: "bar-value", title: `${item.value}${share}` }, String(item.value)),
      );
    }),
  );
}

/** One bar split into parts (a broadcast's statuses): [{key, value, cls, label}]. */
export function stackedBar(parts, { testid }) {
  const total = parts.reduce((n, p) => n + p.value, 0) || 1;
  return h("div", { class: "stack", testid },
    parts.filter((p) => p.value > 0).map((p) => {
      const seg = h("span", { class: ["stack-part", p.cls], title: `${p.label}: ${p.value}` });
      seg.style.width = `${((p.value / total) * 100).toFixed(2)}%`;
      return seg;
    }),
  );
}
