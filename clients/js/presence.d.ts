// Type declarations of presence.js, the browser SDK of presence-server.
// The wire protocol behind them: docs/protocol.md. The guide: README.md.

/** A settable presence status (`offline` is derived: an identity with no sessions). */
export type Status = "available" | "away" | "busy" | "dnd";

/** The client's life: `idle` until connect(), `closed` for good. */
export type ClientState = "idle" | "connecting" | "registered" | "reconnecting" | "closed";

/** A token string, or a function the client calls for one: at connect, at a
 * reconnect that needs a fresh token, and ahead of expiry for renewal. */
export type TokenSource = string | (() => string | Promise<string>);

export interface ReconnectOptions {
  /** Ceiling of the first delay, seconds (default 0.5). Delays are random in [0, ceiling] (full jitter). */
  initial?: number;
  /** Largest ceiling, seconds (default 30). The ceiling doubles after each failed attempt. */
  max?: number;
}

export interface PresenceFields {
  status?: Status;
  /** At most 256 characters; "" clears it. */
  text?: string;
  /** An integer from -128 to 127; higher wins ties in the merge. */
  priority?: number;
  /** At most 16 names matching /^[a-z][a-z0-9_-]{0,31}$/. */
  capabilities?: string[];
}

export interface PresenceClientOptions extends PresenceFields {
  /** ws:// or wss:// URL of the server's /v1/connect. */
  url: string;
  token: TokenSource;
  /** true (default: {initial: 0.5, max: 30}), false (never), or the back-off. */
  reconnect?: boolean | ReconnectOptions;
  /** Ack in-app messages on receipt (default true). */
  autoAck?: boolean;
  /** Seconds to wait for an answer, or for a registration to send on (default 10). */
  requestTimeout?: number;
  /** Seconds for one connection attempt to be registered (default 10). */
  connectTimeout?: number;
  /** A session id (client.session of an earlier client, say kept across a page reload) to resume. */
  resume?: string;
  /** Say bye when the page is hidden for good (pagehide), so presence ends at once (default true). */
  byeOnPageHide?: boolean;
}

export interface RegisteredInfo {
  session: string;
  account: string;
  identity: string;
  /** The token's expiry, epoch seconds. */
  expires: number;
  /** true when an earlier session was taken over. */
  resumed: boolean;
}

export interface SessionPresence {
  session: string;
  status: Status;
  text: string;
  priority: number;
  capabilities: string[];
  connected_at: number;
  last_activity: number;
}

/** docs/protocol.md, "The presence object". */
export interface Presence {
  identity: string;
  status: Status | "offline";
  text: string;
  last_seen: number | null;
  sessions: SessionPresence[];
  /** Grows with every change; the SDK drops anything not newer than what it holds. */
  version: number;
}

export interface InAppMessage {
  sid: string;
  from: string;
  to: string;
  body: string;
  media: string[];
  /** Rich content for apps, when the sender gave some. */
  payload?: unknown;
  /** Ack with read: true (the user has seen it). */
  markRead(): Promise<void>;
  /** Ack (delivery) by hand, when autoAck is false. */
  ack(): Promise<void>;
}

export interface ClosedEvent {
  /** The WebSocket close code (1000 after close()), or null when there was none. */
  code: number | null;
  reason: string;
  /** What ended the client, when it was not close(). */
  error: PresenceError | null;
}

export interface TokenUpdatedEvent {
  expires: number;
  /** Subscriptions the new token no longer grants (dropped by the server and here). */
  unsubscribed: string[];
}

export interface ClientEvents {
  state: (state: ClientState) => void;
  registered: (info: RegisteredInfo) => void;
  presence: (presence: Presence) => void;
  invite: (call: Call) => void;
  message: (message: InAppMessage) => void;
  error: (error: PresenceError) => void;
  closed: (event: ClosedEvent) => void;
  token_updated: (event: TokenUpdatedEvent) => void;
}

export class PresenceClient {
  constructor(options: PresenceClientOptions);
  readonly state: ClientState;
  readonly identity: string | undefined;
  readonly account: string | undefined;
  readonly session: string | undefined;
  /** The current token's expiry, epoch seconds, as the server reported it. */
  readonly expires: number | undefined;
  /** The identities subscribed to (kept across reconnects). */
  readonly subscriptions: string[];
  /** How the heartbeat clock runs: in a Blob Worker, on setInterval (fallback), or not at all. */
  readonly heartbeatClock: "worker" | "interval" | "stopped";
  /** Add a handler; returns a function that removes it. */
  on<E extends keyof ClientEvents>(event: E, handler: ClientEvents[E]): () => void;
  /** Open the connection and register; rejects with PresenceError on a fatal error. */
  connect(): Promise<RegisteredInfo>;
  setPresence(fields: PresenceFields): Promise<void>;
  /** Snapshots, in the order asked. Subscriptions are kept across reconnects. */
  subscribe(identities: string[]): Promise<Presence[]>;
  unsubscribe(identities: string[]): Promise<void>;
  /** The latest presence known of a subscribed identity. */
  presence(identity: string): Presence | undefined;
  /** Place a call: to is "client:<identity>", an identity or an E.164 number. */
  call(to: string, params?: Record<string, string>): Promise<Call>;
  /** Say bye and stop; no reconnect. */
  close(): Promise<void>;
}

export type CallStatus = "initiated" | "ringing" | "answered" | "ended";

export interface CallEvents {
  progress: (progress: { status: "ringing" | "answered" | "completed" | string; reason?: string }) => void;
  answered: () => void;
  signal: (payload: Record<string, unknown>) => void;
  ended: (event: { reason: string }) => void;
  warning: (warning: { code: number; message: string }) => void;
  media: (media: { verb: string; attributes: Record<string, unknown> }) => void;
  error: (error: PresenceError) => void;
}

export class Call {
  /** Calls come from client.call() and the client's "invite" event. */
  private constructor();
  readonly sid: string;
  /** For an incoming call: the caller's call SID. */
  readonly parentSid?: string;
  readonly direction: "outgoing" | "incoming";
  readonly from: string;
  readonly to: string;
  readonly params: Record<string, string>;
  readonly status: CallStatus;
  /** Why it ended: local_hangup, remote_hangup, connection_lost, rejected, busy, answered_elsewhere, caller_hangup, timeout, ... */
  readonly endReason: string | undefined;
  /** An SDP offer a carrier handed over with an inbound call, if any. */
  readonly sdp?: string;
  on<E extends keyof CallEvents>(event: E, handler: CallEvents[E]): () => void;
  accept(): Promise<void>;
  reject(reason?: "rejected" | "busy"): Promise<void>;
  hangup(): Promise<void>;
  signal(payload: Record<string, unknown>): Promise<void>;
}

export interface ConnectPeerOptions {
  /** Makes the first offer (default: true for an outgoing call). */
  initiator?: boolean;
  /** Close the peer connection when the call ends (default true). */
  closeOnEnd?: boolean;
}

/** Wire an RTCPeerConnection to the call's signal relay; returns a function that detaches it. */
export function connectPeer(call: Call, peerConnection: RTCPeerConnection, options?: ConnectPeerOptions): () => void;

export class PresenceError extends Error {
  constructor(message: string, options?: { code?: number; fatal?: boolean; closeCode?: number | null; cause?: unknown });
  readonly name: "PresenceError";
  /** From the error table of docs/protocol.md, or 0 for a problem found here. */
  readonly code: number;
  /** true: the server closes the connection after it. */
  readonly fatal: boolean;
  /** The WebSocket close code that came (or comes) with it, if any. */
  readonly closeCode: number | null;
}
