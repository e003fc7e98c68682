// The JavaScript client (clients/js, served by the gateway as /sidecast.js) in headless
// Chromium, holding two edges, one of which the caller kills mid-stream
// (tests/integration/test_client_js.py, test_failover_in_chromium).
//
//   GATEWAY_URL=... SC_EDGES=ws://...,ws://... SC_TOPIC=chat.x SC_COUNT=100 node client-failover.test.mjs
//
// The page of the gateway's origin imports the module, gets alice's token from the
// gateway, subscribes SC_TOPIC and the inbox on the first edge and prints "READY <edge>";
// the caller then publishes events {run: SC_TOPIC, n: 1..SC_COUNT} on both and kills the
// edge half-way. Prints "RESULT <json>" (what the page received, its welcomes, closes and
// resume reports) once the page has n = SC_COUNT on both topics, or after SC_WAIT_MS.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

const GATEWAY_URL = (process.env.GATEWAY_URL || "").replace(/\/$/, "");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const EDGES = (process.env.SC_EDGES || "").split(",").filter(Boolean);
const TOPIC = process.env.SC_TOPIC;
const COUNT = Number(process.env.SC_COUNT);
const WAIT_MS = Number(process.env.SC_WAIT_MS || 40000);

const profile = fs.mkdtempSync(path.join(os.tmpdir(), "sidecast-client-e2e-"));
const killer = setTimeout(() => {
  console.log("FAIL whole run took too long");
  fs.rmSync(profile, { recursive: true, force: true });
  process.exit(1);
}, WAIT_MS + 40000);
killer.unref();

let ctx = null;
let rc = 1;
try {
  ctx = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, timeout: 30000,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const page = ctx.pages()[0] || await ctx.newPage();
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));
  await page.goto(GATEWAY_URL + "/", { waitUntil: "load" });
  const edge = await page.evaluate(async ({ edges, topic, total }) => {
    const { Sidecast } = await import("/sidecast.js");
    let refresh = null;
    const reasons = [];
    async function token({ reason }) {
      reasons.push(reason);
      const body = refresh ? { grant_type: "refresh_token", refresh_token: refresh }
        : { grant_type: "password", username: "alice", password: "wonderland" };
      const r = await fetch("/auth/token", { method: "POST", body: new URLSearchParams(body) });
      if (!r.ok) throw new Error("token endpoint answered " + r.status);
      const t = await r.json();
      refresh = t.refresh_token;
      return t.access_token;
    }
    const sc = new Sidecast({ url: edges, token, reconnectBaseMs: 300, pingIntervalMs: 2000, pongTimeoutMs: 3000 });
    const res = { got: { [topic]: [], user: [] }, edges: [], closes: [], resumed: [], errors: [], tokenReasons: reasons };
    window.__sc = sc;
    window.__res = res;
    sc.on("welcome", (m) => res.edges.push(m.edge));
    sc.on("close", (c) => res.closes.push(c.code));
    sc.on("resumed", (r) => res.resumed.push(r));
    sc.on("error", (e) => res.errors.push(e.code + ": " + e.message));
    const onEv = (ev) => { if (ev.data && ev.data.run === topic) res.got[ev.topic].push(ev.data.n); };
    const a = sc.subscribe(topic, onEv);
    const b = sc.subscribe("user", onEv);
    await sc.connect();
    await a.ready();
    await b.ready();
    return sc.edge;
  }, { edges: EDGES, topic: TOPIC, total: COUNT });
  console.log("READY " + edge);
  await page.waitForFunction(({ topic, total }) => {
    const r = window.__res;
    return r.got[topic].includes(total) && r.got.user.includes(total) && window.__sc.state === "connected";
  }, { topic: TOPIC, total: COUNT }, { timeout: WAIT_MS, polling: 50 }).catch((e) => {
    console.log("  waiting for the last event: " + String(e.message).split("\n")[0]);
  });
  await new Promise((r) => setTimeout(r, 500)); // a duplicate would come now
  const res = await page.evaluate(() => {
    const sc = window.__sc;
    sc.close();
    return Object.assign({ duplicatesDropped: sc.stats.duplicatesDropped }, window.__res);
  });
  if (pageErrors.length) res.errors.push(...pageErrors.map((m) => "page: " + m));
  console.log("RESULT " + JSON.stringify(res));
  rc = 0;
} catch (e) {
  console.log("FAIL " + String(e && e.stack || e));
} finally {
  if (ctx) await Promise.race([ctx.close().catch(() => {}), new Promise((r) => setTimeout(r, 10000))]);
  fs.rmSync(profile, { recursive: true, force: true });
}
process.exit(rc);
