// The dashboard's panels: each takes the JSON of an endpoint and returns the
// nodes that show it. Pure rendering - no fetching, no timers - so that the
// main module decides when to redraw. Ages and durations that grow while the
// data stays the same are marked with data-since and advanced by ticker().

import { bars, lineChart, stackedBar } from "./chart.js";
import { h } from "./dom.js";
import * as fmt from "./format.js";

const PRESENCE_ORDER = ["available", "away", "busy", "dnd", "offline"];
const MESSAGE_ORDER = ["accepted", "scheduled", "queued", "sending", "sent", "delivered", "read", "received", "undelivered", "failed", "canceled"];
const CHANNEL_ORDER = ["app", "sms", "mms"];
const CHANNEL_LABEL = { app: "in-app", sms: "SMS", mms: "MMS" };

const empty = (text) => h("p", { class: "empty" }, text);
const pill = (text, cls, testid) => h("span", { class: ["pill", cls], testid }, text);
const sid = (value) => h("code", { class: "sid", title: value || "" }, fmt.shortSid(value));
const ordered = (counts, order) => [...order.filter((k) => k in counts), ...Object.keys(counts).filter((k) => !order.includes(k)).sort()];

/** A growing age ("3 min 2 s"): rendered now, advanced by ticker(). */
function since(epoch, suffix = "") {
  if (epoch == null) return h("span", {}, "—");
  return h("span", { class: "since", dataset: { since: epoch, suffix } });
}

/** Advance every data-since element to ``now`` (epoch seconds, server time). */
export function ticker(root, now) {
  for (const el of root.querySelectorAll("[data-since]")) {
    el.textContent = fmt.duration(now - Number(el.dataset.since)) + (el.dataset.suffix || "");
  }
}

function table(headers, rows, { testid, emptyText }) {
  if (!rows.length) return empty(emptyText);
  return h("table", { class: "data", testid },
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { class: x.startsWith("#") ? "num" : null }, x.replace(/^#/, ""))))),
    h("tbody", {}, rows),
  );
}

function stat(label, value, testid) {
  return h("div", { class: "stat" }, h("span", { class: "stat-value", testid }, value), h("span", { class: "stat-label" }, label));
}

// -- nodes -------------------------------------------------------------------------------

export function nodes(data) {
  const list = data.nodes;
  const total = list.reduce((n, x) => n + x.sessions, 0);
  return [
    h("div", { class: "stats" }, stat("nodes", String(list.length), "nodes-count"), stat("sessions", fmt.count(total), "sessions-total")),
    table(["Node", "Address", "Roles", "#Sessions", "Up"], list.map((n) =>
      h("tr", { testid: "node", dataset: { nodeId: n.node_id } },
        h("td", {}, sid(n.node_id), h("span", { class: "muted small" }, ` v${n.version}`)),
        h("td", {}, h("code", {}, n.address)),
        h("td", {}, n.roles.map((r) => pill(r, "role"))),
        h("td", { class: "num strong", testid: "node-sessions" }, String(n.sessions)),
        h("td", { class: "num muted" }, since(n.started)),
      )), { testid: "nodes-table", emptyText: "No node has announced itself." }),
  ];
}

// -- presence ----------------------------------------------------------------------------

export function presence(p) {
  const chips = PRESENCE_ORDER.filter((st) => p.by_status[st]).map((st) =>
    h("span", { class: ["chip", `st-${st}`], testid: "presence-count", dataset: { status: st } },
      h("span", { class: "dot" }), `${p.by_status[st]} ${st}`));
  const rows = p.identities.map((i) => {
    const first = i.sessions.reduce((t, x) => Math.min(t, x.connected_at), Infinity);
    return h("tr", { testid: "presence-row", dataset: { identity: i.identity, status: i.status } },
      h("td", { class: "identity" }, h("span", { class: ["dot", `st-${i.status}`] }), h("span", { testid: "presence-identity" }, i.identity),
        i.configured ? null : h("span", { class: "muted small", title: "not in the account's configured identities" }, " (ad hoc)")),
      h("td", {}, pill(i.status, `st-${i.status}`, "presence-status")),
      h("td", { class: "text", testid: "presence-text" }, i.text),
      h("td", { class: "num", testid: "presence-sessions" }, String(i.sessions.length)),
      h("td", { class: "muted" }, i.sessions.length ? since(first) : i.last_seen != null ? since(i.last_seen, " ago") : "never seen"),
    );
  });
  return [
    h("div", { class: "chips" }, chips, h("span", { class: "muted small" }, `${p.present} present · ${p.sessions} sessions`)),
    table(["Identity", "Status", "Text", "#Sessions", "Online for / last seen"], rows, { testid: "presence-table", emptyText: "No identities configured or present." }),
    p.truncated ? h("p", { class: "muted small" }, "More identities than shown (raise Identities).") : null,
  ];
}

// -- calls -------------------------------------------------------------------------------

const party = (c) => h("span", { class: "party" }, h("span", { testid: "call-from" }, c.from), h("span", { class: "arrow" }, " → "), h("span", { testid: "call-to" }, c.to));
const callCls = (status) => `cs-${status}`;
// A <Dial> makes a child call (a leg) per party dialled; both are call records.
const kind = (c) => h("td", { class: "muted", title: c.parent_call_sid ? `leg of ${c.parent_call_sid}` : "" }, c.parent_call_sid ? "dialled leg" : c.direction);

export function callsLive(calls) {
  const rows = calls.in_progress.map((c) =>
    h("tr", { testid: "call-live", dataset: { sid: c.sid, status: c.status } },
      h("td", {}, party(c)),
      h("td", {}, pill(c.status, callCls(c.status), "call-status")),
      kind(c),
      h("td", { class: "num" }, since(c.start_time ?? c.date_created)),
    ));
  return [
    table(["Call", "Status", "Kind", "#Since"], rows, { testid: "calls-live-table", emptyText: "No calls in progress." }),
    calls.in_progress_truncated ? h("p", { class: "muted small" }, "Only the newest calls of each status are listed.") : null,
  ];
}

export function callsRecent(calls) {
  const chips = Object.entries(calls.by_status).sort().map(([st, n]) => h("span", { class: ["chip", callCls(st)] }, `${n} ${st}`));
  const rows = calls.recent.map((c) =>
    h("tr", { testid: "call-recent", dataset: { sid: c.sid, status: c.status } },
      h("td", {}, party(c)),
      h("td", {}, pill(c.status, callCls(c.status), "call-status")),
      kind(c),
      h("td", { class: "num" }, c.duration == null ? "—" : fmt.duration(c.duration)),
      h("td", { class: "muted", title: fmt.fullTime(c.end_time) }, fmt.time(c.end_time ?? c.date_created)),
    ));
  return [
    h("div", { class: "chips" }, chips, h("span", { class: "muted small" }, `newest ${calls.counted} of at most ${calls.window} calls`)),
    table(["Call", "Outcome", "Kind", "#Duration", "Ended"], rows, { testid: "calls-recent-table", emptyText: "No finished calls yet." }),
  ];
}

// -- messages ----------------------------------------------------------------------------

export function messages(m) {
  const statusItems = ordered(m.by_status, MESSAGE_ORDER).map((st) => ({ key: st, label: st, value: m.by_status[st], cls: `ms-${st}` }));
  const channelItems = ordered(m.by_channel, CHANNEL_ORDER).map((ch) => ({ key: ch, label: CHANNEL_LABEL[ch] || ch, value: m.by_channel[ch], cls: `ch-${ch}` }));
  const rows = m.recent.map((r) =>
    h("tr", { testid: "message-row", dataset: { sid: r.sid, status: r.status, channel: r.channel } },
      h("td", { class: "muted", title: fmt.fullTime(r.date_created) }, fmt.time(r.date_created)),
      h("td", {}, h("span", { class: "muted small" }, r.direction === "inbound" ? "from " : "to "), r.direction === "inbound" ? r.from : r.to),
      h("td", {}, CHANNEL_LABEL[r.channel] || r.channel),
      h("td", {}, pill(r.status, `ms-${r.status}`, "message-status"), r.error_code ? h("span", { class: "muted small" }, ` ${r.error_code}`) : null),
      h("td", { class: "muted" }, r.provider || "—", r.fallback_reason ? h("span", { class: "small" }, ` (${r.fallback_reason})`) : null),
    ));
  return [
    h("p", { class: "muted small", testid: "messages-window" }, `Counted over the newest ${fmt.count(m.counted)} message${m.counted === 1 ? "" : "s"} (at most ${fmt.count(m.window)})`),
    h("div", { class: "two" },
      h("div", {}, h("h3", {}, "By status"), statusItems.length ? bars(statusItems, { testid: "messages-by-status", itemTestid: "message-status-bar", total: m.counted }) : empty("No messages.")),
      h("div", {}, h("h3", {}, "By channel"), channelItems.length ? bars(channelItems, { testid: "messages-by-channel", itemTestid: "message-channel-bar", total: m.counted }) : empty("No messages.")),
    ),
    h("h3", {}, "Newest"),
    table(["Time", "Party", "Channel", "Status", "Provider"], rows, { testid: "messages-table", emptyText: "No messages yet." }),
  ];
}

// -- routing -----------------------------------------------------------------------------

export function routing(r) {
  if (!r.providers.length) return empty("No provider has carried a message yet.");
  const x0 = r.since;
  const x1 = r.since + r.minutes * 60;
  const point = (m, y, text) => ({ x: m.minute + 30, y, title: `${fmt.hhmm(m.minute)} · ${text}` });
  const ratio = r.providers.map((p, i) => ({
    name: p.provider, colour: i,
    points: p.series.map((m) => point(m, m.delivered_ratio, `${fmt.percent(m.delivered_ratio)} delivered (${m.delivered} of ${m.delivered + m.undelivered + m.failed + m.rejected})`)),
  }));
  const latency = r.providers.map((p, i) => ({
    name: p.provider, colour: i,
    points: p.series.map((m) => point(m, m.mean_time_to_delivery, `${fmt.seconds(m.mean_time_to_delivery)} to delivery`)),
  }));
  const legend = h("div", { class: "legend" }, r.providers.map((p, i) => h("span", { class: ["key", `c${i % 8}`] }, h("span", { class: "swatch" }), p.provider)));
  const rows = r.providers.map((p, i) => {
    const t = p.totals;
    return h("tr", { testid: "routing-row", dataset: { provider: p.provider } },
      h("td", {}, h("span", { class: ["swatch", `c${i % 8}`] }), " ", h("strong", {}, p.provider), h("span", { class: "muted small" }, ` ${p.routes.join(", ")}`)),
      h("td", { class: "num" }, fmt.count(t.submitted)),
      h("td", { class: "num", testid: "routing-delivered" }, fmt.count(t.delivered)),
      h("td", { class: "num" }, fmt.count(t.undelivered + t.failed)),
      h("td", { class: "num" }, fmt.count(t.rejected)),
      h("td", { class: "num strong", testid: "routing-ratio" }, fmt.percent(t.delivered_ratio)),
      h("td", { class: "num" }, fmt.seconds(t.mean_time_to_delivery)),
    );
  });
  return [
    legend,
    h("div", { class: "two" },
      lineChart({ series: ratio, x0, x1, yMax: 1, yFormat: (v) => `${Math.round(v * 100)}%`, label: `Delivered ratio per minute (last ${r.minutes} min)`, testid: "chart-delivered-ratio" }),
      lineChart({ series: latency, x0, x1, yFormat: (v) => `${+v.toFixed(2)} s`, label: "Mean time to delivery per minute", testid: "chart-time-to-delivery" }),
    ),
    table(["Provider (routes)", "#Submitted", "#Delivered", "#Undeliv./failed", "#Rejected", "#Delivered ratio", "#Mean to delivery"], rows, { testid: "routing-table", emptyText: "" }),
  ];
}

// -- broadcasts --------------------------------------------------------------------------

export function broadcasts(list) {
  if (!list.length) return empty("No broadcasts yet.");
  return h("div", { class: "broadcasts" }, list.map((b) => {
    const parts = ordered(b.by_status, MESSAGE_ORDER).map((st) => ({ key: st, label: st, value: b.by_status[st], cls: `ms-${st}` }));
    const rows = b.access_stats.map((v) => {
      const fill = h("span", { class: "bar-fill open" });
      fill.style.width = `${((v.open_rate ?? 0) * 100).toFixed(1)}%`;
      return h("tr", { testid: "broadcast-version", dataset: { version: v.content_version } },
        h("td", {}, h("code", {}, v.content_version)),
        h("td", { class: "num" }, String(v.messages)),
        h("td", { class: "num" }, String(v.delivered)),
        h("td", { class: "num" }, `${v.links_opened_unique} / ${v.links_opened_total}`),
        h("td", { class: "rate" }, h("span", { class: "bar-track" }, fill), h("span", { class: "num", testid: "broadcast-open-rate" }, fmt.percent(v.open_rate))),
      );
    });
    const channels = Object.entries(b.by_channel).map(([c, n]) => `${n} ${CHANNEL_LABEL[c] || c}`).join(" · ");
    return h("article", { class: "broadcast", testid: "broadcast", dataset: { sid: b.sid } },
      h("header", {}, sid(b.sid), h("span", { class: "muted small" }, ` ${fmt.time(b.date_created)} · ${b.destinations} destinations · ${channels}`)),
      stackedBar(parts, { testid: "broadcast-status" }),
      h("div", { class: "chips" }, parts.map((p) => h("span", { class: ["chip", p.cls] }, `${p.value} ${p.label}`))),
      table(["Version", "#Messages", "#Delivered", "#Opened (unique / all)", "Open rate"], rows, { testid: "broadcast-stats", emptyText: "No access statistics." }),
    );
  }));
}
