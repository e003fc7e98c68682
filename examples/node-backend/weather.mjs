// weather.mjs - a Sidecast back end in another language: Node with npm's `nats`, nothing of
// Sidecast's own code. What it shows (docs/BACKENDS.md):
//   - an rpc method clients call over their socket: rpc.weather.now, data {"city":"paris"}
//     -> {"city":"paris","temp_c":12.5,"ts":...}; an unknown city is refused with the error
//     code not_found (header Sidecast-Error, the message as a JSON string body);
//   - events into the history stream: events.weather.<city> every WEATHER_PERIOD_MS, through
//     JetStream with a message id (a retry is stored once), so clients can replay with since;
//   - a publish hook (with EDGE_TOPICS giving weather.reports "publish": "hook"): the edge asks
//     hooks.publish.weather.reports before a client's report goes out; a report with an
//     unknown city or an impossible temperature is refused with a reason, a good one is
//     passed on stamped {"verified": true};
//   - client publishes read from client.weather.reports (who: the Sidecast-User header) and
//     turned into events.weather.<city> {"report":..., "by":<user>}.
// Environment: NATS_URL (nats://127.0.0.1:4222), NATS_USER / NATS_PASSWORD (a NATS user with
// these subjects, deploy/config/nats-auth.conf), WEATHER_PERIOD_MS (1000). Prints "ready" on
// stdout once subscribed; stops on SIGTERM / SIGINT.
import { connect, headers, JSONCodec, StringCodec } from "nats";

const CITIES = { paris: 12.5, oslo: -3.0, lima: 19.0 };
const jc = JSONCodec();
const sc = StringCodec();
const period = Number(process.env.WEATHER_PERIOD_MS || 1000);

const nc = await connect({
  servers: (process.env.NATS_URL || "nats://127.0.0.1:4222").split(","),
  user: process.env.NATS_USER || undefined,
  pass: process.env.NATS_PASSWORD || undefined,
  name: "weather",
  maxReconnectAttempts: -1,
});
const js = nc.jetstream();

function refuse(msg, code, message) {
  const h = headers();
  h.set("Sidecast-Error", code);
  msg.respond(sc.encode(JSON.stringify(message)), { headers: h });
}

// rpc.weather.now: the caller is in Sidecast-User (the edge put it there; only edges may
// publish rpc.> on Sidecast's bus)
nc.subscribe("rpc.weather.now", {
  queue: "weather",
  callback: (err, msg) => {
    if (err) return;
    let req = null;
    try { req = jc.decode(msg.data); } catch { return refuse(msg, "bad_request", "data must be JSON"); }
    const city = req && typeof req.city === "string" ? req.city : "";
    if (!(city in CITIES)) return refuse(msg, "not_found", "no such city");
    msg.respond(jc.encode({ city, temp_c: CITIES[city], ts: Date.now(),
                            asked_by: msg.headers?.get("Sidecast-User") || null }));
  },
});

// hooks.publish.weather.reports: the edge asks before a client's report goes out
nc.subscribe("hooks.publish.weather.reports", {
  queue: "weather",
  callback: (err, msg) => {
    if (err) return;
    let req = null;
    try { req = jc.decode(msg.data); } catch { return; }
    const r = req && req.data;
    if (!r || !(r.city in CITIES))
      return msg.respond(jc.encode({ allow: false, reason: "no such city" }));
    if (typeof r.temp_c !== "number" || r.temp_c < -90 || r.temp_c > 60)
      return msg.respond(jc.encode({ allow: false, reason: "temp_c out of range" }));
    msg.respond(jc.encode({ allow: true, data: { ...r, verified: true } }));
  },
});

let n = 0;
async function publish(city, data) {
  n += 1;
  // JetStream: stored in the history stream, deduplicated by the message id
  await js.publish(`events.weather.${city}`, jc.encode(data), { msgID: `weather-${process.pid}-${n}` });
}

// client.weather.reports: what users report, relayed as an event of the city
nc.subscribe("client.weather.reports", {
  queue: "weather",
  callback: (err, msg) => {
    if (err) return;
    let r = null;
    try { r = jc.decode(msg.data); } catch { return; }
    if (!r || !(r.city in CITIES) || typeof r.temp_c !== "number") return;
    CITIES[r.city] = r.temp_c;
    publish(r.city, { report: r, by: msg.headers?.get("Sidecast-User") || null }).catch(() => {});
  },
});

const timer = setInterval(() => {
  for (const [city, t] of Object.entries(CITIES))
    publish(city, { city, temp_c: t, ts: Date.now() }).catch(() => {}); // stream not there yet
}, period);

await nc.flush();
process.stdout.write("ready\n");

async function stop() {
  clearInterval(timer);
  await nc.drain();
  process.exit(0);
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
