// Node scenarios of clients/js against a running Sidecast stack, driven by
// tests/integration/test_client_js.py (which starts the stack and checks what they print).
//
//   node run.mjs <scenario>      with SC_GATEWAY (http://...) and SC_EDGES (ws URLs, comma-separated)
//
// Node 20 has no global WebSocket: the ws package (this directory's lock file) is passed as
// the client's WebSocket option. Tokens come from the gateway's token endpoint (alice's
// password, then her rotating refresh token), as an application's provider would get them.
// Each step prints "PASS <name>: ..." or "FAIL <name>: ..."; the exit code is 0 only if all
// passed. The failover scenario prints READY, waits for the caller's publishes and prints
// one "RESULT <json>" line.
import readline from "node:readline";
import WebSocket from "ws";
import { Sidecast, SidecastError } from "../../clients/js/sidecast.js";

const GATEWAY = (process.env.SC_GATEWAY || "").replace(/\/$/, "");
const EDGES = (process.env.SC_EDGES || "").split(",").filter(Boolean);
const TIMEOUT_MS = Number(process.env.SC_TIMEOUT_MS || 60000);
const killer = setTimeout(() => { console.log("FAIL whole run: over " + TIMEOUT_MS + " ms"); process.exit(1); }, TIMEOUT_MS);
killer.unref();

let failed = 0;
async function step(name, fn) {
  try {
    const extra = await fn();
    console.log("PASS " + name + (extra ? ": " + extra : ""));
  } catch (e) {
    failed++;
    console.log("FAIL " + name + ": " + (e && e.stack || e));
  }
}
function check(cond, what) { if (!cond) throw new Error(what); }
async function until(cond, ms, what) { // polls cond (may be async); throws after ms (a guard against a hang)
  const t0 = Date.now();
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() - t0 > ms) throw new Error("timed out waiting for " + what);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// Asks the caller (test_client_js.py) to do something to the stack: prints "DO <what>" and
// waits for its "OK" on stdin.
const stdinLines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function ask(what) {
  console.log("DO " + what);
  const { value, done } = await stdinLines.next();
  if (done || value.trim() !== "OK") throw new Error("the caller did not do " + what + ": " + value);
}

async function form(path, fields) {
  const r = await fetch(GATEWAY + path, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(fields).toString(),
  });
  const body = await r.json().catch(() => null);
  if (!r.ok) throw new Error(path + " answered " + r.status + " " + JSON.stringify(body));
  return body;
}

// alice's token provider: the password grant first, then her refresh token (rotated on
// every use). reasons: what the client said each time it asked. badFirst: the first answer
// is a token the edge must refuse (4001).
function aliceProvider(opts = {}) {
  let refresh = null;
  let bad = !!opts.badFirst;
  const p = async ({ reason }) => {
    p.reasons.push(reason);
    if (bad) { bad = false; return "not.a.valid-token"; }
    const body = refresh
      ? await form("/auth/token", { grant_type: "refresh_token", refresh_token: refresh })
      : await form("/auth/token", { grant_type: "password", username: "alice", password: "wonderland" });
    refresh = body.refresh_token || refresh;
    return body.access_token;
  };
  p.reasons = [];
  return p;
}

function client(extra) {
  return new Sidecast(Object.assign({ url: EDGES[0], WebSocket, httpUrl: GATEWAY }, extra));
}

// ---- basics: subscribe, publish with acks, rpc, refusals, presence ---------------------
async function basics() {
  const token = aliceProvider();
  const sc = client({ token });
  const states = [];
  sc.on("state", (s) => states.push(s.state));
  let welcome;
  await step("connect and welcome", async () => {
    welcome = await sc.connect();
    check(welcome.user === "alice", "welcome for " + welcome.user);
    check(sc.state === "connected" && sc.connId === welcome.conn_id, "state " + sc.state);
    check(states.join(",") === "connecting,connected", "states " + states);
    check(token.reasons.join(",") === "start", "provider asked for " + token.reasons);
    return "edge " + welcome.edge + ", conn " + welcome.conn_id;
  });

  await step("subscribe: events with increasing seq", async () => {
    const got = [];
    const sub = sc.subscribe("prices.BTC", (ev) => got.push(ev));
    await sub.ready();
    check(sub.state === "subscribed", "state " + sub.state);
    await until(() => got.length >= 3, 15000, "3 ticks");
    for (let i = 1; i < got.length; i++) check(got[i].seq > got[i - 1].seq, "seq not increasing");
    check(got.every((e) => e.topic === "prices.BTC" && typeof e.data.price === "number"), "bad tick");
    check(sub.lastSeq === got[got.length - 1].seq, "lastSeq " + sub.lastSeq);
    sub.unsubscribe();
    return got.length + " ticks, last seq " + got[got.length - 1].seq;
  });

  await step("a refused subscribe rejects ready() with its code", async () => {
    const sub = sc.subscribe("secret.plans");
    const err = await sub.ready().then(() => null, (e) => e);
    check(err instanceof SidecastError && err.code === "forbidden", "got " + err);
    check(sub.state === "refused" && err.topic === "secret.plans", "state " + sub.state);
    check(sc.state === "connected", "the connection is still up");
    return err.message;
  });

  const id = "js-" + process.pid + "-" + Date.now();
  await step("publish resolves with the ack; the same id again is a duplicate", async () => {
    const a = await sc.publish("chat.js", { text: "hello" }, { id });
    check(a.id === id && a.duplicate === false, JSON.stringify(a));
    const b = await sc.publish("chat.js", { text: "hello" }, { id });
    check(b.id === id && b.duplicate === true, JSON.stringify(b));
    const c = await sc.publish("chat.js", { text: "fresh id" });
    check(typeof c.id === "string" && c.id.length >= 16 && c.duplicate === false, JSON.stringify(c));
    return "ack " + JSON.stringify(a) + ", retry " + JSON.stringify(b);
  });

  await step("publish to a topic the token does not allow rejects with forbidden", async () => {
    const err = await sc.publish("prices.BTC", { price: 1 }).then(() => null, (e) => e);
    check(err instanceof SidecastError && err.code === "forbidden", "got " + err);
    return err.message;
  });

  await step("rpc resolves with the back end's answer, or rejects with its code", async () => {
    const q = await sc.rpc("prices.quote", { symbol: "ETH" });
    check(q && q.symbol === "ETH" && typeof q.price === "number", JSON.stringify(q));
    const err = await sc.rpc("prices.quote", { symbol: "NOPE" }).then(() => null, (e) => e);
    check(err instanceof SidecastError && err.code === "not_found", "got " + err);
    const none = await sc.rpc("nobody.home", {}).then(() => null, (e) => e);
    check(none instanceof SidecastError && ["no_responders", "forbidden"].includes(none.code), "got " + none);
    return "quote " + JSON.stringify(q) + "; NOPE: " + err.code + "; nobody.home: " + none.code;
  });

  await step("presence through the gateway lists this connection", async () => {
    const p = await until(async () => {
      const r = await sc.presence();
      return r.connections.some((c) => c.conn_id === sc.connId) ? r : null;
    }, 10000, "this connection in presence");
    check(p.user === "alice" && p.count >= 1, JSON.stringify(p));
    const err = await sc.presence("bob").then(() => null, (e) => e);
    check(err instanceof SidecastError && err.status === 403, "bob's presence: " + err);
    return p.count + " connection(s); bob's: " + err.status;
  });

  await step("close: state closed, nothing reconnects, requests reject", async () => {
    sc.close();
    check(sc.state === "closed", "state " + sc.state);
    const err = await sc.publish("chat.js", {}).then(() => null, (e) => e);
    check(err && err.code === "closed", "got " + err);
    await new Promise((r) => setTimeout(r, 300));
    check(sc.state === "closed" && sc.stats.connects === 1, "reconnected after close");
  });
}

// ---- tokens: a rejected token (4001), then token_expiring refreshed in band ------------
async function tokens() {
  const token = aliceProvider({ badFirst: true });
  const sc = client({ token, reconnectBaseMs: 200 });
  const closes = [];
  sc.on("close", (c) => closes.push(c.code));
  let welcome;
  await step("a token the edge refuses (4001) makes the client ask the provider again", async () => {
    welcome = await sc.connect();
    check(closes.join(",") === "4001", "closes " + closes);
    check(token.reasons.join(",") === "start,rejected", "provider asked for " + token.reasons);
    return "closes " + closes + ", provider reasons " + token.reasons;
  });

  await step("token_expiring: the provider's new token goes in band, the connection lives on", async () => {
    const before = sc.expiresAt;
    const refreshed = new Promise((r) => sc.once("refreshed", r));
    const warned = new Promise((r) => sc.once("tokenExpiring", r));
    const w = await warned;
    const m = await refreshed;
    check(token.reasons[token.reasons.length - 1] === "expiring", "reasons " + token.reasons);
    check(m.expires_at > before && sc.expiresAt === m.expires_at, "expires_at " + before + " -> " + m.expires_at);
    check(sc.connId === welcome.conn_id && sc.stats.connects === 1 && closes.length === 1, "reconnected");
    return "warned for " + w.expires_at + ", now valid until " + m.expires_at + " on conn " + sc.connId;
  });
  sc.close();
}

// ---- failover: two edges, the first killed mid-stream ----------------------------------
async function failover() {
  const token = aliceProvider();
  const topic = process.env.SC_TOPIC;
  const total = Number(process.env.SC_COUNT);
  const sc = new Sidecast({ url: EDGES, WebSocket, token, reconnectBaseMs: 300, pingIntervalMs: 2000, pongTimeoutMs: 3000 });
  const got = { [topic]: [], user: [] };
  const res = { edges: [], closes: [], resumed: [], errors: [] };
  sc.on("welcome", (m) => res.edges.push(m.edge));
  sc.on("close", (c) => res.closes.push(c.code));
  sc.on("resumed", (r) => res.resumed.push(r));
  sc.on("error", (e) => res.errors.push(e.code + ": " + e.message));
  const onEv = (ev) => { if (ev.data && ev.data.run === topic) got[ev.topic].push(ev.data.n); };
  const a = sc.subscribe(topic, onEv);
  const b = sc.subscribe("user", onEv);
  await sc.connect();
  await a.ready();
  await b.ready();
  console.log("READY " + sc.edge);
  const done = () => got[topic].includes(total) && got.user.includes(total) && sc.state === "connected";
  await until(done, Number(process.env.SC_WAIT_MS || 40000), "event " + total + " on both topics").catch((e) => res.errors.push(e.message));
  // a moment for anything after the last (a duplicate would come now)
  await new Promise((r) => setTimeout(r, 500));
  res.got = got;
  res.duplicatesDropped = sc.stats.duplicatesDropped;
  res.tokenReasons = token.reasons;
  sc.close();
  console.log("RESULT " + JSON.stringify(res));
}

// ---- reconnect: backoff with full jitter, capped, reset after a stable period; what is
// asked while the edge is away goes once it is back --------------------------------------
async function reconnect() {
  const dead = "ws://127.0.0.1:" + process.env.SC_DEAD_PORT + "/ws"; // nobody listens there
  await step("backoff: each delay in [0, min(cap, base * 2^attempt)), capped", async () => {
    const sc = client({ url: dead, token: "unused", reconnectBaseMs: 20, reconnectCapMs: 160 });
    const waits = [];
    sc.on("state", (s) => { if (s.state === "reconnecting") waits.push([s.attempt, s.delayMs]); });
    await until(() => waits.length >= 10, 20000, "10 failed attempts");
    sc.close();
    waits.forEach(([attempt, delay], i) => {
      check(attempt === i + 1, "attempt " + attempt + " at " + i);
      const ceil = Math.min(160, 20 * Math.pow(2, attempt - 1));
      check(delay >= 0 && delay < ceil, "attempt " + attempt + ": delay " + delay + " >= " + ceil);
    });
    check(sc.stats.connects === 0 && sc.state === "closed", "state " + sc.state);
    return waits.map((w) => w[1]).join(" ") + " ms";
  });

  await step("the attempt count is reset once a connection stays up stableMs", async () => {
    const sc = client({ url: [dead, dead, EDGES[1]], token: aliceProvider(), reconnectBaseMs: 20, stableMs: 300 });
    await sc.connect();
    const after = sc.attempt;
    check(after === 2 && sc.url === EDGES[1], "attempt " + after + " on " + sc.url);
    await until(() => sc.attempt === 0, 10000, "attempt back to 0");
    sc.close();
    return "2 failed attempts, then connected; attempt 0 after a stable period";
  });

  await step("a hung edge (SIGSTOP) is found out by ping/pong and left for the other", async () => {
    const sc = client({ url: [EDGES[0], EDGES[1]], token: aliceProvider(), pingIntervalMs: 300, pongTimeoutMs: 1000, reconnectBaseMs: 100 });
    const closes = [];
    sc.on("close", (c) => closes.push(c.code + " " + c.reason));
    await sc.connect();
    check(sc.edge === "edge-1", "on " + sc.edge);
    await ask("FREEZE edge1");
    try {
      await until(() => sc.edge === "edge-2" && sc.state === "connected", 20000, "the move to edge-2");
    } finally {
      await ask("THAW edge1");
    }
    check(closes.length === 1 && closes[0] === "4000 no pong in time", "closes " + closes);
    sc.close();
    return "closes " + closes + ", now on " + sc.edge;
  });

  await step("publish and rpc asked while the edge is away go once it is back", async () => {
    const sc = client({ url: EDGES[1], token: aliceProvider(), reconnectBaseMs: 100, reconnectCapMs: 400 });
    const first = await sc.connect();
    const states = [];
    sc.on("state", (s) => states.push(s.state));
    await ask("STOP edge2");
    await until(() => sc.state === "reconnecting", 10000, "reconnecting");
    const id = "outage-" + process.pid;
    const pub = sc.publish("chat.js", { text: "while away" }, { id, timeoutMs: 30000 });
    const rpc = sc.rpc("prices.quote", { symbol: "SOL" }, { timeoutMs: 30000 });
    await ask("START edge2");
    const a = await pub;
    const q = await rpc;
    check(a.id === id && a.duplicate === false, JSON.stringify(a));
    check(q.symbol === "SOL", JSON.stringify(q));
    check(sc.connId !== first.conn_id && sc.state === "connected", "conn " + sc.connId);
    sc.close();
    return "ack " + JSON.stringify(a) + ", quote " + q.price + " after " + states.join(",");
  });
}

// ---- resume reports: a since still retained is recovered; one purged is history_gone ----
async function resume() {
  const kept = process.env.SC_KEPT_TOPIC, keptSince = Number(process.env.SC_KEPT_SINCE);
  const gone = process.env.SC_GONE_TOPIC, goneSince = Number(process.env.SC_GONE_SINCE);
  const sc = client({ token: aliceProvider() });
  const evs = { [kept]: [], [gone]: [] };
  const reports = {};
  for (const [t, since] of [[kept, keptSince], [gone, goneSince]]) {
    sc.subscribe(t, { since }, (ev) => evs[t].push(ev.data.n)).on("resumed", (r) => { reports[t] = r; });
  }
  await sc.connect();
  await until(() => reports[kept] && reports[gone], 20000, "both resume reports");
  await step("a since still retained: replayed, reported recovered", async () => {
    const r = reports[kept];
    check(r.recovered === true && r.since === keptSince, JSON.stringify(r));
    await until(() => evs[kept].length >= 2, 10000, "the replay");
    check(evs[kept].join(",") === "2,3", "replayed " + evs[kept]);
    return JSON.stringify(r) + ", replayed n " + evs[kept];
  });
  await step("a since no longer retained: reported history_gone with the oldest seq", async () => {
    const r = reports[gone];
    check(r.recovered === false && r.code === "history_gone" && r.since === goneSince, JSON.stringify(r));
    check(r.oldest === Number(process.env.SC_GONE_OLDEST), "oldest " + r.oldest);
    check(sc.lastSeq(gone) === undefined || sc.lastSeq(gone) > goneSince, "position " + sc.lastSeq(gone));
    return JSON.stringify(r);
  });
  sc.close();
}

// ---- since "last" and mode "latest" passed through to the edge ----------------------------
async function last() {
  const topic = process.env.SC_LAST_TOPIC;
  const sc = client({ token: aliceProvider() });
  const got = [];
  sc.subscribe(topic, { since: "last", mode: "latest" }, (ev) => got.push(ev.data.n));
  await sc.connect();
  await step("since last: the latest retained event first", async () => {
    await until(() => got.length >= 1, 10000, "the latest event");
    check(got[0] === 3, "first n " + got[0]);
    return "n " + got[0] + " of 1..3";
  });
  sc.close();
}

const scenarios = { basics, tokens, failover, reconnect, resume, last };
const name = process.argv[2];
if (!scenarios[name]) { console.log("usage: run.mjs " + Object.keys(scenarios).join("|")); process.exit(2); }
await scenarios[name]();
console.log(failed ? "FAIL " + name : "PASS " + name);
process.exit(failed ? 1 : 0);
