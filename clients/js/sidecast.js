// sidecast.js - the JavaScript client of Sidecast's WebSocket protocol sidecast.v1.
//
// One ES module, no runtime dependency: browsers use their WebSocket, Node 22+ its global
// one, Node 20 the `ws` package passed as the WebSocket option. The client holds one
// connection to an edge and keeps it: reconnect with exponential backoff and full jitter
// (capped; the attempt count is reset once a connection has stayed up for stableMs), a
// token provider called at start, on token_expiring (the new token goes in band, the
// connection lives on) and after a 4001 close, the last seq of every topic sent back as
// `since` on every reconnect (to any edge), a report per subscription of whether the gap
// was recovered or the history is gone, publish with an idempotency id (resent after a
// reconnect until acked; the edge's duplicate window stores it once), rpc, presence through
// the gateway, and events for every change of state. docs/CLIENT-JS.md shows the common
// cases; index.d.ts declares the API.

export const PROTOCOL = "sidecast.v1";
export const VERSION = "0.1.0";

/** Every timing and bound the client has, with its default (milliseconds, or a count). */
export const DEFAULTS = Object.freeze({
  reconnectBaseMs: 500,     // first backoff ceiling; doubles per failed attempt
  reconnectCapMs: 30000,    // backoff ceiling never exceeds this
  stableMs: 10000,          // a connection up this long resets the attempt count
  connectTimeoutMs: 10000,  // from opening the socket to the edge's welcome
  publishTimeoutMs: 10000,  // publish: until the edge's ack (across reconnects)
  rpcTimeoutMs: 10000,      // rpc: until rpc_result or error
  pingIntervalMs: 25000,    // a sidecast.v1 ping this often while connected (0: never)
  pongTimeoutMs: 10000,     // no pong within this: the connection is deemed dead
  tokenRetryMs: 5000,       // a failed in-band refresh is tried again after this
  resumeQuietMs: 3000,      // resume report "recovered" when no error came in this time
  expiryMarginS: 5,         // a known token expiring within this is replaced before connecting
  maxPending: 1000,         // publishes and rpcs waiting for their answer, at most
});

// Closes after which reconnecting cannot help: 4003 forbidden or revoked, 1008 policy
// (origin not allowed, or too many protocol errors).
const FATAL_CLOSES = new Set([4003, 1008]);

/** An error from the edge (`error {code, message}`) or from the client itself. */
export class SidecastError extends Error {
  constructor(code, message, extra) {
    super(message ? code + ": " + message : code);
    this.name = "SidecastError";
    this.code = code;
    if (extra) Object.assign(this, extra);
  }
}

function rethrowLater(e) { setTimeout(() => { throw e; }, 0); }

class Emitter {
  constructor() { this._on = new Map(); }
  /** Adds a listener; returns this. */
  on(type, fn) {
    if (!this._on.has(type)) this._on.set(type, []);
    this._on.get(type).push(fn);
    return this;
  }
  off(type, fn) {
    const l = this._on.get(type);
    if (l) { const i = l.indexOf(fn); if (i >= 0) l.splice(i, 1); }
    return this;
  }
  once(type, fn) {
    const w = (a) => { this.off(type, w); fn(a); };
    return this.on(type, w);
  }
  // A throwing listener must not break the client's state machine: its error is
  // rethrown outside, where the host reports it.
  emit(type, arg) {
    const l = this._on.get(type);
    if (!l) return;
    for (const fn of l.slice()) {
      try { fn(arg); } catch (e) { rethrowLater(e); }
    }
  }
}

function newId() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === "function") return c.randomUUID();
  const b = new Uint8Array(16);
  if (c && typeof c.getRandomValues === "function") c.getRandomValues(b);
  else for (let i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** One topic the application wants: created by Sidecast.subscribe, kept across reconnects. */
export class Subscription extends Emitter {
  constructor(client, topic, opts) {
    super();
    this.client = client;
    this.topic = topic;
    this.since = opts.since;   // the first subscribe's since (a seq or "last"), if any
    this.mode = opts.mode;     // "latest", or undefined
    this.state = "pending";    // pending | subscribed | refused | closed
    this._ready = [];
  }
  /** The seq of the last event delivered on this topic (undefined before the first). */
  get lastSeq() { return this.client.lastSeq(this.topic); }
  /** Resolves when the edge confirmed the subscription (rejects if it refused it). */
  ready() {
    if (this.state === "subscribed") return Promise.resolve(this);
    if (this.state === "refused" || this.state === "closed") {
      return Promise.reject(this.error || new SidecastError("closed", "subscription ended"));
    }
    return new Promise((resolve, reject) => this._ready.push({ resolve, reject }));
  }
  unsubscribe() { this.client._unsubscribe(this); }
  _settle(err) {
    const w = this._ready;
    this._ready = [];
    for (const p of w) { if (err) p.reject(err); else p.resolve(this); }
  }
}

export class Sidecast extends Emitter {
  /**
   * opts.url: the edge's ws(s)://.../ws URL, a list of them (tried in turn, the next one
   * after each lost connection), or a function returning one (called per attempt).
   * opts.token: an async function ({reason}) => access token, or a fixed token string.
   * opts.WebSocket: a WebSocket constructor (the `ws` package on Node 20).
   * opts.httpUrl: the gateway's base URL for presence() ("" in a page it serves).
   * opts.fetch: a fetch implementation for presence() (default: the global one).
   * Timings and bounds: DEFAULTS. It starts connecting right after the constructor's
   * caller returns (a microtask later), unless opts.autoStart is false: then start() or
   * connect().
   */
  constructor(opts) {
    super();
    if (!opts || !opts.url) throw new TypeError("Sidecast: opts.url is required");
    if (!opts.token) throw new TypeError("Sidecast: opts.token (a function or a string) is required");
    if (Array.isArray(opts.url) && (!opts.url.length || opts.url.some((u) => typeof u !== "string" || !u))) {
      throw new TypeError("Sidecast: opts.url as a list needs at least one URL, each a non-empty string");
    }
    this.opts = Object.assign({}, DEFAULTS, opts);
    for (const k of Object.keys(DEFAULTS)) {
      const v = this.opts[k];
      if (typeof v !== "number" || !(v >= 0) || !isFinite(v)) {
        throw new TypeError("Sidecast: opts." + k + " must be a number >= 0, got " + v);
      }
    }
    this._WS = opts.WebSocket || globalThis.WebSocket;
    if (typeof this._WS !== "function") {
      throw new TypeError("Sidecast: no WebSocket here: pass one as opts.WebSocket (on Node 20: the ws package)");
    }
    this.state = "idle";       // idle | connecting | connected | reconnecting | closed
    this.user = null;          // from the edge's welcome
    this.connId = null;
    this.edge = null;
    this.url = null;           // the URL of the current (or last) connection
    this.expiresAt = 0;        // the access token's exp (Unix s), from welcome / refreshed
    this.attempt = 0;          // failed attempts since the last stable connection
    this.reconnectAt = 0;      // when the next attempt starts (Date.now() ms), while waiting
    this.stats = { connects: 0, closes: 0, duplicatesDropped: 0, tokenCalls: 0 };
    this._wanted = false;
    this._ws = null;
    this._token = typeof opts.token === "string" ? opts.token : null;
    this._tokenReason = "start";
    this._tokenCall = null;    // the provider call in flight
    this._urlIndex = 0;
    this._subs = new Map();    // topic -> Subscription
    this._last = new Map();    // topic -> last seq delivered (the inbox "user" too)
    this._resuming = new Map(); // topic -> {since, timer}
    this._subIds = new Map();  // id of a subscribe in flight -> topic (its error names no topic)
    this._subN = 0;
    this._pubs = new Map();    // JSON of id -> {msg, resolve, reject, timer, sent}
    this._rpcs = new Map();
    this._rpcN = 0;
    this._pingN = 0;
    this._timers = { reconnect: null, connect: null, ping: null, pong: null, stable: null, refresh: null };
    this._waiters = [];        // connect() promises waiting for a welcome
    this._welcome = null;
    // started after the constructor's caller has attached its listeners
    this._auto = opts.autoStart !== false;
    if (this._auto) queueMicrotask(() => { if (this._auto) this.start(); });
  }

  // ---- life cycle ---------------------------------------------------------------------
  /** Starts connecting (again, after close()). */
  start() {
    this._auto = false;
    if (this._wanted) return this;
    this._wanted = true;
    this.attempt = 0;
    this._open();
    return this;
  }

  /** Resolves with the welcome of the current connection, or the next one. */
  connect() {
    if (!this._wanted) this.start();
    if (this.state === "connected") return Promise.resolve(this._welcome);
    return new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
  }

  /** Closes for good (1000): nothing reconnects; waiting publishes and rpcs are rejected. */
  close() {
    this._auto = false;
    this._wanted = false;
    this._clearTimers();
    const ws = this._ws;
    this._ws = null;
    if (ws) { this._detach(ws); try { ws.close(1000, "client closed"); } catch (e) { /* gone */ } }
    const err = new SidecastError("closed", "the client was closed");
    this._failAll(err, true);
    this._settleWaiters(err);
    for (const sub of this._subs.values()) sub._settle(err);
    this._setState("closed", {});
  }

  /** While waiting to reconnect: try now (e.g. when the browser says it is online again). */
  reconnectNow() {
    if (this._wanted && !this._ws && this._timers.reconnect) {
      clearTimeout(this._timers.reconnect);
      this._timers.reconnect = null;
      this._open();
    }
  }

  /**
   * A new token from the provider now (reason "refresh"), sent in band: resolves with the
   * edge's refreshed {expires_at}; null when not connected (the token serves the next
   * connection). Rejects when the provider fails, the connection ends first, or no answer
   * comes within rpcTimeoutMs.
   */
  async refresh() {
    const t = await this._getToken("refresh");
    if (this.state !== "connected") return null;
    return new Promise((resolve, reject) => {
      const end = () => { clearTimeout(timer); this.off("refreshed", ok); this.off("close", gone); };
      const ok = (m) => { end(); resolve(m); };
      const gone = (c) => { end(); reject(new SidecastError("disconnected", "the connection closed (" + c.code + ") before refreshed")); };
      const timer = setTimeout(() => { end(); reject(new SidecastError("timeout", "no refreshed within " + this.opts.rpcTimeoutMs + " ms")); }, this.opts.rpcTimeoutMs);
      this.on("refreshed", ok);
      this.on("close", gone);
      if (!this._send({ type: "refresh", token: t })) gone({ code: 0 });
    });
  }

  lastSeq(topic) { return this._last.get(topic); }
  get subscriptions() { return Array.from(this._subs.values()); }
  get connected() { return this.state === "connected"; }

  // ---- subscriptions ------------------------------------------------------------------
  /**
   * Subscribes to topic; kept across reconnects, resumed with since = the last seq seen.
   * opts.since: a seq to start after, or "last" (the latest retained event first);
   * opts.mode: "latest"; onEvent: a listener for its events.
   */
  subscribe(topic, opts, onEvent) {
    if (typeof opts === "function") { onEvent = opts; opts = {}; }
    opts = opts || {};
    if (typeof topic !== "string" || !topic) throw new TypeError("subscribe: topic must be a non-empty string");
    if (opts.since !== undefined && opts.since !== "last" &&
        !(Number.isInteger(opts.since) && opts.since >= 0)) {
      throw new TypeError('subscribe: since must be a seq (integer >= 0) or "last"');
    }
    let sub = this._subs.get(topic);
    if (sub && sub.state !== "refused" && sub.state !== "closed") {
      if (onEvent) sub.on("event", onEvent);
      return sub;
    }
    sub = new Subscription(this, topic, opts);
    if (onEvent) sub.on("event", onEvent);
    this._subs.set(topic, sub);
    // an explicit since is the position from now on (it may go back, to read again)
    if (Number.isInteger(opts.since)) this._last.set(topic, opts.since);
    if (this.state === "connected") this._sendSubscribe(sub, Number.isInteger(opts.since));
    return sub;
  }

  _unsubscribe(sub) {
    if (this._subs.get(sub.topic) !== sub) return;
    this._subs.delete(sub.topic);
    this._endResume(sub.topic);
    const was = sub.state;
    sub.state = "closed";
    sub._settle(new SidecastError("closed", "unsubscribed"));
    // the inbox is every connection's own: its position stays so that it resumes
    if (sub.topic !== "user") {
      this._last.delete(sub.topic);
      if (was !== "refused") this._send({ type: "unsubscribe", topic: sub.topic });
    }
  }

  _sendSubscribe(sub, resume) {
    const id = "s" + (++this._subN);
    this._subIds.set(id, sub.topic);
    const msg = { type: "subscribe", topic: sub.topic, id };
    const last = this._last.get(sub.topic);
    if (last !== undefined) msg.since = last;
    else if (sub.since !== undefined) msg.since = sub.since;
    if (sub.mode !== undefined) msg.mode = sub.mode;
    if (resume && typeof msg.since === "number") this._beginResume(sub.topic, msg.since);
    this._send(msg);
  }

  // A resume report per topic subscribed again with a since: "recovered" when an event
  // arrives first (the edge judges since before it sends any) or no error came within
  // resumeQuietMs; not recovered on history_gone, replay_limit or replay_failed.
  _beginResume(topic, since) {
    this._endResume(topic);
    const r = { since, timer: null };
    r.timer = setTimeout(() => this._resumed(topic, true), this.opts.resumeQuietMs);
    this._resuming.set(topic, r);
  }

  _endResume(topic) {
    const r = this._resuming.get(topic);
    if (r) { clearTimeout(r.timer); this._resuming.delete(topic); }
    return r;
  }

  _resumed(topic, recovered, m) {
    const r = this._endResume(topic);
    if (!r) return;
    const rep = { topic, since: r.since, recovered };
    if (!recovered) {
      rep.code = m.code;
      if (m.oldest !== undefined) rep.oldest = m.oldest;
      if (m.message) rep.message = m.message;
    }
    const sub = this._subs.get(topic);
    if (sub) sub.emit("resumed", rep);
    this.emit("resumed", rep);
  }

  // ---- publish and rpc ----------------------------------------------------------------
  /**
   * Publishes data on topic; resolves {id, duplicate} when the edge acked it (the stream
   * stored it). opts.id: the idempotency id (default: a fresh UUID); opts.timeoutMs.
   * Not connected: sent once connected. Lost connection before the ack: sent again, with
   * the same id, after the reconnect (the edge stores it once: duplicate true).
   */
  publish(topic, data, opts) {
    opts = opts || {};
    const id = opts.id !== undefined ? opts.id : newId();
    const msg = { type: "publish", topic, data: data === undefined ? null : data, id };
    return this._request(this._pubs, msg, opts.timeoutMs, this.opts.publishTimeoutMs, true);
  }

  /** Calls a back-end method (rpc.<method> on NATS); resolves with its answer's data. */
  rpc(method, data, opts) {
    opts = opts || {};
    const id = "rpc-" + (++this._rpcN);
    const msg = { type: "rpc", id, method, data: data === undefined ? null : data };
    return this._request(this._rpcs, msg, opts.timeoutMs, this.opts.rpcTimeoutMs, false);
  }

  _request(map, msg, timeoutMs, defTimeout, resend) {
    if (!this._wanted) return Promise.reject(new SidecastError("closed", "the client is closed"));
    const key = JSON.stringify(msg.id);
    if (this._pubs.has(key) || this._rpcs.has(key)) {
      return Promise.reject(new SidecastError("bad_request", "id " + key + " is already waiting"));
    }
    if (this._pubs.size + this._rpcs.size >= this.opts.maxPending) {
      return Promise.reject(new SidecastError("queue_full", this.opts.maxPending + " requests already wait"));
    }
    return new Promise((resolve, reject) => {
      const e = { msg, resolve, reject, resend, sent: false, timer: null };
      const ms = timeoutMs !== undefined ? timeoutMs : defTimeout;
      e.timer = setTimeout(() => {
        map.delete(key);
        reject(new SidecastError("timeout", "no answer within " + ms + " ms", { id: msg.id }));
      }, ms);
      map.set(key, e);
      if (this.state === "connected") e.sent = this._send(msg);
    });
  }

  _answer(key, err, value) {
    const e = this._rpcs.get(key) || this._pubs.get(key);
    if (!e) return false;
    (this._rpcs.has(key) ? this._rpcs : this._pubs).delete(key);
    clearTimeout(e.timer);
    if (err) e.reject(err); else e.resolve(value);
    return true;
  }

  // everything waiting fails (close), or only what cannot be sent again (a lost connection)
  _failAll(err, all) {
    for (const map of [this._rpcs, this._pubs]) {
      for (const [key, e] of map) {
        if (!all && (e.resend || !e.sent)) continue;
        map.delete(key);
        clearTimeout(e.timer);
        e.reject(err);
      }
    }
  }

  // ---- presence (through the gateway) -------------------------------------------------
  /**
   * A user's connections, from the gateway's GET /api/presence/{user} (the edges' presence
   * in Redis): {user, count, connections:[{conn_id, edge, connected_at}]}. Default user:
   * this connection's. Allowed for yourself, or with a sub_topics grant of presence.<user>.
   */
  async presence(user, opts) {
    opts = opts || {};
    const who = user || this.user;
    if (!who) throw new SidecastError("bad_request", "presence: which user? (not connected yet)");
    const f = opts.fetch || this.opts.fetch || globalThis.fetch;
    if (typeof f !== "function") throw new SidecastError("unsupported", "presence needs fetch (opts.fetch)");
    const base = String(opts.httpUrl !== undefined ? opts.httpUrl : (this.opts.httpUrl || "")).replace(/\/$/, "");
    const token = this._token || await this._getToken(this._tokenReason);
    const r = await f(base + "/api/presence/" + encodeURIComponent(who), {
      headers: { Authorization: "Bearer " + token, Accept: "application/json" },
    });
    const text = await r.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch (e) { body = { message: text.slice(0, 200) }; }
    if (!r.ok) {
      throw new SidecastError((body && body.error) || "http_" + r.status,
        body && (body.message || body.error_description), { status: r.status });
    }
    return body;
  }

  // ---- the connection -----------------------------------------------------------------
  _setState(state, extra) {
    const prev = this.state;
    this.state = state;
    this.emit("state", Object.assign({ state, prev }, extra));
  }

  _clearTimers() {
    for (const k of Object.keys(this._timers)) {
      clearTimeout(this._timers[k]);
      this._timers[k] = null;
    }
    for (const r of this._resuming.values()) clearTimeout(r.timer);
    this._resuming.clear();
  }

  _send(obj) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) return false;
    try { ws.send(JSON.stringify(obj)); return true; } catch (e) { return false; }
  }

  // the provider is called once at a time; what it returns replaces the token
  _getToken(reason) {
    if (typeof this.opts.token === "string") return Promise.resolve(this.opts.token);
    if (this._tokenCall) return this._tokenCall;
    this.stats.tokenCalls++;
    this._tokenCall = Promise.resolve()
      .then(() => this.opts.token({ reason }))
      .then((t) => {
        if (typeof t !== "string" || !t) throw new SidecastError("bad_token", "the token provider gave no token");
        this._token = t;
        this._tokenReason = "expired";
        return t;
      })
      .finally(() => { this._tokenCall = null; });
    return this._tokenCall;
  }

  async _pickUrl() {
    const u = this.opts.url;
    if (typeof u === "function") return u({ attempt: this.attempt, lastUrl: this.url });
    if (Array.isArray(u)) return u[this._urlIndex % u.length];
    return u;
  }

  async _open() {
    this._timers.reconnect = null;
    this.reconnectAt = 0;
    if (!this._wanted || this._ws) return;
    this._setState("connecting", { attempt: this.attempt });
    let url, token;
    try {
      const soon = this.expiresAt && this.expiresAt - Date.now() / 1000 < this.opts.expiryMarginS;
      if (!this._token || soon) {
        token = await this._getToken(this._token ? "expired" : this._tokenReason);
      } else {
        token = this._token;
      }
      url = await this._pickUrl();
    } catch (e) {
      if (!this._wanted) return;
      this.emit("error", e instanceof SidecastError ? e : new SidecastError("token", String(e && e.message || e), { cause: e }));
      this._scheduleReconnect({ code: 0, reason: "token provider failed" });
      return;
    }
    if (!this._wanted || this._ws) return;
    let ws;
    try {
      ws = new this._WS(url, PROTOCOL);
    } catch (e) {
      this.emit("error", new SidecastError("bad_url", "cannot open " + url + ": " + (e && e.message), { cause: e }));
      this._scheduleReconnect({ code: 0, reason: "bad url" });
      return;
    }
    this.url = url;
    this._ws = ws;
    this.expiresAt = 0; // until the welcome says
    this._timers.connect = setTimeout(() => this._drop(ws, 4000, "no welcome in time"), this.opts.connectTimeoutMs);
    // Browsers cannot set headers on a WebSocket, and a token in the URL ends up in logs:
    // the token is the first message, everywhere.
    ws.onopen = () => { if (ws === this._ws) ws.send(JSON.stringify({ type: "auth", token })); };
    ws.onmessage = (ev) => {
      if (ws !== this._ws) return;
      let m;
      const d = typeof ev.data === "string" ? ev.data : new TextDecoder().decode(ev.data);
      try { m = JSON.parse(d); } catch (e) { this.emit("error", new SidecastError("bad_frame", "not JSON from the edge")); return; }
      if (m && typeof m === "object") this._onMessage(m);
    };
    ws.onclose = (ev) => { if (ws === this._ws) this._onClose(ev.code, ev.reason || ""); };
    ws.onerror = () => { /* onclose follows with the code */ };
  }

  _detach(ws) {
    ws.onopen = ws.onmessage = ws.onclose = null;
    ws.onerror = () => {};
  }

  // gives up on a connection from this side (no welcome, no pong)
  _drop(ws, code, reason) {
    if (ws !== this._ws) return;
    this._detach(ws);
    try { ws.close(1000, reason); } catch (e) { /* already closing */ }
    this._onClose(code, reason);
  }

  _onMessage(m) {
    switch (m.type) {
    case "welcome": return this._onWelcome(m);
    case "subscribed": {
      for (const [id, t] of this._subIds) if (t === m.topic) this._subIds.delete(id);
      const sub = this._subs.get(m.topic);
      if (sub && sub.state !== "closed") { sub.state = "subscribed"; sub._settle(null); sub.emit("subscribed", m); }
      return;
    }
    case "unsubscribed": { // the edge ended it (a refreshed token no longer allows it)
      const sub = this._subs.get(m.topic);
      if (sub) {
        this._subs.delete(m.topic);
        this._endResume(m.topic);
        sub.state = "closed";
        sub.error = new SidecastError("unsubscribed", "the edge ended the subscription");
        sub._settle(sub.error);
        sub.emit("unsubscribed", m);
      }
      this.emit("unsubscribed", m);
      return;
    }
    case "event": return this._onEvent(m);
    case "ack":
      this._answer(JSON.stringify(m.id), null, { id: m.id, duplicate: m.duplicate === true });
      return;
    case "rpc_result":
      this._answer(JSON.stringify(m.id), null, m.data);
      return;
    case "error": return this._onError(m);
    case "token_expiring":
      this.emit("tokenExpiring", m);
      this._refreshInBand();
      return;
    case "refreshed":
      this.expiresAt = m.expires_at;
      this.emit("refreshed", m);
      return;
    case "pong":
      clearTimeout(this._timers.pong);
      this._timers.pong = null;
      return;
    default:
      this.emit("message", m); // a type this version does not know
    }
  }

  _onWelcome(m) {
    clearTimeout(this._timers.connect);
    this._timers.connect = null;
    this.user = m.user;
    this.connId = m.conn_id;
    this.edge = m.edge;
    this.expiresAt = m.expires_at || 0;
    this._welcome = m;
    this.stats.connects++;
    const resume = this.stats.connects > 1;
    this._setState("connected", { welcome: m });
    this.emit("welcome", m);
    this._timers.stable = setTimeout(() => { this.attempt = 0; }, this.opts.stableMs);
    // every subscription again, from where it was; the inbox too once it has a position
    // (the edge holds inbox events after the welcome until this subscribe comes)
    for (const sub of this._subs.values()) {
      if (sub.state === "refused" || sub.state === "closed") continue;
      sub.state = "pending";
      this._sendSubscribe(sub, resume || Number.isInteger(sub.since));
    }
    if (!this._subs.has("user") && this._last.has("user")) {
      const since = this._last.get("user");
      if (resume) this._beginResume("user", since);
      this._send({ type: "subscribe", topic: "user", since });
    }
    // what waits for an answer goes (again) now, in the order it was asked
    for (const map of [this._pubs, this._rpcs]) {
      for (const e of map.values()) e.sent = this._send(e.msg);
    }
    this._ping();
    this._settleWaiters(null, m);
  }

  _settleWaiters(err, welcome) {
    const w = this._waiters;
    this._waiters = [];
    for (const p of w) { if (err) p.reject(err); else p.resolve(welcome); }
  }

  _ping() {
    if (!this.opts.pingIntervalMs) return;
    this._timers.ping = setTimeout(() => {
      if (this.state !== "connected") return;
      const ws = this._ws;
      this._send({ type: "ping", id: "p" + (++this._pingN) });
      // the oldest unanswered ping keeps its deadline (a later ping must not push it back)
      if (!this._timers.pong) {
        this._timers.pong = setTimeout(() => this._drop(ws, 4000, "no pong in time"), this.opts.pongTimeoutMs);
      }
      this._ping();
    }, this.opts.pingIntervalMs);
  }

  _onEvent(m) {
    const topic = m.topic;
    const sub = this._subs.get(topic);
    // positions of the topics subscribed, and of the inbox (a late event of a topic just
    // unsubscribed leaves no position behind)
    if (typeof m.seq === "number" && (sub || topic === "user")) {
      const last = this._last.get(topic);
      if (last !== undefined && m.seq <= last) { this.stats.duplicatesDropped++; return; }
      this._last.set(topic, m.seq);
    }
    if (this._resuming.has(topic)) this._resumed(topic, true);
    const ev = { topic, seq: m.seq, data: m.data };
    if (typeof m.skipped === "number" && m.skipped > 0) {
      ev.skipped = m.skipped;
      const s = { topic, skipped: m.skipped, seq: m.seq };
      if (sub) sub.emit("skipped", s);
      this.emit("skipped", s);
    }
    if (sub) sub.emit("event", ev);
    this.emit("event", ev);
  }

  _onError(m) {
    const err = new SidecastError(m.code || "error", m.message, { id: m.id, topic: m.topic });
    if (m.id !== undefined && m.id !== null && this._answer(JSON.stringify(m.id), err)) return;
    const topic = m.topic;
    if (topic && (m.code === "history_gone" || m.code === "replay_limit" || m.code === "replay_failed")) {
      if (this._resuming.has(topic)) this._resumed(topic, false, m);
      else { // a since the application gave itself, or a second report: told as it is
        const rep = { topic, since: this._last.get(topic), recovered: false, code: m.code, oldest: m.oldest, message: m.message };
        const sub = this._subs.get(topic);
        if (sub) sub.emit("resumed", rep);
        this.emit("resumed", rep);
      }
      if (m.code === "history_gone") this._last.delete(topic); // live from here
      return;
    }
    const subTopic = typeof m.id === "string" ? this._subIds.get(m.id) : undefined;
    const sub = subTopic !== undefined ? this._subs.get(subTopic) : null;
    if (subTopic !== undefined) this._subIds.delete(m.id);
    if (sub && sub.state === "pending") { // the subscribe was refused (forbidden, bad_topic, ...)
      sub.state = "refused";
      sub.error = err;
      err.topic = subTopic;
      this._subs.delete(subTopic);
      this._endResume(subTopic);
      sub._settle(err);
      sub.emit("error", err);
    }
    this.emit("error", err);
  }

  // token_expiring: a new token from the provider, sent in band; the connection lives on
  _refreshInBand() {
    if (this._timers.refresh) { clearTimeout(this._timers.refresh); this._timers.refresh = null; }
    const ws = this._ws;
    this._getToken("expiring").then((t) => {
      if (ws && ws === this._ws && this.state === "connected") this._send({ type: "refresh", token: t });
    }, (e) => {
      this.emit("error", e instanceof SidecastError ? e : new SidecastError("token", String(e && e.message || e), { cause: e }));
      // again, while it can still help (the edge closes 4001 at exp, which asks again)
      if (ws && ws === this._ws && this.expiresAt > Date.now() / 1000) {
        this._timers.refresh = setTimeout(() => this._refreshInBand(), this.opts.tokenRetryMs);
      }
    });
  }

  _onClose(code, reason) {
    const ws = this._ws;
    if (ws) this._detach(ws);
    this._ws = null;
    this._clearTimers();
    this._subIds.clear();
    this.stats.closes++;
    for (const sub of this._subs.values()) if (sub.state === "subscribed") sub.state = "pending";
    // rpcs are not idempotent: one in flight is lost with its connection
    this._failAll(new SidecastError("disconnected", "the connection closed (" + code + ") before the answer"), false);
    for (const e of this._pubs.values()) e.sent = false;
    this.emit("close", { code, reason });
    if (!this._wanted) { this._setState("closed", { code, reason }); return; }
    if (FATAL_CLOSES.has(code)) {
      this._wanted = false;
      const err = new SidecastError(code === 4003 ? "forbidden" : "policy",
        reason || (code === 4003 ? "forbidden or revoked" : "refused by policy"), { closeCode: code });
      this._failAll(err, true);
      this._settleWaiters(err);
      for (const sub of this._subs.values()) sub._settle(err);
      this.emit("error", err);
      this._setState("closed", { code, reason });
      return;
    }
    if (code === 4001) { this._token = null; this._tokenReason = "rejected"; }
    this._urlIndex++; // a list of edges: the next one
    this._scheduleReconnect({ code, reason });
  }

  // exponential backoff with full jitter: a random delay in [0, min(cap, base * 2^attempt))
  _scheduleReconnect(why) {
    const ceil = Math.min(this.opts.reconnectCapMs, this.opts.reconnectBaseMs * Math.pow(2, Math.min(this.attempt, 30)));
    const delayMs = Math.floor(Math.random() * ceil);
    this.attempt++;
    this.reconnectAt = Date.now() + delayMs;
    this._timers.reconnect = setTimeout(() => this._open(), delayMs);
    this._setState("reconnecting", Object.assign({ attempt: this.attempt, delayMs, at: this.reconnectAt }, why));
  }
}

export default Sidecast;
