// ws-broadcast.js - the Node peer of `sidecast bench --target ws` (docs/BENCHMARKS.md): a
// WebSocket broadcast server on npm's `ws`, fed by NATS through npm's `nats`, as a small
// Node push service would be written. Each client gets {"type":"welcome"}, may send
// {"type":"subscribe","topic":T} (answered {"type":"subscribed","topic":T}), and then gets
// the data of every NATS message on PREFIX+T as one text frame, unchanged. No auth.
//
//   node bench/peers/ws-broadcast.js PORT NATS_URL [PREFIX]     (PREFIX default "events.")
//
// The packages are installed at bench time into build/peers (bench/run.sh), never into the
// repository: run it with NODE_PATH=build/peers/node_modules. Listens on 127.0.0.1 only and
// prints "listening PORT" once both the listener and the NATS subscription are up.
'use strict';
const { WebSocketServer } = require('ws');
const { connect } = require('nats');

const port = Number(process.argv[2]);
const natsUrl = process.argv[3];
const prefix = process.argv[4] || 'events.';
if (!port || !natsUrl) {
  console.error('usage: ws-broadcast.js PORT NATS_URL [PREFIX]');
  process.exit(2);
}

const topics = new Map(); // topic -> Set of sockets

async function main() {
  const nc = await connect({ servers: natsUrl.replace(/^nats:\/\//, ''), name: 'ws-broadcast' });
  const sub = nc.subscribe(prefix + '>');
  const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false,
                                    clientTracking: false, maxPayload: 65536 });
  wss.on('connection', (ws) => {
    const mine = new Set();
    ws.on('message', (data, isBinary) => {
      if (isBinary) return;
      let m;
      try { m = JSON.parse(data); } catch (e) { return; }
      if (m && m.type === 'subscribe' && typeof m.topic === 'string') {
        let set = topics.get(m.topic);
        if (!set) topics.set(m.topic, (set = new Set()));
        set.add(ws);
        mine.add(m.topic);
        ws.send(JSON.stringify({ type: 'subscribed', topic: m.topic }));
      }
    });
    ws.on('close', () => {
      for (const t of mine) {
        const set = topics.get(t);
        if (set) set.delete(ws);
      }
    });
    ws.on('error', () => {});
    ws.send('{"type":"welcome"}');
  });
  await new Promise((resolve) => wss.on('listening', resolve));
  await nc.flush();
  console.log('listening ' + port);
  const stop = async () => { wss.close(); await nc.close(); process.exit(0); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  for await (const m of sub) {
    const set = topics.get(m.subject.slice(prefix.length));
    if (!set) continue;
    const data = Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength);
    for (const ws of set) if (ws.readyState === 1) ws.send(data, { binary: false });
  }
}

main().catch((e) => {
  console.error('ws-broadcast: ' + (e && e.message ? e.message : e));
  process.exit(1);
});
