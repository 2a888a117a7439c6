// The demo softphone: one page, the browser SDK, and the dev-only endpoints
// of this server (/dev/token, /dev/directory, /dev/messages, /dev/outbox).
//
// Every string that comes from the server or another user is put in the page
// with textContent (never innerHTML): an identity, a status text or a message
// body is shown exactly as typed, markup included, and never runs.

import { PresenceClient, PresenceError, connectPeer } from "/sdk/presence.js";

const DIRECTORY_POLL_MS = 3000;
const OUTBOX_POLL_MS = 2000;
const RECEIPT_POLL_MS = 1000;
const RECEIPT_POLLS = 60;
// Statuses after which a sent message's status no longer changes ("delivered"
// still can: it becomes "read").
const SETTLED = new Set(["read", "sent", "failed", "undelivered", "canceled"]);
const SUBSCRIBE_BATCH = 100; // the protocol's limit per subscribe frame

const $ = (id) => document.getElementById(id);

/** An element with a class, a text and a data-testid; children appended. */
function el(tag, { cls, text, testid } = {}, ...children) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  if (testid) node.dataset.testid = testid;
  node.append(...children);
  return node;
}

function clock(epochSeconds) {
  const d = epochSeconds === undefined ? new Date() : new Date(epochSeconds * 1000);
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

// -- errors ----------------------------------------------------------------

function showError(message) {
  const banner = $("error");
  banner.textContent = message;
  banner.hidden = !message;
}

function describe(err) {
  if (err instanceof PresenceError) return err.code ? `${err.message} (${err.code})` : err.message;
  return err && err.message ? err.message : String(err);
}

// -- dev endpoints ---------------------------------------------------------

async function api(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(data.message ? `${data.message} (${data.code})` : `${path}: HTTP ${res.status}`);
  return data;
}

const fetchToken = (identity) => api("POST", "/dev/token", { identity });

// -- state -----------------------------------------------------------------

const app = {
  client: null, // PresenceClient while signed in
  identity: null,
  rows: new Map(), // identity -> directory row
  subscribed: new Set(),
  timers: [],
  call: null, // the current Call (one at a time)
  answered: new WeakSet(), // calls that were answered
  peer: null, // { pc, dc, detach, stream }
};

// -- sign in / out ---------------------------------------------------------

function setConnState(state) {
  const pill = $("conn-state");
  pill.dataset.state = state;
  pill.textContent = state === "idle" || state === "closed" ? "signed out" : state;
}

function setSignedIn(signedIn) {
  $("identity").disabled = signedIn;
  $("signin").hidden = signedIn;
  $("signout").hidden = !signedIn;
  for (const id of ["status-set", "message-send"]) $(id).disabled = !signedIn;
  $("me").textContent = signedIn ? app.identity : "";
  $("directory-empty").hidden = signedIn;
}

async function signIn(identity) {
  showError("");
  $("signin").disabled = true;
  try {
    const first = await fetchToken(identity);
    let unused = first.token;
    const client = new PresenceClient({
      url: first.url,
      // The first token is the one just fetched; every later one (reconnects,
      // renewal ahead of expiry) is fetched fresh.
      token: async () => {
        if (unused) {
          const token = unused;
          unused = null;
          return token;
        }
        return (await fetchToken(identity)).token;
      },
      status: $("status").value,
      text: $("status-text").value,
      capabilities: ["messaging", "voice"],
    });
    client.on("state", setConnState);
    client.on("error", (err) => showError(describe(err)));
    client.on("presence", renderPresence);
    client.on("invite", onInvite);
    client.on("message", onMessage);
    client.on("closed", ({ reason, error }) => {
      // Closed by the server or a fatal error (a sign-out has already let go of it).
      if (app.client !== client) return;
      showError(`Disconnected: ${error ? describe(error) : reason || "closed"}`);
      signOut();
    });
    app.client = client;
    app.identity = identity;
    await client.connect();
    localStorage.setItem("demo.identity", identity);
    setSignedIn(true);
    await refreshDirectory();
    app.timers.push(setInterval(() => refreshDirectory().catch((e) => showError(describe(e))), DIRECTORY_POLL_MS));
  } catch (err) {
    showError(`Could not sign in: ${describe(err)}`);
    if (app.client) await app.client.close().catch(() => {});
    app.client = null;
    app.identity = null;
  } finally {
    $("signin").disabled = false;
  }
}

async function signOut() {
  if (app.call) await hangup();
  for (const t of app.timers) clearInterval(t);
  app.timers = [];
  const client = app.client;
  app.client = null;
  app.identity = null;
  if (client) await client.close().catch(() => {});
  app.rows.clear();
  app.subscribed.clear();
  $("directory").replaceChildren();
  setSignedIn(false);
  setConnState("closed");
}

// -- directory -------------------------------------------------------------

async function refreshDirectory() {
  const { identities } = await api("GET", "/dev/directory");
  const list = $("identity-list");
  list.replaceChildren(...identities.map((i) => el("option", { text: i.identity })));
  for (const entry of identities) ensureRow(entry);
  const fresh = identities.map((i) => i.identity).filter((n) => !app.subscribed.has(n));
  for (let i = 0; i < fresh.length && app.client; i += SUBSCRIBE_BATCH) {
    const batch = fresh.slice(i, i + SUBSCRIBE_BATCH);
    batch.forEach((n) => app.subscribed.add(n));
    const snapshots = await app.client.subscribe(batch);
    snapshots.forEach(renderPresence);
  }
}

function ensureRow({ identity, phone }) {
  let row = app.rows.get(identity);
  if (row) return row;
  const you = identity === app.identity;
  const name = el("span", { cls: "name", text: identity, testid: "name" });
  if (you) name.append(el("span", { cls: "you", text: "(you)" }));
  if (phone) name.append(el("span", { cls: "phone", text: phone, testid: "phone" }));
  const detail = el("span", { cls: "detail", text: "offline", testid: "presence" });
  const actions = el("span", { cls: "actions" });
  if (!you) {
    const call = el("button", { cls: "small primary", text: "Call", testid: "call" });
    call.type = "button";
    call.addEventListener("click", () => placeCall(identity));
    const message = el("button", { cls: "small", text: "Message", testid: "message" });
    message.type = "button";
    message.addEventListener("click", () => {
      $("message-to").value = identity;
      $("message-body").focus();
    });
    actions.append(call, message);
  }
  row = el("li", { cls: "person", testid: "person" }, el("span", { cls: "dot" }), name, actions, detail);
  row.dataset.identity = identity;
  row.dataset.status = "offline";
  app.rows.set(identity, row);
  // Kept sorted by identity, as the server lists them.
  const after = [...app.rows.keys()].sort().find((n) => n > identity);
  $("directory").insertBefore(row, after ? app.rows.get(after) : null);
  const known = app.client && app.client.presence(identity);
  if (known) renderPresence(known);
  return row;
}

function renderPresence(p) {
  const row = app.rows.get(p.identity) || ensureRow({ identity: p.identity });
  row.dataset.status = p.status;
  const detail = row.querySelector(".detail");
  detail.textContent = p.text ? `${p.status} — ${p.text}` : p.status;
}

// -- my status -------------------------------------------------------------

async function setStatus() {
  const status = $("status").value;
  const text = $("status-text").value;
  try {
    await app.client.setPresence({ status, text });
    $("status-note").textContent = `Set to ${status} at ${clock()}`;
  } catch (err) {
    showError(`Could not set the status: ${describe(err)}`);
  }
}

// -- calls -----------------------------------------------------------------

function setCall(state, { peer, reason } = {}) {
  const node = $("call-state");
  node.textContent = state;
  node.dataset.state = state;
  if (peer !== undefined) $("call-peer").textContent = peer;
  $("call-reason").textContent = reason || "";
  $("hangup").disabled = !["calling", "ringing", "answered", "connecting"].includes(state);
}

function setPcState(state) {
  const node = $("pc-state");
  node.textContent = state;
  node.dataset.state = state;
}

/** Microphone and camera when the machine has them; no media otherwise (the
 * call still has its data channel). */
async function openMedia() {
  const devices = navigator.mediaDevices;
  if (!devices || !devices.getUserMedia) {
    $("media-state").textContent = "none (no media devices here)";
    return null;
  }
  try {
    const kinds = new Set((await devices.enumerateDevices()).map((d) => d.kind));
    const want = { audio: kinds.has("audioinput"), video: kinds.has("videoinput") };
    if (!want.audio && !want.video) {
      $("media-state").textContent = "none (no microphone or camera)";
      return null;
    }
    const stream = await devices.getUserMedia(want);
    $("media-state").textContent = [want.audio && "audio", want.video && "video"].filter(Boolean).join(" + ");
    $("local-video").srcObject = stream;
    $("local-figure").hidden = !want.video;
    return stream;
  } catch (err) {
    $("media-state").textContent = `none (${err.name || "refused"})`;
    return null;
  }
}

/** A peer connection wired to the call; the caller side opens the "chat"
 * data channel, the callee side receives it. */
function startPeer(call, stream, initiator) {
  const pc = new RTCPeerConnection();
  const peer = { pc, dc: null, stream, detach: null };
  app.peer = peer;
  // Wired before anything that makes the connection want to negotiate.
  peer.detach = connectPeer(call, pc, { initiator });
  setPcState(pc.connectionState);
  pc.addEventListener("connectionstatechange", () => {
    if (app.peer === peer) setPcState(pc.connectionState);
  });
  pc.addEventListener("track", (event) => {
    $("remote-video").srcObject = event.streams[0] || new MediaStream([event.track]);
    if (event.track.kind === "video") $("remote-figure").hidden = false;
  });
  if (stream) for (const track of stream.getTracks()) pc.addTrack(track, stream);
  if (initiator) {
    wireChat(peer, pc.createDataChannel("chat"));
  } else {
    pc.addEventListener("datachannel", (event) => wireChat(peer, event.channel));
  }
  return peer;
}

function wireChat(peer, dc) {
  peer.dc = dc;
  const show = () => {
    if (app.peer !== peer) return;
    $("dc-state").textContent = dc.readyState;
    const open = dc.readyState === "open";
    $("chat-input").disabled = !open;
    $("chat-send").disabled = !open;
  };
  show();
  dc.addEventListener("open", show);
  dc.addEventListener("close", show);
  dc.addEventListener("message", (event) => addChat($("call-peer").textContent, String(event.data), false));
}

function addChat(who, text, mine) {
  const line = el("li", { cls: mine ? "mine" : "theirs", testid: "chat-line" }, el("span", { cls: "who", text: `${who}:` }), el("span", { text }));
  $("chat-log").append(line);
  line.scrollIntoView({ block: "nearest" });
}

function stopPeer() {
  const peer = app.peer;
  app.peer = null;
  if (!peer) return;
  if (peer.detach) peer.detach();
  if (peer.dc) peer.dc.close();
  peer.pc.close();
  if (peer.stream) for (const track of peer.stream.getTracks()) track.stop();
  setPcState("closed");
  $("dc-state").textContent = "closed";
  $("chat-input").disabled = true;
  $("chat-send").disabled = true;
  for (const side of ["local", "remote"]) {
    $(`${side}-video`).srcObject = null;
    $(`${side}-figure`).hidden = true;
  }
}

function resetCallView(peerName) {
  $("chat-log").replaceChildren();
  $("remote-caption").textContent = peerName;
  $("media-state").textContent = "—";
  $("dc-state").textContent = "—";
  setPcState("—");
  setCall("calling", { peer: peerName });
}

function watchCall(call) {
  call.on("progress", ({ status }) => {
    if (app.call === call && status === "ringing") setCall("ringing");
  });
  call.on("answered", () => {
    app.answered.add(call);
    if (app.call === call) setCall("answered");
  });
  call.on("ended", ({ reason } = {}) => endCall(call, reason));
}

// Why a call ended, for people; the SDK's reason is shown next to it.
const ENDINGS = {
  local_hangup: "you hung up",
  remote_hangup: "they hung up",
  connection_lost: "the connection was lost",
  caller_hangup: "the caller gave up",
  answered_elsewhere: "answered on another device",
  timeout: "nobody answered in time",
  rejected: "rejected",
  busy: "busy",
};

function endCall(call, reason) {
  if (app.call !== call) return;
  app.call = null;
  $("incoming").hidden = true;
  stopPeer();
  let why = ENDINGS[reason];
  if (!why && call.direction === "outgoing" && !app.answered.has(call)) {
    // The dial ended with nobody to answer: the account's fallback texts the
    // callee's phone, when there is one (see the outbox).
    why = "no answer; a missed-call SMS goes to their phone, if they have one";
  }
  setCall("ended", { reason: reason ? `Ended: ${why || reason} (${reason})` : "" });
}

async function placeCall(identity) {
  if (!app.client || app.call) return;
  showError("");
  resetCallView(identity);
  const stream = await openMedia();
  let call;
  try {
    call = await app.client.call(`client:${identity}`);
  } catch (err) {
    if (stream) for (const track of stream.getTracks()) track.stop();
    setCall("ended", { reason: `Could not call: ${describe(err)}` });
    return;
  }
  app.call = call;
  watchCall(call);
  startPeer(call, stream, true);
  if (call.status === "ended") endCall(call, call.endReason);
}

function onInvite(call) {
  if (app.call) {
    // One call at a time: the caller hears busy.
    call.reject("busy").catch(() => {});
    return;
  }
  app.call = call;
  const from = call.from.replace(/^client:/, "");
  resetCallView(from);
  setCall("ringing");
  $("incoming-from").textContent = from;
  $("incoming").hidden = false;
  watchCall(call);
}

async function accept() {
  const call = app.call;
  if (!call || call.direction !== "incoming") return;
  $("incoming").hidden = true;
  setCall("connecting");
  const stream = await openMedia();
  if (app.call !== call) {
    // The caller gave up while the devices opened.
    if (stream) for (const track of stream.getTracks()) track.stop();
    return;
  }
  startPeer(call, stream, false);
  try {
    await call.accept();
    setCall("answered");
  } catch (err) {
    endCall(call, `could not accept: ${describe(err)}`);
  }
}

async function reject() {
  const call = app.call;
  if (!call) return;
  $("incoming").hidden = true;
  try {
    await call.reject();
  } finally {
    endCall(call, "rejected");
  }
}

async function hangup() {
  const call = app.call;
  if (!call) return;
  try {
    await call.hangup();
  } catch (err) {
    showError(`Hang up: ${describe(err)}`);
  } finally {
    endCall(call, "local_hangup");
  }
}

function sendChat() {
  const input = $("chat-input");
  const text = input.value;
  const dc = app.peer && app.peer.dc;
  if (!text || !dc || dc.readyState !== "open") return;
  dc.send(text);
  addChat("me", text, true);
  input.value = "";
}

// -- in-app messages -------------------------------------------------------

function messageItem(testid, meta, body, state) {
  const badge = el("span", { cls: "state", text: state, testid: "state" });
  badge.dataset.state = state;
  const item = el("li", { testid }, el("span", { cls: "meta", text: meta, testid: "meta" }), badge, el("span", { cls: "body", text: body, testid: "body" }));
  item.dataset.state = state;
  return { item, badge };
}

function setBadge(item, badge, state) {
  badge.textContent = state;
  badge.dataset.state = state;
  item.dataset.state = state;
}

function onMessage(msg) {
  // The dev endpoint names the sending identity in the in-app payload (the
  // record itself comes from the dev number, for when it goes by SMS).
  const from = (msg.payload && typeof msg.payload.from === "string" ? msg.payload.from : msg.from).replace(/^client:/, "");
  const { item, badge } = messageItem("inbox-message", `from ${from} · ${clock()}`, msg.body, "unread");
  item.dataset.sid = msg.sid;
  const mark = el("button", { cls: "small mark", text: "Mark read", testid: "mark-read" });
  mark.type = "button";
  mark.addEventListener("click", async () => {
    mark.disabled = true;
    try {
      await msg.markRead();
      setBadge(item, badge, "read");
      mark.remove();
    } catch (err) {
      mark.disabled = false;
      showError(`Mark read: ${describe(err)}`);
    }
  });
  item.append(mark);
  $("inbox").prepend(item);
}

async function sendMessage() {
  const to = $("message-to").value.trim();
  const body = $("message-body").value;
  try {
    const sent = await api("POST", "/dev/messages", { from: app.identity, to, body });
    $("message-body").value = "";
    const { item, badge } = messageItem("sent-message", `to ${to} · ${clock()}`, body, sent.status);
    item.dataset.sid = sent.sid;
    $("sent").prepend(item);
    followReceipt(sent.sid, item, badge);
  } catch (err) {
    showError(`Could not send: ${describe(err)}`);
  }
}

/** Poll a sent message's status until it settles: queued, sending, then
 * delivered and read (in-app), or sent (by SMS, when the recipient was away). */
function followReceipt(sid, item, badge) {
  let polls = 0;
  const timer = setInterval(async () => {
    polls += 1;
    try {
      const record = await api("GET", `/dev/messages/${sid}`);
      const label = record.channel === "sms" && record.status === "sent" ? "sent by SMS" : record.status;
      setBadge(item, badge, label);
      if (SETTLED.has(record.status) || polls >= RECEIPT_POLLS) clearInterval(timer);
    } catch {
      clearInterval(timer);
    }
  }, RECEIPT_POLL_MS);
}

// -- outbox ----------------------------------------------------------------

let outboxShown = "";

async function refreshOutbox() {
  const { entries } = await api("GET", "/dev/outbox");
  const signature = entries.map((e) => `${e.message_sid}:${e.status}`).join(",");
  if (signature === outboxShown) return;
  outboxShown = signature;
  $("outbox").replaceChildren(
    ...entries.map((e) => {
      const { item } = messageItem("outbox-entry", `${clock(e.created)} · to ${e.to} · from ${e.from}`, e.body, e.status);
      item.dataset.to = e.to;
      return item;
    }),
  );
  $("outbox-empty").hidden = entries.length > 0;
}

// -- wiring ----------------------------------------------------------------

function start() {
  const params = new URLSearchParams(location.search);
  $("identity").value = params.get("identity") || localStorage.getItem("demo.identity") || "";
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const identity = $("identity").value.trim();
    if (identity) signIn(identity);
  });
  $("signout").addEventListener("click", () => signOut());
  $("status-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (app.client) setStatus();
  });
  $("accept").addEventListener("click", () => accept());
  $("reject").addEventListener("click", () => reject());
  $("hangup").addEventListener("click", () => hangup());
  $("chat-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sendChat();
  });
  $("message-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (app.client) sendMessage();
  });
  const outbox = () => refreshOutbox().catch((e) => showError(`Outbox: ${describe(e)}`));
  outbox();
  setInterval(outbox, OUTBOX_POLL_MS);
  document.body.dataset.ready = "true";
}

start();
