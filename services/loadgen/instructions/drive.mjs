// A fixed workload for instruction counts (services/loadgen/instructions.sh): one writer sends OPS
// one-character inserts into one document, each after the previous one's ack (so every op is a
// commit of its own and the count does not depend on timing), while READERS other connections
// receive every version. Prints "ready" once connected and opened, waits for a line on stdin (the
// script zeroes the counters then), runs, checks every reader got every version, prints "done".
//
//   node drive.mjs ws://127.0.0.1:PORT/v1/ws OPS READERS
import { createInterface } from "node:readline";

const [url, opsArg, readersArg] = process.argv.slice(2);
const ops = Number(opsArg);
const readers = Number(readersArg);
const doc = `instructions-${process.pid}`;

function connect(client) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    const waiting = [];
    const queue = [];
    ws.onmessage = (e) => {
      const frame = JSON.parse(e.data);
      if (frame.type === "error") reject(new Error(`${client}: ${e.data}`));
      const w = waiting.shift();
      if (w) w(frame);
      else queue.push(frame);
    };
    ws.onerror = () => reject(new Error(`${client}: connection failed`));
    const next = () => new Promise((r) => (queue.length ? r(queue.shift()) : waiting.push(r)));
    ws.onopen = async () => {
      ws.send(JSON.stringify({ type: "hello", protocol: 1, client }));
      await next(); // welcome
      ws.send(JSON.stringify({ type: "open", doc }));
      const snapshot = await next();
      resolve({ ws, next, version: snapshot.version });
    };
  });
}

const writer = await connect(`writer-${process.pid}`);
const others = await Promise.all(Array.from({ length: readers }, (_, i) => connect(`reader-${i}-${process.pid}`)));
const received = others.map(() => 0);
others.forEach((r, i) => {
  r.ws.onmessage = (e) => {
    if (JSON.parse(e.data).type === "op") received[i] += 1;
  };
});
console.log("ready");
const stdin = createInterface({ input: process.stdin });
await new Promise((r) => stdin.once("line", r));
let version = writer.version;
for (let seq = 1; seq <= ops; seq += 1) {
  writer.ws.send(JSON.stringify({ type: "op", doc, seq, base: version, op: version > 0 ? [version, "x"] : ["x"] }));
  const ack = await writer.next();
  if (ack.type !== "ack" || ack.seq !== seq) throw new Error(`expected the ack of ${seq}, got ${JSON.stringify(ack)}`);
  version = ack.version;
}
const deadline = Date.now() + 60_000;
while (received.some((n) => n < ops) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
if (received.some((n) => n < ops)) throw new Error(`readers got ${received} of ${ops} versions`);
console.log("done");
process.exit(0);
