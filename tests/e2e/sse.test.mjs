// Chromium's own EventSource against the edge's Server-Sent Events (docs/SSE.md), with no SDK:
// a page of the gateway's origin opens EDGE_URL/sse?topic=...&access_token=..., the test
// kills the edge and starts it again, and the browser's reconnect (its Last-Event-ID) must
// resume the stream with every event exactly once, in order.
//
//   GATEWAY_URL=... EDGE_URL=... SSE_TOKEN=... SSE_TOPIC=... SSE_LAST=N node tests/e2e/sse.test.mjs
//
// Talks with its caller (tests/integration/test_browser_sse.py) by lines on stdout: SSE-OPEN
// once the stream is live (the caller starts publishing n = 1..SSE_LAST), SSE-KILL-NOW after
// SSE_KILL_AT events (the caller kills the edge and starts it again), then one PASS/FAIL line
// per step; exits non-zero on the first failure.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

const GATEWAY_URL = process.env.GATEWAY_URL.replace(/\/$/, "");
const EDGE_URL = process.env.EDGE_URL.replace(/\/$/, "");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const TOPIC = process.env.SSE_TOPIC;
const LAST = Number(process.env.SSE_LAST);
const KILL_AT = Number(process.env.SSE_KILL_AT);
const TIMEOUT_MS = Number(process.env.E2E_TIMEOUT_MS || 90000);

let ctx = null;
let profile = null;
const killer = setTimeout(() => {
  console.log(`FAIL e2e: whole run took longer than ${TIMEOUT_MS} ms`);
  process.exit(1);
}, TIMEOUT_MS);
killer.unref();

async function step(name, fn) {
  const t0 = Date.now();
  try {
    const extra = await fn();
    console.log(`PASS ${name} (${((Date.now() - t0) / 1000).toFixed(2)}s)${extra ? ": " + extra : ""}`);
  } catch (e) {
    console.log(`FAIL ${name}: ${String(e && e.message || e).split("\n")[0]}`);
    throw e;
  }
}

async function main() {
  profile = fs.mkdtempSync(path.join(os.tmpdir(), "sidecast-e2e-sse-"));
  ctx = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, timeout: 30000,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const page = ctx.pages()[0] || await ctx.newPage();
  // each /sse request the browser made, with its Last-Event-ID (allHeaders: as sent, with
  // what the network stack added)
  const requests = [];
  page.on("request", (r) => {
    if (r.url().startsWith(EDGE_URL + "/sse")) requests.push(r.allHeaders());
  });
  page.on("console", (m) => { if (m.type() === "error") console.log(`  console: ${m.text()}`); });

  await step("a page of the gateway's origin", async () => {
    const r = await page.goto(GATEWAY_URL + "/", { waitUntil: "load" });
    if (!r || r.status() !== 200) throw new Error(`GET / answered ${r && r.status()}`);
    return GATEWAY_URL;
  });

  await step("EventSource opens the stream cross-origin (CORS) and subscribes", async () => {
    const url = `${EDGE_URL}/sse?topic=${encodeURIComponent(TOPIC)}` +
      `&access_token=${encodeURIComponent(process.env.SSE_TOKEN)}`;
    await page.evaluate((u) => {
      window.__sse = { events: [], ids: [], errors: 0, opens: 0, other: [] };
      const es = new EventSource(u);
      window.__es = es;
      es.onopen = () => { window.__sse.opens++; };
      es.onerror = () => { window.__sse.errors++; };
      es.onmessage = (e) => {
        const m = JSON.parse(e.data);
        if (m.type === "event") {
          window.__sse.events.push(m.data.n);
          window.__sse.ids.push(e.lastEventId);
        } else {
          window.__sse.other.push(m.type + (m.topic ? " " + m.topic : ""));
        }
      };
    }, url);
    await page.waitForFunction(
      (t) => window.__sse.other.includes("subscribed " + t), TOPIC, { timeout: 20000 });
    return `opens ${await page.evaluate(() => window.__sse.opens)}`;
  });
  console.log("SSE-OPEN");

  await step(`${KILL_AT} events arrive before the edge is killed`, async () => {
    await page.waitForFunction((k) => window.__sse.events.length >= k, KILL_AT,
      { timeout: 20000 });
    return `last id ${await page.evaluate(() => window.__sse.ids[window.__sse.ids.length - 1])}`;
  });
  console.log("SSE-KILL-NOW");

  await step("the browser notices the loss and reconnects by itself", async () => {
    await page.waitForFunction(() => window.__sse.errors >= 1, null, { timeout: 20000 });
    await page.waitForFunction(() => window.__sse.opens >= 2, null, { timeout: 40000 });
    return `errors ${await page.evaluate(() => window.__sse.errors)}, requests ${requests.length}`;
  });

  await step(`every event 1..${LAST} arrives once, in order`, async () => {
    await page.waitForFunction((l) => window.__sse.events.includes(l), LAST, { timeout: 40000 });
    const got = await page.evaluate(() => window.__sse.events);
    const seen = new Set(got);
    const lost = [];
    for (let n = 1; n <= LAST; n++) if (!seen.has(n)) lost.push(n);
    const dups = got.length - seen.size;
    console.log(`  received ${got.length}, lost ${lost.length}, duplicated ${dups}`);
    if (lost.length || dups) throw new Error(`lost ${lost.slice(0, 10)}, duplicated ${dups}`);
    for (let i = 0; i < got.length; i++) {
      if (got[i] !== i + 1) throw new Error(`out of order at ${i}: ${got[i]}`);
    }
    return `${got.length} events`;
  });

  await step("the reconnect carried the browser's Last-Event-ID", async () => {
    const streams = (await Promise.all(requests)).map((h) => h["last-event-id"] || null);
    const resumed = streams.filter((h) => h);
    if (streams[0] !== null) throw new Error(`the first request had Last-Event-ID ${streams[0]}`);
    if (resumed.length === 0) throw new Error(`no request with Last-Event-ID: ${streams}`);
    return `requests ${streams.length}, resumed from ${resumed.join(", ")}`;
  });
  await page.evaluate(() => window.__es.close());
}

try {
  await main();
} catch {
  process.exitCode = 1;
} finally {
  if (ctx) await ctx.close().catch(() => {});
  if (profile) fs.rmSync(profile, { recursive: true, force: true });
}
