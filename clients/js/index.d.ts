// Type declarations of @sidecast/client (sidecast.js). docs/CLIENT-JS.md describes the API.

export declare const PROTOCOL: "sidecast.v1";
export declare const VERSION: string;

/** Every timing and bound of the client (milliseconds unless named otherwise). */
export interface Timings {
  /** first backoff ceiling, doubled per failed attempt (500) */
  reconnectBaseMs: number;
  /** the backoff ceiling's cap (30000) */
  reconnectCapMs: number;
  /** a connection up this long resets the attempt count (10000) */
  stableMs: number;
  /** from opening the socket to the edge's welcome (10000) */
  connectTimeoutMs: number;
  /** publish: until the edge's ack, across reconnects (10000) */
  publishTimeoutMs: number;
  /** rpc: until its answer (10000) */
  rpcTimeoutMs: number;
  /** a sidecast.v1 ping this often while connected; 0: never (25000) */
  pingIntervalMs: number;
  /** no pong within this: the connection is given up and made again (10000) */
  pongTimeoutMs: number;
  /** a failed in-band refresh is tried again after this (5000) */
  tokenRetryMs: number;
  /** a resumed subscription is reported recovered when no error came in this time (3000) */
  resumeQuietMs: number;
  /** seconds: a known token expiring within this is replaced before connecting (5) */
  expiryMarginS: number;
  /** publishes and rpcs waiting for an answer, at most (1000) */
  maxPending: number;
}
export declare const DEFAULTS: Readonly<Timings>;

/** start: the first connection; expiring: token_expiring came; rejected: the edge closed 4001;
 * expired: a reconnect while the known token is (nearly) expired; refresh: refresh() */
export type TokenReason = "start" | "expiring" | "rejected" | "expired" | "refresh";
export type TokenProvider = (ctx: { reason: TokenReason }) => string | Promise<string>;
export type UrlOption =
  | string
  | string[]
  | ((ctx: { attempt: number; lastUrl: string | null }) => string | Promise<string>);

/** What the client needs of a WebSocket (the browser's, Node 22's, or the ws package). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface SidecastOptions extends Partial<Timings> {
  /** the edge's ws(s)://host/ws URL; a list (the next one after each lost connection); or a function */
  url: UrlOption;
  /** an access token, or a function giving one (called at start, on token_expiring, after 4001) */
  token: string | TokenProvider;
  /** a WebSocket constructor; default the global WebSocket (Node 20: pass the ws package) */
  WebSocket?: WebSocketConstructor;
  /** the gateway's base URL, for presence() ("" in a page the gateway serves) */
  httpUrl?: string;
  /** fetch for presence(); default the global fetch */
  fetch?: typeof fetch;
  /** false: do not connect until start() or connect() (default true) */
  autoStart?: boolean;
}

export type State = "idle" | "connecting" | "connected" | "reconnecting" | "closed";

export interface Welcome {
  type: "welcome";
  conn_id: string;
  user: string;
  expires_at: number;
  edge: string;
  [k: string]: unknown;
}

export interface StateChange {
  state: State;
  prev: State;
  /** failed attempts so far (connecting, reconnecting) */
  attempt?: number;
  /** reconnecting: the wait before the next attempt, and when it ends (Date.now() ms) */
  delayMs?: number;
  at?: number;
  /** the close code and reason that led here (0: no connection was made) */
  code?: number;
  reason?: string;
  welcome?: Welcome;
}

export interface SidecastEvent<T = unknown> {
  topic: string;
  /** the position in the topic's history (the `since` of a resume) */
  seq: number;
  data: T;
  /** mode "latest": how many older events were skipped before this one */
  skipped?: number;
}

export interface ResumeReport {
  topic: string;
  since: number;
  /** true: nothing was lost; false: code says why (history_gone, replay_limit, replay_failed) */
  recovered: boolean;
  code?: "history_gone" | "replay_limit" | "replay_failed" | string;
  /** history_gone: the oldest seq still retained (absent when nothing is) */
  oldest?: number;
  message?: string;
}

export interface Ack {
  id: unknown;
  /** true: the edge's stream had this id already (a retry after a lost ack); stored once */
  duplicate: boolean;
}

export interface Presence {
  user: string;
  count: number;
  connections: { conn_id: string; edge: string; connected_at: number }[];
}

export declare class SidecastError extends Error {
  constructor(code: string, message?: string, extra?: object);
  /** the edge's error code (forbidden, not_found, timeout, busy, ...) or the client's own
   * (timeout, disconnected, closed, queue_full, bad_request, token, policy) */
  code: string;
  /** the request's id, when the error answers one */
  id?: unknown;
  /** the topic, for a subscription's error */
  topic?: string;
  /** presence(): the HTTP status */
  status?: number;
  /** a fatal close: its code (4003, 1008) */
  closeCode?: number;
}

declare class Emitter<M> {
  on<K extends keyof M>(type: K, fn: (arg: M[K]) => void): this;
  once<K extends keyof M>(type: K, fn: (arg: M[K]) => void): this;
  off<K extends keyof M>(type: K, fn: (arg: M[K]) => void): this;
}

export interface SubscriptionEvents {
  event: SidecastEvent;
  subscribed: { type: "subscribed"; topic: string };
  unsubscribed: { type: "unsubscribed"; topic: string };
  resumed: ResumeReport;
  skipped: { topic: string; skipped: number; seq: number };
  error: SidecastError;
}

export declare class Subscription extends Emitter<SubscriptionEvents> {
  readonly client: Sidecast;
  readonly topic: string;
  readonly since?: number | "last";
  readonly mode?: "latest";
  state: "pending" | "subscribed" | "refused" | "closed";
  error?: SidecastError;
  readonly lastSeq: number | undefined;
  /** resolves when the edge confirmed it; rejects with the refusal (forbidden, bad_topic, ...) */
  ready(): Promise<Subscription>;
  unsubscribe(): void;
}

export interface SubscribeOptions {
  /** a seq to continue after, or "last" (the latest retained event first, then live) */
  since?: number | "last";
  /** "latest": when this connection falls behind, older events give way to the newest */
  mode?: "latest";
}

export interface ClientEvents {
  state: StateChange;
  welcome: Welcome;
  close: { code: number; reason: string };
  event: SidecastEvent;
  resumed: ResumeReport;
  skipped: { topic: string; skipped: number; seq: number };
  tokenExpiring: { type: "token_expiring"; expires_at: number };
  refreshed: { type: "refreshed"; expires_at: number };
  unsubscribed: { type: "unsubscribed"; topic: string };
  error: SidecastError;
  /** a message type this version does not know */
  message: Record<string, unknown>;
}

export declare class Sidecast extends Emitter<ClientEvents> {
  constructor(opts: SidecastOptions);
  readonly opts: Readonly<SidecastOptions & Timings>;
  readonly state: State;
  readonly connected: boolean;
  readonly user: string | null;
  readonly connId: string | null;
  readonly edge: string | null;
  readonly url: string | null;
  /** the access token's exp (Unix s), from welcome and refreshed */
  readonly expiresAt: number;
  readonly attempt: number;
  /** while reconnecting: when the next attempt starts (Date.now() ms) */
  readonly reconnectAt: number;
  readonly stats: { connects: number; closes: number; duplicatesDropped: number; tokenCalls: number };
  readonly subscriptions: Subscription[];

  start(): this;
  /** resolves with the welcome of the current connection, or of the next */
  connect(): Promise<Welcome>;
  close(): void;
  reconnectNow(): void;
  /** a new token from the provider now, sent in band; null when not connected */
  refresh(): Promise<{ type: "refreshed"; expires_at: number } | null>;
  lastSeq(topic: string): number | undefined;

  subscribe<T = unknown>(topic: string, onEvent?: (ev: SidecastEvent<T>) => void): Subscription;
  subscribe<T = unknown>(topic: string, opts: SubscribeOptions, onEvent?: (ev: SidecastEvent<T>) => void): Subscription;

  publish(topic: string, data: unknown, opts?: { id?: string | number; timeoutMs?: number }): Promise<Ack>;
  rpc<T = unknown>(method: string, data?: unknown, opts?: { timeoutMs?: number }): Promise<T>;
  presence(user?: string, opts?: { httpUrl?: string; fetch?: typeof fetch }): Promise<Presence>;
}

export default Sidecast;
