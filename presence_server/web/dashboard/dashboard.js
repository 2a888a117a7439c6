// The operator dashboard: picks an account, polls the operator endpoints every
// POLL_MS and redraws the panels whose data changed, in place. The browser
// sends the operator's Basic credentials it was given for this page along
// with every same-origin fetch, so this module never handles them.

import { byId, h, renderInto } from "./dom.js";
import * as fmt from "./format.js";
import * as panels from "./panels.js";

// Every 2 s, or ?refresh=<seconds> (0.5 to 60): slower for a wall screen of a
// big deployment, faster for a demo or a test.
const POLL_MS = (() => {
  const asked = Number(new URLSearchParams(location.search).get("refresh"));
  return asked >= 0.5 && asked <= 60 ? asked * 1000 : 2000;
})();
const ROUTING_MINUTES = 30;

const state = {
  account: null, // the selected AccountSid
  timer: null,
  seq: 0, // each poll's number: an older poll's answers are dropped
  clockSkew: 0, // server time - local time (seconds), from the last answer
};

class ApiFailure extends Error {
  constructor(status, body) {
    super(body && body.message ? `${body.message} (${body.code})` : `HTTP ${status}`);
    this.status = status;
  }
}

async function getJSON(path) {
  let response;
  try {
    // A server that stops answering must not stall the updates: give up after 10 s.
    response = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store", signal: AbortSignal.timeout(10000) });
  } catch (err) {
    const why = err.name === "TimeoutError" ? "the server did not answer within 10 s" : "the server is unreachable";
    throw new ApiFailure(0, { message: why, code: "network" });
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new ApiFailure(response.status, body);
  return body;
}

const serverNow = () => Date.now() / 1000 + state.clockSkew;

function setLive(ok, text) {
  const live = byId("live");
  live.classList.toggle("ok", ok);
  live.classList.toggle("down", !ok);
  live.dataset.state = ok ? "live" : "down";
  byId("live-text").textContent = text;
}

function showError(message) {
  const banner = byId("error-banner");
  banner.hidden = !message;
  banner.textContent = message || "";
}

// -- accounts ----------------------------------------------------------------------------

async function loadAccounts() {
  const { accounts } = await getJSON("/v1/Dashboard/Accounts");
  const picker = byId("account-picker");
  picker.replaceChildren(...accounts.map((a) => h("option", { value: a.sid, title: `${a.identities} identities, ${a.phone_numbers} numbers` }, `${a.friendly_name || "(unnamed)"} — ${a.sid}`)));
  const wanted = new URLSearchParams(location.search).get("account");
  state.account = accounts.some((a) => a.sid === wanted) ? wanted : accounts[0]?.sid ?? null;
  if (state.account) picker.value = state.account;
  picker.disabled = accounts.length < 2;
  if (!accounts.length) showError("No accounts are configured.");
}

function selectAccount(sid) {
  state.account = sid;
  const url = new URL(location.href);
  url.searchParams.set("account", sid);
  history.replaceState(null, "", url); // a reload or a shared link shows the same account
  for (const id of ["presence", "calls-live", "calls-recent", "messages", "broadcasts"]) delete byId(id).dataset.renderKey;
  poll();
}

// -- polling -----------------------------------------------------------------------------

async function poll() {
  clearTimeout(state.timer);
  const seq = ++state.seq;
  const account = state.account;
  const [nodes, view, routing] = await Promise.allSettled([
    getJSON("/v1/Nodes"),
    account ? getJSON(`/v1/Dashboard/Accounts/${encodeURIComponent(account)}`) : Promise.resolve(null),
    getJSON(`/v1/Dashboard/Routing?Minutes=${ROUTING_MINUTES}`),
  ]);
  if (seq !== state.seq) return; // an account switch started a newer poll meanwhile
  const failures = [nodes, view, routing].filter((r) => r.status === "rejected").map((r) => r.reason);

  if (nodes.status === "fulfilled") renderInto(byId("nodes"), nodes.value.nodes.map(({ age, last_heartbeat, ...n }) => n), () => panels.nodes(nodes.value));
  if (view.status === "fulfilled" && view.value) {
    const v = view.value;
    state.clockSkew = v.generated_at - Date.now() / 1000;
    byId("account-name").textContent = v.account.friendly_name || v.account.sid;
    renderInto(byId("presence"), v.presence, () => panels.presence(v.presence));
    renderInto(byId("calls-live"), v.calls.in_progress, () => panels.callsLive(v.calls));
    renderInto(byId("calls-recent"), [v.calls.recent, v.calls.by_status], () => panels.callsRecent(v.calls));
    renderInto(byId("messages"), v.messages, () => panels.messages(v.messages));
    renderInto(byId("broadcasts"), v.broadcasts, () => panels.broadcasts(v.broadcasts));
  }
  if (routing.status === "fulfilled") {
    const { now, ...stable } = routing.value; // 'now' moves every poll; the chart's frame moves by the minute
    renderInto(byId("routing"), stable, () => panels.routing(routing.value));
  }
  panels.ticker(document.body, serverNow());
  for (const [id, result] of [["nodes-panel", nodes], ["presence-panel", view], ["calls-panel", view], ["messages-panel", view], ["broadcasts-panel", view], ["routing-panel", routing]]) {
    byId(id).classList.toggle("stale", result.status === "rejected");
  }

  if (failures.length) {
    const auth = failures.find((f) => f.status === 401);
    showError(auth ? `Operator credentials refused: ${auth.message}` : `Update failed: ${failures[0].message}. Retrying…`);
    setLive(false, "retrying");
  } else {
    showError("");
    setLive(true, "live");
    const stamp = byId("last-updated");
    stamp.textContent = fmt.time(Date.now() / 1000);
    stamp.dataset.at = String(Date.now());
    stamp.dateTime = new Date().toISOString();
  }
  state.timer = setTimeout(poll, document.hidden ? POLL_MS * 5 : POLL_MS);
}

async function boot() {
  try {
    await loadAccounts();
  } catch (err) {
    showError(`Could not list the accounts: ${err.message}. Retrying…`);
    setLive(false, "retrying");
    setTimeout(boot, POLL_MS * 2);
    return;
  }
  poll();
}

byId("refresh-every").textContent = `${POLL_MS / 1000} s`;
byId("account-picker").addEventListener("change", (e) => selectAccount(e.target.value));
document.addEventListener("visibilitychange", () => { if (!document.hidden && state.account) poll(); });
setInterval(() => panels.ticker(document.body, serverNow()), 1000);
boot();
