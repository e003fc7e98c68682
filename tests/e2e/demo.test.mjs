// Headless browser test of the demo page (clients/web) against a running Sidecast stack:
// gateway (serving the page), auth, edge and producer.
//
//   GATEWAY_URL=http://127.0.0.1:8080 node tests/e2e/demo.test.mjs
//
// Uses Debian's chromium (CHROMIUM, default /usr/bin/chromium) through playwright-core.
// Certificates are verified as a user's browser does (no option turns that off): over https
// the caller trusts its CA through the NSS database in $HOME/.pki/nssdb
// (tests/integration/test_browser_tls.py). E2E_EXPECT_WS_URL: every WebSocket the page opens
// must go to that URL. E2E_EXPECT_UNTRUSTED=1: only load the page, and pass when Chromium
// refuses its certificate.
// Prints one PASS/FAIL line per step and exits non-zero on the first failure. Writes a
// screenshot to build/e2e/demo.png (SCREENSHOT overrides; demo-failure.png on failure).
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "..", "..");
const GATEWAY_URL = (process.env.GATEWAY_URL || "http://localhost:8080").replace(/\/$/, "");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SHOT = process.env.SCREENSHOT || path.join(ROOT, "build", "e2e", "demo.png");
const TOTAL_TIMEOUT_MS = Number(process.env.E2E_TIMEOUT_MS || 90000);
const STEP_TIMEOUT_MS = 20000;

let failed = false;
let ctx = null;
let profile = null;

function cleanup() {
  if (profile) {
    try { fs.rmSync(profile, { recursive: true, force: true }); } catch { /* best effort */ }
    profile = null;
  }
}

// The whole run is bounded: whatever hangs, the process ends.
const killer = setTimeout(() => {
  console.log(`FAIL e2e: whole run took longer than ${TOTAL_TIMEOUT_MS} ms`);
  cleanup();
  process.exit(1);
}, TOTAL_TIMEOUT_MS);
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
  profile = fs.mkdtempSync(path.join(os.tmpdir(), "sidecast-e2e-"));
  fs.mkdirSync(path.dirname(SHOT), { recursive: true });
  const args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"];
  // launchPersistentContext passes the fresh temp dir as --user-data-dir.
  ctx = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, args, timeout: 30000,
    viewport: { width: 1100, height: 900 },
  });
  ctx.setDefaultTimeout(STEP_TIMEOUT_MS);
  ctx.setDefaultNavigationTimeout(STEP_TIMEOUT_MS);
  const page = ctx.pages()[0] || await ctx.newPage();
  const pageErrors = [];
  const sockets = []; // the URL of every WebSocket the page opens
  page.on("websocket", (ws) => sockets.push(ws.url()));
  page.on("pageerror", (e) => pageErrors.push(e.message));
  page.on("console", (m) => { if (m.type() === "error") console.log(`  console: ${m.text()}`); });

  try {
    if (process.env.E2E_EXPECT_UNTRUSTED === "1") {
      await step("the page's certificate is refused (its CA is not trusted)", async () => {
        let r = null;
        try {
          r = await page.goto(GATEWAY_URL + "/", { waitUntil: "load" });
        } catch (e) {
          const m = /net::ERR_CERT_[A-Z_]+/.exec(String(e && e.message));
          if (m) return m[0];
          throw e;
        }
        throw new Error(`loaded (status ${r && r.status()}) although the CA is not trusted`);
      });
      return;
    }
    await step("page served by the gateway", async () => {
      const r = await page.goto(GATEWAY_URL + "/", { waitUntil: "load" });
      if (!r || r.status() !== 200) throw new Error(`GET / answered ${r && r.status()}`);
      const tls = await r.securityDetails();
      if (GATEWAY_URL.startsWith("https:")) {
        if (!tls) throw new Error("an https page without TLS details");
        return `${GATEWAY_URL} (${tls.protocol}, issuer "${tls.issuer}")`;
      }
      for (const id of ["username", "password", "login", "status", "chart", "buy", "orders",
        "expiry", "log"]) {
        if (await page.locator("#" + id).count() !== 1) throw new Error(`#${id} missing`);
      }
      return GATEWAY_URL;
    });

    await step("wrong password is shown as an error", async () => {
      await page.fill("#username", "alice");
      await page.fill("#password", "not-the-password");
      await page.click("#login");
      await page.locator("#error").filter({ hasText: /wrong username or password/i })
        .waitFor({ state: "visible" });
      const state = await page.getAttribute("#status", "data-state");
      if (state === "connected") throw new Error("connected with a wrong password");
    });

    let loggedInSecond = 0; // the wall-clock second by which the first token was issued
    await step("log in as alice and connect to the edge", async () => {
      await page.fill("#username", "alice");
      await page.fill("#password", "wonderland");
      await page.click("#login");
      await page.waitForSelector('#status[data-state="connected"]');
      loggedInSecond = Math.floor(Date.now() / 1000);
      if (await page.locator("#error").isVisible()) {
        throw new Error("error shown: " + await page.textContent("#error"));
      }
      const want = process.env.E2E_EXPECT_WS_URL;
      if (want && (sockets.length === 0 || sockets.some((u) => u !== want))) {
        throw new Error(`WebSockets opened to ${sockets.join(", ") || "nothing"}, want ${want}`);
      }
      return `${await page.textContent("#edge")} via ${sockets.join(", ")}`;
    });

    await step("price ticks arrive and are drawn", async () => {
      await page.waitForFunction(
        () => Number(document.getElementById("chart").dataset.ticks) >= 3, null,
        { timeout: STEP_TIMEOUT_MS });
      const ticks = await page.getAttribute("#chart", "data-ticks");
      const legend = await page.textContent("#legend");
      // the canvas holds more than a blank background
      const inked = await page.evaluate(() => {
        const c = document.getElementById("chart");
        const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 3; i < d.length; i += 4) if (d[i] !== 0) n++;
        return n;
      });
      if (inked < 100) throw new Error(`canvas nearly empty (${inked} pixels)`);
      return `${ticks} ticks, legend "${legend.trim()}"`;
    });

    let orderId = "";
    await step("Buy 1 BTC is accepted", async () => {
      await page.click("#buy");
      const li = page.locator("#orders li").filter({ hasText: /order \S+ (accepted|filled)/ }).first();
      await li.waitFor({ state: "visible" });
      orderId = await li.getAttribute("data-order-id");
      if (!orderId) throw new Error("no order id on the row: " + await li.textContent());
      return orderId;
    });

    await step("the fill arrives in the inbox", async () => {
      const li = page.locator(`#orders li.filled[data-order-id="${orderId}"]`);
      await li.waitFor({ state: "visible" });
      return (await li.textContent()).trim();
    });

    await step("the page's client (clients/js): rpc, publish acked once, presence", async () => {
      const r = await page.evaluate(async () => {
        const sc = window.sidecastDemo.client;
        const id = "e2e-" + Date.now() + "-" + Math.random().toString(16).slice(2);
        const quote = await sc.rpc("prices.quote", { symbol: "BTC" });
        const first = await sc.publish("chat.e2e", { text: "hello from the page" }, { id });
        const again = await sc.publish("chat.e2e", { text: "hello from the page" }, { id });
        const refused = await sc.publish("prices.BTC", { price: 1 }).then(() => null, (e) => e.code);
        let presence = null;
        for (let i = 0; i < 50; i++) { // Redis has the connection a moment after the welcome
          presence = await sc.presence();
          if (presence.connections.some((c) => c.conn_id === sc.connId)) break;
          await new Promise((res) => setTimeout(res, 100));
        }
        return { quote, first, again, refused, presence, connId: sc.connId };
      });
      if (!(r.quote && r.quote.symbol === "BTC" && r.quote.price > 0)) throw new Error("rpc: " + JSON.stringify(r.quote));
      if (r.first.duplicate !== false || r.again.duplicate !== true) throw new Error("acks: " + JSON.stringify([r.first, r.again]));
      if (r.refused !== "forbidden") throw new Error("publish to prices.BTC: " + r.refused);
      if (!r.presence.connections.some((c) => c.conn_id === r.connId)) throw new Error("presence: " + JSON.stringify(r.presence));
      return `quote ${r.quote.price}, ack duplicate ${r.first.duplicate} then ${r.again.duplicate}, ` +
        `presence ${r.presence.count} connection(s)`;
    });

    await step("token expiry countdown and in-band refresh", async () => {
      const before = Number(await page.getAttribute("#expiry", "data-expires-at"));
      const text = await page.textContent("#expiry");
      if (!/expires in \d+:\d\d/.test(text)) throw new Error(`#expiry says "${text}"`);
      // a later second than the first token's issue: the new token's exp is later too
      await page.waitForFunction((s) => Date.now() / 1000 >= s + 1, loggedInSecond);
      await page.evaluate(() => window.sidecastDemo.refreshToken());
      await page.locator("#expiry").filter({ hasText: /refreshed/ }).waitFor({ state: "visible" });
      const after = Number(await page.getAttribute("#expiry", "data-expires-at"));
      if (!(after > before)) throw new Error(`expires_at went from ${before} to ${after}`);
      const state = await page.getAttribute("#status", "data-state");
      if (state !== "connected") throw new Error(`status ${state} after refresh`);
      return `expires_at ${before} -> ${after}`;
    });

    if (process.env.E2E_EDGE_RESTART === "1") {
      // The caller (tests/integration/test_browser.py) stops the edge when it reads the
      // first marker line and starts it again at the second: the page must show
      // "reconnecting in N s", then connect and resubscribe.
      await step("reconnect after the edge restarts", async () => {
        const before = Number(await page.getAttribute("#chart", "data-ticks"));
        console.log("EDGE-RESTART-NOW");
        await page.waitForSelector('#status[data-state="reconnecting"]', { timeout: 20000 });
        const shown = await page.textContent("#status");
        console.log("EDGE-DOWN-SEEN");
        await page.waitForSelector('#status[data-state="connected"]', { timeout: 40000 });
        const after = Number(await page.getAttribute("#chart", "data-ticks"));
        await page.waitForFunction((n) =>
          Number(document.getElementById("chart").dataset.ticks) > n, after, { timeout: 15000 });
        return `"${shown}", ticks ${before} -> ${after} -> more after reconnecting`;
      });
    }

    await step("no script errors on the page", async () => {
      if (pageErrors.length) throw new Error(pageErrors.join("; "));
      const want = process.env.E2E_EXPECT_WS_URL;
      if (want && sockets.some((u) => u !== want)) {
        throw new Error(`a WebSocket went elsewhere: ${sockets.join(", ")}`);
      }
    });

    await step("screenshot", async () => {
      const ticks = Number(await page.getAttribute("#chart", "data-ticks"));
      await page.waitForFunction((n) => // a few more ticks on the chart
        Number(document.getElementById("chart").dataset.ticks) >= n + 5, ticks,
        { timeout: STEP_TIMEOUT_MS });
      await page.screenshot({ path: SHOT, fullPage: true, timeout: 10000 });
      return path.relative(ROOT, SHOT);
    });
  } catch (e) {
    failed = true;
    const fail = SHOT.replace(/\.png$/, "") + "-failure.png";
    try {
      await page.screenshot({ path: fail, fullPage: true, timeout: 5000 });
      console.log(`  screenshot of the failure: ${path.relative(ROOT, fail)}`);
      console.log(`  #status: ${await page.textContent("#status", { timeout: 1000 })}`);
      console.log(`  #log:\n    ${(await page.innerText("#log", { timeout: 1000 })).split("\n").slice(0, 15).join("\n    ")}`);
    } catch { /* the browser may be gone */ }
  }
}

try {
  await main();
} catch (e) {
  failed = true;
  console.log(`FAIL e2e: ${String(e && e.message || e).split("\n")[0]}`);
} finally {
  if (ctx) await Promise.race([ctx.close().catch(() => {}), new Promise((r) => setTimeout(r, 10000))]);
  cleanup();
}
console.log(failed ? "FAIL e2e demo page" : "PASS e2e demo page");
process.exit(failed ? 1 : 0);
