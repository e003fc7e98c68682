// Compiled (never run) by test_client_js.py with tsc --strict: index.d.ts must declare what
// an application writes. The path is mapped to clients/js by tsconfig.json.
import { Sidecast, SidecastError, DEFAULTS, type SidecastEvent, type ResumeReport } from "@sidecast/client";
import Default from "@sidecast/client";
const sc: Sidecast = new Default({ url: ["ws://a/ws", "ws://b/ws"], token: async ({ reason }) => "t" + reason, reconnectCapMs: 1000 });
sc.on("state", (s) => console.log(s.state, s.delayMs));
sc.on("error", (e: SidecastError) => console.log(e.code, e.closeCode));
const sub = sc.subscribe<{ price: number }>("prices.BTC", { since: "last", mode: "latest" }, (ev) => console.log(ev.data.price, ev.seq));
sub.on("resumed", (r: ResumeReport) => r.recovered || console.log(r.code, r.oldest));
sub.on("event", (ev: SidecastEvent) => ev.skipped);
async function f() {
  const w = await sc.connect();
  const a = await sc.publish("chat.x", { a: 1 }, { id: "x", timeoutMs: 5 });
  const q = await sc.rpc<{ price: number }>("prices.quote", { symbol: "BTC" });
  const p = await sc.presence();
  const r = await sc.refresh();
  return [w.conn_id, a.duplicate, q.price, p.connections[0].edge, r && r.expires_at, DEFAULTS.stableMs, sc.lastSeq("x")];
}
f();
// @ts-expect-error: since is a seq or "last"
sc.subscribe("x", { since: "first" });
// @ts-expect-error: no such event
sc.on("nope", () => {});
