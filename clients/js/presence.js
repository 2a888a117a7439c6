// presence.js: the browser SDK of presence-server. One ES module, no build
// step, no dependencies. It speaks the wire protocol of docs/protocol.md
// (subprotocol presence.v1.json): registration with an access token, presence
// and subscriptions, token renewal, reconnects that resume the session, calls
// with their signaling relay (and connectPeer() to wire an RTCPeerConnection
// to it), and in-app messages. README.md next to this file is the user guide;
// presence.d.ts declares the public API.

const SUBPROTOCOL = "presence.v1.json";

// Limits and syntaxes from docs/protocol.md, checked here so a bad argument is
// refused with a clear message before anything is sent (the server would
// refuse it too, but later, by number, and some refusals end the session).
const STATUSES = ["available", "away", "busy", "dnd"];
const IDENTITY_RE = /^[A-Za-z0-9][A-Za-z0-9_.@+:,-]{0,120}$/;
const E164_RE = /^\+[1-9][0-9]{1,14}$/;
const CAPABILITY_RE = /^[a-z][a-z0-9_-]{0,31}$/;
const SESSION_RE = /^SE[0-9a-f]{32}$/;
const MAX_TEXT = 256;
const MAX_CAPABILITIES = 16;
const MAX_IDENTITIES_PER_FRAME = 100;
const MAX_TOKEN = 8192;
const MAX_TO = 128;
const MAX_PARAMS = 20;
const MAX_PARAM_NAME = 64;
const MAX_PARAM_VALUE = 1024;
const REJECT_REASONS = ["rejected", "busy"];

// How many in-app message sids are remembered to drop redeliveries: a
// duplicate is a recent message sent again, never one a thousand messages old.
const SEEN_MESSAGES = 1024;

// The close code that follows each fatal error (docs/protocol.md, "Errors"),
// so a refused attempt can be judged before (or without) its close frame.
const FATAL_CLOSE_CODES = {
  10006: 4009, 10007: 4000, 10010: 4008, 10011: 4004, 10012: 4005, 10014: 4012, 10015: 4010,
  20104: 4002, 20110: 4003, 20151: 4003, 30004: 4013,
};
const TOKEN_ERROR_MIN = 20101;
const TOKEN_ERROR_MAX = 20115;

// Close codes after which reconnecting would repeat the failure or fight
// another client: 1000 (bye), 4010 (another connection resumed the session),
// and the "fix the client" ones (4000 protocol violation, 4009 and 1009 frame
// too large).
const FINAL_CLOSE_CODES = new Set([1000, 1009, 4000, 4009, 4010]);
// The token was refused (4001), expired (4002) or lacks a grant (4003): the
// same token would be refused again; only a token function can help.
const AUTH_CLOSE_CODES = new Set([4001, 4002, 4003]);
// Refusals of a register that a later attempt may get past.
const RETRYABLE_CODES = new Set([10009, 10014, 10016, 30004, 40500]);

const CLIENT_EVENTS = ["state", "registered", "presence", "invite", "message", "error", "closed", "token_updated"];
const CALL_EVENTS = ["progress", "answered", "signal", "ended", "warning", "media", "error"];

const DEFAULTS = {
  reconnect: { initial: 0.5, max: 30 },
  requestTimeout: 10,
  connectTimeout: 10,
  // Renew this long before expiry when the server's token_expiring warning
  // (60 s ahead by default) did not come: a fallback, so a little later.
  renewBefore: 45,
};

/** An error of this SDK: a refusal from the server (`code` from the error
 * table of docs/protocol.md) or a problem found on this side (`code` 0: a bad
 * argument, a method called in the wrong state, a lost connection, a timeout). */
export class PresenceError extends Error {
  constructor(message, { code = 0, fatal = false, closeCode = null, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "PresenceError";
    this.code = code;
    this.fatal = fatal;
    // The WebSocket close code that came (or, for a fatal error, will come) with it.
    this.closeCode = closeCode;
  }

  static fromFrame(frame) {
    const code = Number.isInteger(frame.code) ? frame.code : 0;
    const fatal = frame.fatal === true;
    const message = typeof frame.message === "string" && frame.message ? frame.message : "the server refused the request";
    return new PresenceError(message, { code, fatal, closeCode: fatal ? closeCodeOf(code) : null });
  }
}

function closeCodeOf(code) {
  if (code in FATAL_CLOSE_CODES) return FATAL_CLOSE_CODES[code];
  if (code >= TOKEN_ERROR_MIN && code <= TOKEN_ERROR_MAX) return 4001;
  return null;
}

// -- argument checks ------------------------------------------------------------------------

function typeName(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value;
}

function misuse(message) {
  return new PresenceError(message);
}

function isPlainObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function checkOptions(what, value, allowed) {
  if (value === undefined) return {};
  if (!isPlainObject(value)) throw new TypeError(`${what} must be an object, not ${typeName(value)}`);
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) throw new TypeError(`${what}: unknown option '${key}' (known: ${allowed.join(", ")})`);
  }
  return value;
}

function checkUrl(value) {
  if (typeof value !== "string") throw new TypeError(`url must be a string such as "ws://127.0.0.1:8080/v1/connect", not ${typeName(value)}`);
  let parsed;
  try {
    parsed = new URL(value);
  } catch {
    throw misuse(`url ${JSON.stringify(value)} is not a URL; use ws://host:port/v1/connect or wss://...`);
  }
  if (parsed.protocol !== "ws:" && parsed.protocol !== "wss:") {
    throw misuse(`url must use ws: or wss:, not ${parsed.protocol} (${JSON.stringify(value)})`);
  }
  return value;
}

function checkToken(value, where = "token") {
  if (typeof value !== "string") throw new TypeError(`${where} must be a string (an access token), not ${typeName(value)}`);
  if (!value) throw misuse(`${where} is empty`);
  if (value.length > MAX_TOKEN) throw misuse(`${where} is longer than ${MAX_TOKEN} characters`);
  return value;
}

function checkStatus(value) {
  if (typeof value !== "string") throw new TypeError(`status must be a string, not ${typeName(value)}`);
  if (!STATUSES.includes(value)) {
    throw misuse(`status must be one of ${STATUSES.join(", ")}, not ${JSON.stringify(value)} (offline is what an absent identity is)`);
  }
  return value;
}

function checkText(value) {
  if (typeof value !== "string") throw new TypeError(`text must be a string, not ${typeName(value)}`);
  // The server counts characters (code points), not UTF-16 units.
  const length = [...value].length;
  if (length > MAX_TEXT) throw misuse(`text is ${length} characters long; at most ${MAX_TEXT}`);
  return value;
}

function checkPriority(value) {
  if (typeof value !== "number" || !Number.isInteger(value)) {
    throw new TypeError(`priority must be an integer, not ${typeof value === "number" ? value : typeName(value)}`);
  }
  if (value < -128 || value > 127) throw misuse(`priority must be from -128 to 127, not ${value}`);
  return value;
}

function checkCapabilities(value) {
  if (!Array.isArray(value)) throw new TypeError(`capabilities must be an array of names, not ${typeName(value)}`);
  for (const item of value) {
    if (typeof item !== "string" || !CAPABILITY_RE.test(item)) {
      throw misuse(`capability ${JSON.stringify(item)} is not a name of 1-32 lowercase letters, digits, _ or -, starting with a letter`);
    }
  }
  const unique = [...new Set(value)];
  if (unique.length > MAX_CAPABILITIES) throw misuse(`at most ${MAX_CAPABILITIES} capabilities, not ${unique.length}`);
  return unique;
}

function identityProblem(value) {
  if (typeof value !== "string") return `an identity must be a string, not ${typeName(value)}`;
  if (!value) return "an identity must not be empty";
  if (value.length > 121) return "an identity is at most 121 characters";
  if (value.toLowerCase().startsWith("client:")) return "an identity must not start with 'client:' (that is the address form)";
  if (!IDENTITY_RE.test(value)) return "an identity holds only letters, digits and _ - . @ + : , and starts with a letter or digit";
  return null;
}

function checkIdentities(value, what) {
  if (!Array.isArray(value)) {
    throw new TypeError(`${what}() takes an array of identities, such as ${what}(["bob", "carol"]), not ${typeName(value)}`);
  }
  if (value.length === 0) throw misuse(`${what}() needs at least one identity`);
  for (const item of value) {
    const problem = identityProblem(item);
    if (problem) {
      const err = typeof item === "string" ? misuse(`${what}(): ${JSON.stringify(item)}: ${problem}`) : new TypeError(`${what}(): ${problem}`);
      throw err;
    }
  }
  return [...new Set(value)];
}

function checkDestination(value) {
  if (typeof value !== "string") throw new TypeError(`call(): to must be a string ("client:bob", "bob" or "+15551230001"), not ${typeName(value)}`);
  if (value.length > MAX_TO) throw misuse(`call(): to is longer than ${MAX_TO} characters`);
  if (E164_RE.test(value)) return value;
  const name = value.toLowerCase().startsWith("client:") ? value.slice(7) : value;
  const problem = identityProblem(name);
  if (problem) throw misuse(`call(): to ${JSON.stringify(value)} is not "client:<identity>", an identity or an E.164 number: ${problem}`);
  return value;
}

function checkParams(value) {
  if (value === undefined || value === null) return {};
  if (!isPlainObject(value)) throw new TypeError(`call(): params must be an object of string values, not ${typeName(value)}`);
  const entries = Object.entries(value);
  if (entries.length > MAX_PARAMS) throw misuse(`call(): params holds ${entries.length} entries; at most ${MAX_PARAMS}`);
  for (const [name, item] of entries) {
    if (name.length < 1 || name.length > MAX_PARAM_NAME) throw misuse(`call(): params name ${JSON.stringify(name)} must be 1 to ${MAX_PARAM_NAME} characters`);
    if (typeof item !== "string") throw new TypeError(`call(): params[${JSON.stringify(name)}] must be a string, not ${typeName(item)}`);
    if (item.length > MAX_PARAM_VALUE) throw misuse(`call(): params[${JSON.stringify(name)}] is longer than ${MAX_PARAM_VALUE} characters`);
  }
  return { ...value };
}

function checkSeconds(name, value, { allowZero = false } = {}) {
  if (typeof value !== "number" || !Number.isFinite(value)) throw new TypeError(`${name} must be a number of seconds, not ${typeName(value)}`);
  if (value < 0 || (!allowZero && value === 0)) throw misuse(`${name} must be ${allowZero ? ">= 0" : "> 0"} seconds, not ${value}`);
  return value;
}

function checkBoolean(name, value) {
  if (typeof value !== "boolean") throw new TypeError(`${name} must be true or false, not ${typeName(value)}`);
  return value;
}

function checkPresenceFields(fields, what) {
  const out = {};
  if (fields.status !== undefined) out.status = checkStatus(fields.status);
  if (fields.text !== undefined) out.text = checkText(fields.text);
  if (fields.priority !== undefined) out.priority = checkPriority(fields.priority);
  if (fields.capabilities !== undefined) out.capabilities = checkCapabilities(fields.capabilities);
  return out;
}

// -- helpers ---------------------------------------------------------------------------------

const now = () => performance.now();

/** The payload of our own token (read, not verified: the server verifies). */
function tokenClaims(token) {
  try {
    const part = token.split(".")[1];
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((part.length + 3) % 4);
    const claims = JSON.parse(atob(b64));
    return isPlainObject(claims) ? claims : null;
  } catch {
    return null;
  }
}

/** What a client declares when its app did not say: in-app messages, and
 * calls when its token may receive them (the server refuses "voice" without
 * that grant, with 20150). */
function defaultCapabilities(token) {
  const claims = tokenClaims(token);
  const incoming = claims?.grants?.voice?.incoming?.allow === true;
  return incoming ? ["voice", "messaging"] : ["messaging"];
}

function utf8Length(text) {
  return new TextEncoder().encode(text).length;
}

// Errors thrown by the application's handlers must not break the SDK: they
// are rethrown on their own, so they still show in the console.
function reportLater(err) {
  setTimeout(() => {
    throw err;
  }, 0);
}

class Emitter {
  constructor(owner, events) {
    this._owner = owner;
    this._events = events;
    this._handlers = new Map(events.map((e) => [e, new Set()]));
  }

  on(event, handler) {
    if (!this._events.includes(event)) {
      throw new TypeError(`${this._owner}.on(): unknown event ${JSON.stringify(event)} (known: ${this._events.join(", ")})`);
    }
    if (typeof handler !== "function") throw new TypeError(`${this._owner}.on(${JSON.stringify(event)}): the handler must be a function, not ${typeName(handler)}`);
    // A wrapper, so the same function added twice is called twice and removed once per off().
    const entry = (...args) => handler(...args);
    this._handlers.get(event).add(entry);
    return () => this._handlers.get(event).delete(entry);
  }

  has(event) {
    return this._handlers.get(event).size > 0;
  }

  emit(event, ...args) {
    for (const handler of [...this._handlers.get(event)]) {
      try {
        handler(...args);
      } catch (err) {
        reportLater(err);
      }
    }
  }
}

// -- the heartbeat clock -------------------------------------------------------------------------
//
// Background tabs throttle timers: Chrome's intensive throttling runs chained
// timers of a page hidden for 5 minutes once a minute, which is longer than
// the server's idle timeout (60 s). Timers in a dedicated Worker are not
// throttled that way, so the client's clock ticks in a tiny Worker made from
// a Blob URL. A page whose Content-Security-Policy does not allow
// `worker-src blob:` refuses that Worker; the clock then falls back to
// setInterval, silently (a foreground tab loses nothing).

const TICK_WORKER_SOURCE = "let t=0;onmessage=e=>{clearInterval(t);t=e.data>0?setInterval(()=>postMessage(0),e.data):0};";
let tickWorkerUrl = null; // one Blob URL per page, for every client

class Ticker {
  constructor(onTick) {
    this._onTick = onTick;
    this._worker = null;
    this._interval = 0;
    this._watchdog = 0;
    this._ms = 0;
    this._ticked = false;
    this.kind = "stopped"; // "worker" | "interval" | "stopped"
  }

  start(ms) {
    if (this.kind !== "stopped" && ms === this._ms) return;
    this._ms = ms;
    if (this.kind === "worker") {
      this._worker.postMessage(ms);
      return;
    }
    if (this.kind === "interval") {
      clearInterval(this._interval);
      this._interval = setInterval(this._onTick, ms);
      return;
    }
    if (!this._startWorker(ms)) this._fallback();
  }

  _startWorker(ms) {
    if (typeof Worker !== "function" || typeof Blob !== "function" || typeof URL.createObjectURL !== "function") return false;
    let worker;
    try {
      tickWorkerUrl ??= URL.createObjectURL(new Blob([TICK_WORKER_SOURCE], { type: "text/javascript" }));
      worker = new Worker(tickWorkerUrl);
    } catch {
      return false; // refused synchronously, e.g. by the page's CSP
    }
    worker.onmessage = () => {
      this._ticked = true;
      this._onTick();
    };
    worker.onerror = (event) => {
      // Refused while loading (a CSP may do it asynchronously): fall back.
      event.preventDefault();
      if (this._worker === worker) this._fallback();
    };
    worker.postMessage(ms);
    this._worker = worker;
    this._ticked = false;
    this.kind = "worker";
    // A Worker that neither ticks nor fails would stop the heartbeat: give it a few ticks' time.
    clearTimeout(this._watchdog);
    this._watchdog = setTimeout(() => {
      if (this._worker === worker && !this._ticked) this._fallback();
    }, Math.max(ms * 3, 3000));
    return true;
  }

  _fallback() {
    if (this._worker) {
      this._worker.terminate();
      this._worker = null;
    }
    clearTimeout(this._watchdog);
    clearInterval(this._interval);
    this._interval = setInterval(this._onTick, this._ms);
    this.kind = "interval";
  }

  stop() {
    if (this._worker) this._worker.terminate();
    this._worker = null;
    clearTimeout(this._watchdog);
    clearInterval(this._interval);
    this.kind = "stopped";
  }
}

// -- one WebSocket ---------------------------------------------------------------------------------

/** One WebSocket and the requests waiting for an answer on it. A reconnect
 * makes a new one; frames of an old one are ignored. */
class Connection {
  constructor(client, ws) {
    this.client = client;
    this.ws = ws;
    this.pending = new Map(); // id -> {resolve, reject, cancelTimer, onAnswer}
    this.info = null; // the `registered` frame, once registered
    this.fatal = null; // the fatal error the server sent before closing
    this.retryAfter = 0; // seconds, from a `reconnect` frame
    this.lastRx = now();
    this.lastPing = now();
    this.ended = false;
    this.closeCode = null;
    this.closeReason = "";
  }

  get maxFrameBytes() {
    return this.info?.max_frame_bytes || 65536;
  }

  /** Send a frame; throws PresenceError when it cannot go (closed, too big). */
  send(frame) {
    if (this.ended || this.ws.readyState !== WebSocket.OPEN) {
      throw new PresenceError(`cannot send '${frame.type}': the connection is closed`, { closeCode: this.closeCode });
    }
    const data = JSON.stringify(frame);
    // A frame over the limit makes the server close the whole session (4009).
    if (data.length * 3 > this.maxFrameBytes && utf8Length(data) > this.maxFrameBytes) {
      throw misuse(`the '${frame.type}' frame is ${utf8Length(data)} bytes; the server takes frames of at most ${this.maxFrameBytes} bytes`);
    }
    this.ws.send(data);
  }

  /** Send a frame with a fresh `id` and wait for the frame that answers it.
   * `onAnswer` runs as the answer is read, before any later frame. */
  request(frame, { timeout, onAnswer } = {}) {
    const id = this.client._nextId++;
    this.send({ ...frame, id });
    return new Promise((resolve, reject) => {
      const cancelTimer = this.client._after(timeout * 1000, () => {
        if (this.pending.delete(id)) reject(new PresenceError(`no answer to '${frame.type}' within ${timeout} s`));
      });
      this.pending.set(id, { resolve, reject, cancelTimer, onAnswer });
    });
  }

  answer(id, frame) {
    const entry = id === undefined ? undefined : this.pending.get(id);
    if (!entry) return false;
    this.pending.delete(id);
    entry.cancelTimer();
    let value = frame;
    try {
      if (entry.onAnswer) value = entry.onAnswer(frame);
    } catch (err) {
      entry.reject(err);
      return true;
    }
    entry.resolve(value);
    return true;
  }

  refuse(id, error) {
    const entry = id === undefined ? undefined : this.pending.get(id);
    if (!entry) return false;
    this.pending.delete(id);
    entry.cancelTimer();
    entry.reject(error);
    return true;
  }

  /** The socket is gone: every request still waiting fails. */
  end(code, reason) {
    if (this.ended) return false;
    this.ended = true;
    this.closeCode = code;
    this.closeReason = reason;
    const detail = reason ? `${code}: ${reason}` : `${code}`;
    for (const [id, entry] of this.pending) {
      entry.cancelTimer();
      entry.reject(this.fatal ?? new PresenceError(`the connection closed before an answer (code ${detail})`, { closeCode: code }));
      this.pending.delete(id);
    }
    return true;
  }

  abort(reason) {
    // Close it without waiting for the server's close frame: a stalled
    // socket would make the browser wait for it.
    try {
      this.ws.close(1000, reason.slice(0, 120));
    } catch {
      /* already closing */
    }
  }
}

// -- the client ------------------------------------------------------------------------------------

const CLIENT_OPTIONS = [
  "url", "token", "status", "text", "priority", "capabilities", "reconnect", "autoAck",
  "requestTimeout", "connectTimeout", "resume", "byeOnPageHide",
];

export class PresenceClient {
  constructor(options) {
    if (!isPlainObject(options)) throw new TypeError(`new PresenceClient(options): options must be an object with url and token, not ${typeName(options)}`);
    checkOptions("new PresenceClient()", options, CLIENT_OPTIONS);
    this._url = checkUrl(options.url);
    const token = options.token;
    if (typeof token === "function") {
      this._tokenFn = token;
      this._token = null;
    } else if (token === undefined) {
      throw new TypeError("new PresenceClient(): token is required: an access token string, or a function returning one (or a promise of one)");
    } else {
      this._tokenFn = null;
      this._token = checkToken(token);
    }
    this._desired = checkPresenceFields(options, "new PresenceClient()");
    this._backoff = this._checkReconnect(options.reconnect);
    this._autoAck = options.autoAck === undefined ? true : checkBoolean("autoAck", options.autoAck);
    this._requestTimeout = options.requestTimeout === undefined ? DEFAULTS.requestTimeout : checkSeconds("requestTimeout", options.requestTimeout);
    this._connectTimeout = options.connectTimeout === undefined ? DEFAULTS.connectTimeout : checkSeconds("connectTimeout", options.connectTimeout);
    this._byeOnPageHide = options.byeOnPageHide === undefined ? true : checkBoolean("byeOnPageHide", options.byeOnPageHide);
    if (options.resume !== undefined && (typeof options.resume !== "string" || !SESSION_RE.test(options.resume))) {
      throw misuse(`resume must be a session id ("SE" and 32 hex digits, from client.session), not ${JSON.stringify(options.resume)}`);
    }
    this._resume = options.resume ?? null;

    this._events = new Emitter("PresenceClient", CLIENT_EVENTS);
    this._state = "idle";
    this._closing = false;
    this._conn = null; // the current Connection (registered or registering)
    this._info = null; // {session, account, identity, expires, resumed}
    this._expires = null; // the current token's expiry, epoch seconds (the server's word)
    this._tokenIssuedAt = null; // epoch seconds: the token's nbf/iat, else when we got it
    this._nextId = 1;
    this._attempts = 0; // reconnect attempts since the last registration
    this._subscriptions = new Set();
    this._presences = new Map(); // identity -> the latest presence object
    this._calls = new Map(); // call sid -> Call (not ended)
    this._seen = new Map(); // message sid -> true, oldest first (bounded)
    this._waiters = new Set(); // requests waiting for a registration
    this._deadlines = new Set();
    this._renewing = false;
    this._cancelRenewal = () => {};
    this._wake = null; // ends a reconnect back-off early
    this._connecting = null; // the promise of a connect() in progress
    this._ticker = new Ticker(() => this._tick());
    this._onPageHide = () => this._byeNow();
    this._onOnline = () => this._wake?.();
  }

  _checkReconnect(value) {
    if (value === undefined || value === true) return { ...DEFAULTS.reconnect };
    if (value === false) return null;
    checkOptions("reconnect", value, ["initial", "max"]);
    // Not 0: a server that refuses connections would be hammered without pause.
    const initial = value.initial === undefined ? DEFAULTS.reconnect.initial : checkSeconds("reconnect.initial", value.initial);
    const max = value.max === undefined ? Math.max(DEFAULTS.reconnect.max, initial) : checkSeconds("reconnect.max", value.max);
    if (max < initial) throw misuse(`reconnect.max (${max}) must not be less than reconnect.initial (${initial})`);
    return { initial, max };
  }

  get state() {
    return this._state;
  }

  get identity() {
    return this._info?.identity;
  }

  get account() {
    return this._info?.account;
  }

  get session() {
    return this._info?.session;
  }

  /** The current token's expiry (epoch seconds), as the server reported it. */
  get expires() {
    return this._expires ?? undefined;
  }

  /** The identities subscribed to (kept across reconnects). */
  get subscriptions() {
    return [...this._subscriptions];
  }

  /** How the heartbeat clock runs: "worker", "interval" (fallback) or "stopped". */
  get heartbeatClock() {
    return this._ticker.kind;
  }

  on(event, handler) {
    return this._events.on(event, handler);
  }

  presence(identity) {
    const problem = identityProblem(identity);
    if (problem) throw typeof identity === "string" ? misuse(`presence(): ${problem}`) : new TypeError(`presence(): ${problem}`);
    const p = this._presences.get(identity);
    return p === undefined ? undefined : structuredClone(p);
  }

  // -- connecting ------------------------------------------------------------------------------

  /** Register; resolves with {session, account, identity, expires, resumed}. */
  connect() {
    if (this._state === "closed") return Promise.reject(misuse("connect(): the client is closed; make a new PresenceClient"));
    if (this._connecting) return this._connecting;
    if (this._state !== "idle") return Promise.resolve({ ...this._info });
    this._setState("connecting");
    this._ticker.start(1000);
    if (typeof addEventListener === "function") {
      if (this._byeOnPageHide) addEventListener("pagehide", this._onPageHide);
      addEventListener("online", this._onOnline);
    }
    this._connecting = this._firstConnect().finally(() => {
      this._connecting = null;
    });
    return this._connecting;
  }

  async _firstConnect() {
    let conn;
    try {
      const token = await this._fetchToken(false);
      if (this._closing) throw misuse("connect(): close() was called while connecting");
      conn = await this._attempt(token, this._resume);
    } catch (err) {
      const error = err instanceof PresenceError ? err : new PresenceError(`connect() failed: ${err?.message ?? err}`, { cause: err });
      if (!this._closing) this._finish({ code: error.closeCode, reason: error.message, error, report: false });
      throw error;
    }
    if (this._closing) throw misuse("connect(): close() was called while connecting");
    this._adopt(conn);
    return { ...this._info };
  }

  /** A token to register with: the current one while it is good for a
   * while (sparing the backend a request per reconnect attempt), else a new
   * one from the token function. */
  async _fetchToken(fresh) {
    if (!this._tokenFn) return this._token;
    const nearExpiry = this._expires !== null && this._expires - Date.now() / 1000 < DEFAULTS.renewBefore;
    if (this._token && !fresh && !nearExpiry) return this._token;
    let value;
    try {
      value = await this._tokenFn();
    } catch (err) {
      throw new PresenceError(`the token function failed: ${err?.message ?? err}`, { cause: err });
    }
    try {
      checkToken(value, "the token function's result");
    } catch (err) {
      throw new PresenceError(err.message, { cause: err });
    }
    // The new token's expiry is the server's to say (at registration or
    // in token_updated); until then `expires` still describes the session's.
    this._token = value;
    const claims = tokenClaims(value);
    const issued = claims && (typeof claims.nbf === "number" ? claims.nbf : claims.iat);
    this._tokenIssuedAt = typeof issued === "number" ? issued : Date.now() / 1000;
    return value;
  }

  /** Open a WebSocket and register on it; resolves with the registered
   * Connection, rejects with a PresenceError (closeCode set when it closed). */
  _attempt(token, resume) {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WebSocket(this._url, SUBPROTOCOL);
      } catch (err) {
        reject(new PresenceError(`could not open ${this._url}: ${err.message}`, { cause: err }));
        return;
      }
      const conn = new Connection(this, ws);
      this._conn = conn;
      let settled = false;
      const fail = (error) => {
        if (settled) return;
        settled = true;
        cancelTimer();
        if (!conn.ended) conn.abort("register failed");
        conn.end(error.closeCode ?? 1006, error.message);
        if (this._conn === conn) this._conn = null;
        reject(error);
      };
      const cancelTimer = this._after(this._connectTimeout * 1000, () => {
        fail(new PresenceError(`no registration within ${this._connectTimeout} s (${this._url})`, { closeCode: 1006 }));
      });
      ws.onmessage = (event) => this._onData(conn, event.data);
      ws.onerror = () => {}; // the close event that follows says what happened
      ws.onclose = (event) => {
        if (!settled) {
          const detail = event.reason ? `${event.code}: ${event.reason}` : `${event.code}`;
          fail(conn.fatal ?? new PresenceError(`the connection to ${this._url} closed before registration (code ${detail})`, { closeCode: event.code }));
          return;
        }
        this._onClose(conn, event.code, event.reason);
      };
      ws.onopen = () => {
        const frame = { type: "register", token, ...this._desired };
        frame.capabilities ??= defaultCapabilities(token);
        if (resume) frame.resume = resume;
        let answer;
        try {
          answer = conn.request(frame, { timeout: this._connectTimeout });
        } catch (err) {
          fail(err);
          return;
        }
        answer.then(
          (registered) => {
            if (settled) return;
            settled = true;
            cancelTimer();
            conn.info = registered;
            resolve(conn);
          },
          (err) => {
            // Not every refusal is fatal for the server (10005, 10016, 20150
            // leave the socket open for another register); for us the attempt is over.
            fail(err);
          },
        );
      };
    });
  }

  /** A registered connection becomes the current one. */
  _adopt(conn) {
    const r = conn.info;
    this._conn = conn;
    this._attempts = 0;
    this._info = { session: r.session, account: r.account, identity: r.identity, expires: r.expires, resumed: r.resumed === true };
    this._resume = r.session;
    this._expires = typeof r.expires === "number" ? r.expires : null;
    conn.lastPing = now();
    const heartbeat = typeof r.heartbeat === "number" && r.heartbeat > 0 ? r.heartbeat : 25;
    // Tick often enough that a ping is never much later than `heartbeat`.
    this._ticker.start(Math.min(1000, Math.max(100, heartbeat * 250)));
    this._armRenewal();
    this._setState("registered");
    for (const waiter of [...this._waiters]) waiter.resolve();
    if (this._subscriptions.size) this._resubscribe(conn);
    this._events.emit("registered", { ...this._info });
  }

  /** Subscribe the new connection to everything the old one had; the
   * snapshots are compared with what was known, so a change missed while
   * disconnected is delivered. */
  async _resubscribe(conn) {
    const identities = [...this._subscriptions];
    for (let i = 0; i < identities.length; i += MAX_IDENTITIES_PER_FRAME) {
      const chunk = identities.slice(i, i + MAX_IDENTITIES_PER_FRAME);
      try {
        await conn.request({ type: "subscribe", identities: chunk }, { timeout: this._requestTimeout, onAnswer: (f) => this._applySnapshot(f, chunk) });
      } catch (err) {
        if (conn.ended) return; // the next reconnect subscribes again
        this._reportError(err);
      }
    }
  }

  // -- heartbeat, stall detection and timers ------------------------------------------------------

  /** Run `fn` after `ms`: on a timer, and also on the heartbeat clock's tick
   * (whichever comes first), so a throttled timer in a background tab is
   * not what decides. Returns a function that cancels it. */
  _after(ms, fn) {
    const entry = { at: now() + ms, done: false, timer: 0 };
    entry.run = () => {
      if (entry.done) return;
      entry.done = true;
      clearTimeout(entry.timer);
      this._deadlines.delete(entry);
      fn();
    };
    entry.timer = setTimeout(entry.run, ms);
    this._deadlines.add(entry);
    return () => {
      entry.done = true;
      clearTimeout(entry.timer);
      this._deadlines.delete(entry);
    };
  }

  _tick() {
    const t = now();
    for (const entry of [...this._deadlines]) if (entry.at <= t) entry.run();
    const conn = this._conn;
    if (!conn || !conn.info || conn.ended || this._state !== "registered") return;
    const heartbeat = (conn.info.heartbeat > 0 ? conn.info.heartbeat : 25) * 1000;
    // The server answers every ping, so a live connection hears something at
    // least every heartbeat. Silence well past that is a dead socket (a
    // sleeping laptop, a NAT that forgot us) that TCP may not notice for
    // minutes: close it and reconnect.
    const stallAfter = heartbeat + Math.min(Math.max(heartbeat / 2, 2000), 10000);
    if (t - conn.lastRx > stallAfter) {
      const seconds = Math.round(stallAfter / 100) / 10;
      conn.abort("stalled");
      this._onClose(conn, 1006, `no frame from the server within ${seconds} s`);
      return;
    }
    if (t - conn.lastPing >= heartbeat - 50) {
      conn.lastPing = t;
      try {
        conn.send({ type: "ping" });
      } catch {
        /* closing: the close event follows */
      }
    }
  }

  // -- frames from the server ------------------------------------------------------------------------

  _onData(conn, data) {
    if (conn.ended) return; // an old socket's last frames
    conn.lastRx = now();
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      this._reportError(new PresenceError("the server sent a frame that is not JSON"));
      return;
    }
    if (!isPlainObject(frame) || typeof frame.type !== "string") {
      this._reportError(new PresenceError("the server sent a frame without a type"));
      return;
    }
    try {
      this._dispatch(conn, frame);
    } catch (err) {
      reportLater(err); // our bug; the session goes on
    }
  }

  _dispatch(conn, frame) {
    switch (frame.type) {
      case "registered":
      case "ok":
      case "pong":
      case "subscribed":
      case "token_updated":
        conn.answer(frame.id, frame);
        break;
      case "call_created":
        if (!conn.answer(frame.id, frame) && typeof frame.call === "string") {
          // Created after call() gave up waiting: nobody holds this call, so
          // end it rather than let it ring someone.
          try {
            conn.send({ type: "hangup", call: frame.call });
          } catch {
            /* the connection is going: the call ends with it */
          }
        }
        break;
      case "error": {
        const error = PresenceError.fromFrame(frame);
        if (error.fatal) conn.fatal = error; // explains the close that follows
        if (!conn.refuse(frame.id, error)) this._reportError(error);
        break;
      }
      case "presence_update":
        this._applyUpdate(frame);
        break;
      case "token_expiring":
        this._onTokenExpiring(frame);
        break;
      case "reconnect":
        if (typeof frame.retry_after === "number" && frame.retry_after >= 0) {
          conn.retryAfter = Math.min(frame.retry_after, this._backoff?.max ?? 30);
        }
        break;
      case "invite":
        this._onInvite(conn, frame);
        break;
      case "cancel":
      case "call_progress":
      case "signal":
      case "hangup":
      case "call_warning":
      case "call_media":
        this._calls.get(frame.call)?._onFrame(frame);
        break;
      case "message":
        this._onMessage(conn, frame);
        break;
      default:
        break; // a frame of a newer server: ignored, as the protocol asks
    }
  }

  _onClose(conn, code, reason) {
    if (!conn.end(code, reason)) return;
    if (this._conn !== conn) return;
    this._conn = null;
    this._cancelRenewal();
    for (const call of [...this._calls.values()]) call._end("connection_lost");
    if (this._closing || this._state === "closed") return;
    const error = conn.fatal;
    const renewable = this._tokenFn !== null;
    const auth = AUTH_CLOSE_CODES.has(code) || (error && AUTH_CLOSE_CODES.has(error.closeCode));
    const final = !this._backoff || FINAL_CLOSE_CODES.has(code) || (auth && !renewable);
    if (final) {
      const detail = reason ? `${code}: ${reason}` : `${code}`;
      this._finish({
        code,
        reason,
        error: error ?? (code === 1000 ? null : new PresenceError(`the connection closed (code ${detail})`, { closeCode: code })),
        report: true,
      });
      return;
    }
    this._setState("reconnecting");
    this._reconnect({ auth, retryAfter: conn.retryAfter });
  }

  /** Back off and reconnect until registered again, or until a refusal
   * that another attempt would only repeat. */
  async _reconnect({ auth, retryAfter }) {
    let fresh = auth; // the token was refused: the next attempt needs a new one
    let freshTried = false;
    let delay = retryAfter + this._nextDelay();
    while (!this._closing && this._state === "reconnecting") {
      await this._sleep(delay);
      if (this._closing || this._state !== "reconnecting") return;
      delay = this._nextDelay();
      let token;
      try {
        token = await this._fetchToken(fresh);
      } catch (err) {
        this._reportError(err); // the app's token source fails: worth knowing; retried
        continue;
      }
      if (fresh) freshTried = true;
      fresh = false;
      let conn;
      try {
        conn = await this._attempt(token, this._resume);
      } catch (err) {
        if (this._closing) return;
        const code = err.closeCode;
        const refusedToken = AUTH_CLOSE_CODES.has(code) || (err.code >= TOKEN_ERROR_MIN && err.code <= TOKEN_ERROR_MAX) || err.code === 20151;
        if (refusedToken) {
          // One more attempt with a new token; refused again, the backend
          // hands out tokens the server will not take: stop, don't loop.
          if (!this._tokenFn || freshTried) {
            this._finish({ code, reason: err.message, error: err, report: true });
            return;
          }
          fresh = true;
          continue;
        }
        if (FINAL_CLOSE_CODES.has(code) || (err.code && !RETRYABLE_CODES.has(err.code))) {
          this._finish({ code, reason: err.message, error: err, report: true });
          return;
        }
        continue; // the network, or a busy server: back off and try again
      }
      if (this._closing) {
        conn.abort("closed");
        return;
      }
      this._adopt(conn);
      return;
    }
  }

  /** Capped exponential backoff with full jitter: a uniformly random delay
   * up to the ceiling, so clients cut off together do not return together. */
  _nextDelay() {
    const { initial, max } = this._backoff;
    const ceiling = Math.min(max, initial * 2 ** this._attempts);
    this._attempts = Math.min(this._attempts + 1, 32);
    return Math.random() * ceiling;
  }

  _sleep(seconds) {
    return new Promise((resolve) => {
      const cancel = this._after(seconds * 1000, () => {
        this._wake = null;
        resolve();
      });
      // close(), or the browser coming back online, ends the wait early.
      this._wake = () => {
        cancel();
        this._wake = null;
        resolve();
      };
    });
  }

  // -- token renewal ---------------------------------------------------------------------------------

  _armRenewal() {
    this._cancelRenewal();
    if (!this._tokenFn || this._expires === null) return;
    const remaining = this._expires - Date.now() / 1000;
    if (remaining <= 0) return; // our clock is ahead of the server's; its warning still comes
    // The server's token_expiring comes first; this timer is the fallback.
    // Never sooner than half the remaining life, so a backend handing out
    // short tokens is not asked for one every few moments.
    const delay = Math.max(remaining - DEFAULTS.renewBefore, remaining / 2);
    this._cancelRenewal = this._after(delay * 1000, () => this._renew());
  }

  _onTokenExpiring(frame) {
    if (!this._tokenFn) {
      console.warn(`presence: the token expires in ${Math.round(frame.seconds_left)} s and cannot be renewed: give PresenceClient a token function`);
      return;
    }
    if (typeof frame.expires === "number" && this._expires !== null && frame.expires < this._expires) return; // about a replaced token
    const left = typeof frame.seconds_left === "number" ? frame.seconds_left : 0;
    const age = Date.now() / 1000 - (this._tokenIssuedAt ?? 0);
    if (age < left / 2) {
      // The token is younger than the warning period is long: the backend's
      // tokens live shorter than the server's warning, so it would warn again
      // right after each renewal. Renew at half the time left instead of spinning.
      this._cancelRenewal();
      this._cancelRenewal = this._after((left / 2 - age) * 1000, () => this._renew());
      return;
    }
    this._renew();
  }

  async _renew() {
    if (this._renewing || this._state !== "registered") return;
    this._renewing = true;
    const conn = this._conn;
    try {
      const token = await this._fetchToken(true);
      if (conn !== this._conn || conn.ended) return; // reconnected meanwhile: that register used the new token
      const reply = await conn.request({ type: "update_token", token }, { timeout: this._requestTimeout });
      if (typeof reply.expires === "number") this._expires = reply.expires;
      if (this._info) this._info.expires = this._expires;
      const dropped = Array.isArray(reply.unsubscribed) ? reply.unsubscribed : [];
      for (const identity of dropped) {
        // The new token no longer grants these; the server dropped them.
        this._subscriptions.delete(identity);
        this._presences.delete(identity);
      }
      this._armRenewal();
      this._events.emit("token_updated", { expires: this._expires, unsubscribed: dropped });
    } catch (err) {
      // A refused token is fatal: the connection closes and that path decides.
      if (this._closing || conn?.ended || err.fatal) return;
      this._reportError(err);
      // Try again in a while, while the token still lives.
      this._cancelRenewal();
      this._cancelRenewal = this._after(10000, () => this._renew());
    } finally {
      this._renewing = false;
    }
  }

  // -- requests --------------------------------------------------------------------------------------

  _checkUsable(what) {
    if (this._state === "idle") throw misuse(`${what}: call connect() first`);
    if (this._state === "closed" || this._closing) throw misuse(`${what}: the client is closed`);
  }

  /** Resolves with the registered connection; while (re)connecting, waits
   * for the registration (at most requestTimeout). */
  _registered(what) {
    this._checkUsable(what);
    if (this._state === "registered" && this._conn && !this._conn.ended) return Promise.resolve(this._conn);
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: () => {
          done();
          resolve(this._conn);
        },
        reject: (err) => {
          done();
          reject(err);
        },
      };
      const cancel = this._after(this._requestTimeout * 1000, () => {
        waiter.reject(new PresenceError(`${what}: not connected within ${this._requestTimeout} s (state ${this._state})`));
      });
      const done = () => {
        cancel();
        this._waiters.delete(waiter);
      };
      this._waiters.add(waiter);
    });
  }

  async _request(what, frame, onAnswer) {
    const conn = await this._registered(what);
    return conn.request(frame, { timeout: this._requestTimeout, onAnswer });
  }

  async setPresence(fields) {
    if (!isPlainObject(fields)) throw new TypeError(`setPresence() takes an object such as {status: "busy", text: "in a meeting"}, not ${typeName(fields)}`);
    checkOptions("setPresence()", fields, ["status", "text", "priority", "capabilities"]);
    const wanted = checkPresenceFields(fields, "setPresence()");
    if (Object.keys(wanted).length === 0) throw misuse("setPresence() needs at least one of status, text, priority, capabilities");
    this._checkUsable("setPresence()");
    await this._request("setPresence()", { type: "presence", ...wanted });
    // Kept for the next registration: a reconnect that cannot resume starts
    // a new session with what the app last set.
    Object.assign(this._desired, wanted);
  }

  async subscribe(identities) {
    const wanted = checkIdentities(identities, "subscribe");
    this._checkUsable("subscribe()");
    const snapshots = [];
    for (let i = 0; i < wanted.length; i += MAX_IDENTITIES_PER_FRAME) {
      const chunk = wanted.slice(i, i + MAX_IDENTITIES_PER_FRAME);
      snapshots.push(...(await this._request("subscribe()", { type: "subscribe", identities: chunk }, (f) => this._applySnapshot(f, chunk, true))));
    }
    return snapshots;
  }

  async unsubscribe(identities) {
    const gone = checkIdentities(identities, "unsubscribe");
    this._checkUsable("unsubscribe()");
    // Forgotten at once: no presence event for them from now on.
    for (const identity of gone) {
      this._subscriptions.delete(identity);
      this._presences.delete(identity);
    }
    // While reconnecting there is nothing to undo on the server: the next
    // connection subscribes only what is left.
    if (this._state !== "registered") return;
    for (let i = 0; i < gone.length; i += MAX_IDENTITIES_PER_FRAME) {
      await this._request("unsubscribe()", { type: "unsubscribe", identities: gone.slice(i, i + MAX_IDENTITIES_PER_FRAME) });
    }
  }

  async call(to, params) {
    const destination = checkDestination(to);
    const extra = checkParams(params);
    this._checkUsable("call()");
    const frame = { type: "call", to: destination };
    if (Object.keys(extra).length) frame.params = extra;
    const conn = await this._registered("call()");
    // Sent once, never again on another connection: placing a call is not
    // idempotent. The Call exists as call_created is read, before any later
    // frame about it.
    return conn.request(frame, {
      timeout: this._requestTimeout,
      onAnswer: (created) => {
        const call = new Call(this, conn, {
          sid: created.call,
          direction: "outgoing",
          from: `client:${this._info.identity}`,
          to: destination,
          params: extra,
          status: "initiated",
        });
        this._calls.set(call.sid, call);
        return call;
      },
    });
  }

  /** Say bye (the session ends at once, no grace period) and stop. */
  async close() {
    if (this._state === "closed") return;
    this._closing = true;
    this._wake?.();
    const conn = this._conn;
    if (conn && !conn.ended && conn.ws.readyState === WebSocket.OPEN) {
      try {
        conn.send({ type: "bye" });
      } catch {
        /* closing anyway */
      }
      // The server answers bye with close 1000; don't wait long for it.
      await new Promise((resolve) => {
        const cancel = this._after(2000, resolve);
        conn.ws.addEventListener("close", () => {
          cancel();
          resolve();
        });
      });
    }
    if (conn && !conn.ended) {
      try {
        conn.ws.close(1000, "bye");
      } catch {
        /* already closed */
      }
      conn.end(1000, "bye");
    }
    this._finish({ code: 1000, reason: "bye", error: null, report: false });
  }

  /** The page is going away: bye now (a closed tab leaves presence at once
   * instead of lingering through the grace period). */
  _byeNow() {
    if (this._state === "closed") return;
    this._closing = true;
    const conn = this._conn;
    if (conn && !conn.ended && conn.ws.readyState === WebSocket.OPEN) {
      try {
        conn.send({ type: "bye" });
      } catch {
        /* leaving anyway */
      }
    }
    if (conn) conn.end(1000, "bye");
    this._finish({ code: 1000, reason: "page hidden", error: null, report: false });
  }

  /** The client stops for good. */
  _finish({ code, reason, error, report }) {
    if (this._state === "closed") return;
    this._closing = true;
    this._cancelRenewal();
    this._wake?.();
    const conn = this._conn;
    this._conn = null;
    if (conn && !conn.ended) {
      conn.abort("closed");
      conn.end(code ?? 1000, reason ?? "");
    }
    for (const call of [...this._calls.values()]) call._end("connection_lost");
    const waitError = new PresenceError(`the client is closed${error ? `: ${error.message}` : ""}`, { cause: error ?? undefined });
    for (const waiter of [...this._waiters]) waiter.reject(waitError);
    for (const entry of [...this._deadlines]) {
      entry.done = true;
      clearTimeout(entry.timer);
    }
    this._deadlines.clear();
    this._ticker.stop();
    if (typeof removeEventListener === "function") {
      removeEventListener("pagehide", this._onPageHide);
      removeEventListener("online", this._onOnline);
    }
    this._setState("closed");
    if (report && error) this._reportError(error);
    this._events.emit("closed", { code: code ?? null, reason: reason ?? "", error: error ?? null });
  }

  _setState(state) {
    if (this._state === state) return;
    this._state = state;
    this._events.emit("state", state);
  }

  _reportError(error) {
    if (this._events.has("error")) this._events.emit("error", error);
    else console.warn("presence:", error);
  }

  // -- presence --------------------------------------------------------------------------------------

  _applySnapshot(frame, requested, adding = false) {
    const presences = Array.isArray(frame.presences) ? frame.presences : [];
    if (adding) for (const identity of requested) this._subscriptions.add(identity);
    const out = [];
    for (const raw of presences) {
      if (!isPlainObject(raw) || typeof raw.identity !== "string") continue;
      const presence = presenceObject(raw);
      out.push(structuredClone(presence));
      if (!this._subscriptions.has(presence.identity)) continue; // unsubscribed meanwhile
      const previous = this._presences.get(presence.identity);
      this._presences.set(presence.identity, presence);
      // A snapshot is the new baseline, even with a lower version (a
      // restarted server counts from the start again); it is an event unless
      // it is exactly what was known already.
      if (previous && previous.version === presence.version && sameState(previous, presence)) continue;
      this._events.emit("presence", structuredClone(presence));
    }
    return out;
  }

  _applyUpdate(frame) {
    if (typeof frame.identity !== "string" || !this._subscriptions.has(frame.identity)) return;
    const presence = presenceObject(frame);
    const previous = this._presences.get(presence.identity);
    // Updates come in version order; anything not newer is a duplicate.
    if (previous && !(presence.version > previous.version)) return;
    this._presences.set(presence.identity, presence);
    this._events.emit("presence", structuredClone(presence));
  }

  // -- calls -----------------------------------------------------------------------------------------

  _onInvite(conn, frame) {
    if (typeof frame.call !== "string") return;
    const call = new Call(this, conn, {
      sid: frame.call,
      parentSid: typeof frame.parent_call === "string" ? frame.parent_call : undefined,
      direction: "incoming",
      from: frame.from,
      to: frame.to,
      params: isPlainObject(frame.params) ? frame.params : {},
      status: "ringing",
      sdp: typeof frame.sdp === "string" ? frame.sdp : undefined,
    });
    this._calls.set(call.sid, call);
    // The caller hears it ring as soon as this session alerts.
    try {
      conn.send({ type: "ringing", call: call.sid });
    } catch {
      /* closing: the call ends with the connection */
    }
    this._events.emit("invite", call);
  }

  // -- in-app messages -------------------------------------------------------------------------------

  _onMessage(conn, frame) {
    if (typeof frame.sid !== "string") return;
    const sid = frame.sid;
    const duplicate = this._seen.has(sid);
    this._seen.delete(sid);
    this._seen.set(sid, true);
    while (this._seen.size > SEEN_MESSAGES) this._seen.delete(this._seen.keys().next().value);
    if (!duplicate) {
      const message = {
        sid,
        from: frame.from,
        to: frame.to,
        body: typeof frame.body === "string" ? frame.body : "",
        media: Array.isArray(frame.media) ? frame.media : [],
        markRead: () => this._ack(sid, true),
        ack: () => this._ack(sid, false),
      };
      if ("payload" in frame) message.payload = frame.payload;
      this._events.emit("message", message);
    }
    // Every copy is acked (the server may be waiting on any of them); it is
    // emitted once.
    if (this._autoAck) {
      // On the connection the copy came on: the server knows the message there.
      Promise.resolve()
        .then(() => conn.request({ type: "ack", sid }, { timeout: this._requestTimeout }))
        .catch((err) => {
          // 31010: the server no longer waits for it (gone by SMS, or too old); a lost connection redelivers.
          if (err.code !== 31010 && !conn.ended) this._reportError(err);
        });
    }
  }

  async _ack(sid, read) {
    const frame = { type: "ack", sid };
    if (read) frame.read = true;
    await this._request(read ? "markRead()" : "ack()", frame);
  }
}

function presenceObject(raw) {
  const { type, id, ...presence } = raw;
  return presence;
}

function sameState(a, b) {
  return a.status === b.status && a.text === b.text && JSON.stringify(a.sessions) === JSON.stringify(b.sessions);
}

// -- calls -----------------------------------------------------------------------------------------------

/** A call, placed (`direction` "outgoing") or received ("incoming"). */
export class Call {
  constructor(client, conn, { sid, parentSid, direction, from, to, params, status, sdp }) {
    this._client = client;
    this._conn = conn; // a call lives on the connection that was told of it
    this._events = new Emitter("Call", CALL_EVENTS);
    this._bufferedSignals = []; // signals that came before anyone listened
    this.sid = sid;
    this.parentSid = parentSid;
    this.direction = direction;
    this.from = from;
    this.to = to;
    this.params = params;
    this.status = status; // "initiated" | "ringing" | "answered" | "ended"
    this.endReason = undefined;
    if (sdp !== undefined) this.sdp = sdp;
  }

  on(event, handler) {
    const off = this._events.on(event, handler);
    if (event === "signal" && this._bufferedSignals.length) {
      // Payloads that arrived before this listener (say, an offer that came
      // while the app was still setting up its peer connection) are handed
      // over in order, before any later frame.
      queueMicrotask(() => {
        const buffered = this._bufferedSignals.splice(0);
        for (const payload of buffered) this._events.emit("signal", payload);
      });
    }
    return off;
  }

  async accept() {
    this._mustBe("accept()", "incoming", ["ringing"]);
    await this._request({ type: "accept", call: this.sid });
    if (this.status !== "ended") this._answered();
  }

  async reject(reason = "rejected") {
    if (!REJECT_REASONS.includes(reason)) throw misuse(`reject(): reason must be "rejected" or "busy", not ${JSON.stringify(reason)}`);
    this._mustBe("reject()", "incoming", ["ringing"]);
    await this._request({ type: "reject", call: this.sid, reason });
    this._end(reason);
  }

  /** End the call (or give it up while it rings). Ending an ended call does nothing. */
  async hangup() {
    if (this.status === "ended") return;
    const answered = this.status === "answered";
    this._end("local_hangup");
    if (this._conn.ended) return;
    if (!answered) {
      // A hangup while ringing is never answered: don't wait for it.
      try {
        this._conn.send({ type: "hangup", call: this.sid });
      } catch {
        /* the connection is going: the call ends with it */
      }
      return;
    }
    try {
      await this._conn.request({ type: "hangup", call: this.sid }, { timeout: this._client._requestTimeout });
    } catch (err) {
      // 31001: the other side ended it first. A lost connection ends it too.
      if (err.code !== 31001 && !this._conn.ended) throw err;
    }
  }

  /** Relay a payload (any JSON object) to the other party; only once answered. */
  async signal(payload) {
    if (!isPlainObject(payload)) throw new TypeError(`signal(): payload must be an object (e.g. {type: "offer", sdp}), not ${typeName(payload)}`);
    if (this.status !== "answered") throw misuse(`signal(): the call is ${this.status}; signals flow once it is answered`);
    await this._request({ type: "signal", call: this.sid, payload });
  }

  _mustBe(what, direction, statuses) {
    if (this.direction !== direction) throw misuse(`${what}: only for an ${direction} call; this one is ${this.direction}`);
    if (!statuses.includes(this.status)) throw misuse(`${what}: the call is ${this.status}${this.endReason ? ` (${this.endReason})` : ""}`);
  }

  async _request(frame) {
    if (this._conn.ended) {
      this._end("connection_lost");
      throw new PresenceError(`${frame.type}: the connection of this call has closed`);
    }
    try {
      return await this._conn.request(frame, { timeout: this._client._requestTimeout });
    } catch (err) {
      // Not a party any more (31001), answered elsewhere (31002), or ringing ended (31003 for accept/reject).
      if (err.code === 31001 || err.code === 31002 || (err.code === 31003 && frame.type !== "signal")) {
        this._end(err.code === 31002 ? "answered_elsewhere" : "ended");
      }
      throw err;
    }
  }

  _answered() {
    if (this.status === "answered" || this.status === "ended") return;
    this.status = "answered";
    this._events.emit("answered");
  }

  _end(reason) {
    if (this.status === "ended") return;
    this.status = "ended";
    this.endReason = reason;
    this._bufferedSignals = [];
    if (this._client._calls.get(this.sid) === this) this._client._calls.delete(this.sid);
    this._events.emit("ended", { reason });
  }

  _onFrame(frame) {
    if (this.status === "ended") return;
    switch (frame.type) {
      case "call_progress": {
        const progress = { status: frame.status };
        if (typeof frame.reason === "string") progress.reason = frame.reason;
        if (frame.status === "ringing" && this.status === "initiated") this.status = "ringing";
        this._events.emit("progress", progress);
        if (frame.status === "answered") this._answered();
        else if (frame.status === "completed") this._end(frame.reason ?? "completed");
        break;
      }
      case "signal":
        if (!isPlainObject(frame.payload)) return;
        // Relayed only once answered, and only to the session that accepted:
        // a signal may overtake the ok of our own accept.
        if (this.direction === "incoming") this._answered();
        if (this._events.has("signal")) this._events.emit("signal", frame.payload);
        else this._bufferedSignals.push(frame.payload);
        break;
      case "cancel":
      case "hangup":
        // For the caller, a hangup ends the dialled leg; the call's
        // instructions may go on, but this SDK's call is over.
        this._end(typeof frame.reason === "string" ? frame.reason : frame.type);
        break;
      case "call_warning":
        this._events.emit("warning", { code: frame.code, message: frame.message });
        break;
      case "call_media":
        this._events.emit("media", { verb: frame.verb, attributes: frame.attributes });
        break;
      default:
        break;
    }
  }

  _report(err) {
    if (this._events.has("error")) this._events.emit("error", err);
    else this._client._reportError(err);
  }
}

// -- WebRTC ------------------------------------------------------------------------------------------------

/** Wire an RTCPeerConnection to a call's signal relay. The initiator (the
 * caller) makes the offer once the call is answered; descriptions and ICE
 * candidates travel as signal payloads ({type: "offer"|"answer", sdp} and
 * {type: "candidate", candidate}). Both sides may renegotiate later (the
 * "perfect negotiation" pattern, the initiator being the impolite peer).
 * Call it before adding tracks or data channels, so no negotiationneeded is
 * missed. Returns a function that detaches the wiring. */
export function connectPeer(call, peerConnection, options) {
  if (!(call instanceof Call)) throw new TypeError("connectPeer(): call must be a Call (from client.call() or an 'invite' event)");
  const pc = peerConnection;
  if (!pc || typeof pc.setRemoteDescription !== "function" || typeof pc.addEventListener !== "function") {
    throw new TypeError("connectPeer(): peerConnection must be an RTCPeerConnection");
  }
  const opts = checkOptions("connectPeer()", options, ["initiator", "closeOnEnd"]);
  const initiator = opts.initiator === undefined ? call.direction === "outgoing" : checkBoolean("connectPeer(): initiator", opts.initiator);
  const closeOnEnd = opts.closeOnEnd === undefined ? true : checkBoolean("connectPeer(): closeOnEnd", opts.closeOnEnd);
  if (call.status === "ended") throw misuse("connectPeer(): the call has ended");

  const polite = !initiator;
  let makingOffer = false;
  let ignoreOffer = false;
  let negotiated = false; // a first offer/answer went through
  let wanted = false; // negotiation was needed before it could start
  let detached = false;
  const early = []; // remote candidates that came before the remote description
  let chain = Promise.resolve(); // remote signals are applied one at a time, in order

  const report = (err) => {
    if (!detached && call.status !== "ended") call._report(err instanceof PresenceError ? err : new PresenceError(`connectPeer(): ${err?.message ?? err}`, { cause: err }));
  };
  const send = (payload) => {
    call.signal(payload).catch(report);
  };

  // The caller's first offer waits for the answer (signals flow only then);
  // the callee offers only to renegotiate, after the caller's first offer.
  const canOffer = () => call.status === "answered" && (initiator || negotiated);

  const negotiate = async () => {
    if (detached) return;
    if (!canOffer()) {
      wanted = true;
      return;
    }
    if (pc.signalingState !== "stable") return; // the browser asks again once stable
    wanted = false;
    try {
      makingOffer = true;
      await pc.setLocalDescription();
      send({ type: pc.localDescription.type, sdp: pc.localDescription.sdp });
    } catch (err) {
      report(err);
    } finally {
      makingOffer = false;
    }
  };

  const apply = async (payload) => {
    if (detached) return;
    if (payload.type === "offer" || payload.type === "answer") {
      if (typeof payload.sdp !== "string") return;
      const collision = payload.type === "offer" && (makingOffer || pc.signalingState !== "stable");
      ignoreOffer = !polite && collision;
      if (ignoreOffer) return;
      await pc.setRemoteDescription({ type: payload.type, sdp: payload.sdp }); // polite: rolls back its own offer
      for (const candidate of early.splice(0)) await addCandidate(candidate);
      if (payload.type === "offer") {
        await pc.setLocalDescription();
        send({ type: pc.localDescription.type, sdp: pc.localDescription.sdp });
      }
      negotiated = true;
    } else if (payload.type === "candidate") {
      if (!pc.remoteDescription) early.push(payload.candidate);
      else await addCandidate(payload.candidate);
    }
  };

  const addCandidate = async (candidate) => {
    try {
      await pc.addIceCandidate(candidate ?? undefined);
    } catch (err) {
      if (!ignoreOffer) throw err; // candidates of an ignored offer fail, as expected
    }
  };

  const onNegotiationNeeded = () => {
    negotiate();
  };
  const onIceCandidate = (event) => {
    if (event.candidate && call.status === "answered") send({ type: "candidate", candidate: event.candidate.toJSON() });
    else if (event.candidate) pendingLocal.push(event.candidate.toJSON());
  };
  // Local candidates gathered before the answer (the callee may set up
  // early) wait until signals may flow.
  const pendingLocal = [];
  const offs = [
    call.on("signal", (payload) => {
      chain = chain.then(() => apply(payload)).catch(report);
    }),
    call.on("answered", () => {
      for (const candidate of pendingLocal.splice(0)) send({ type: "candidate", candidate });
      if (initiator && (wanted || (pc.getTransceivers().length > 0 && !pc.localDescription))) negotiate();
    }),
    call.on("ended", () => {
      detach();
      if (closeOnEnd && pc.signalingState !== "closed") pc.close();
    }),
  ];
  pc.addEventListener("negotiationneeded", onNegotiationNeeded);
  pc.addEventListener("icecandidate", onIceCandidate);

  function detach() {
    if (detached) return;
    detached = true;
    for (const off of offs) off();
    pc.removeEventListener("negotiationneeded", onNegotiationNeeded);
    pc.removeEventListener("icecandidate", onIceCandidate);
  }

  // Tracks added before this call were never announced to us: once answered,
  // the initiator offers them (see the "answered" handler above).
  if (call.status === "answered") {
    if (initiator && pc.getTransceivers().length > 0 && !pc.localDescription) negotiate();
  }
  return detach;
}
