// Console round trip: one keystroke from the WebSocket client, through the
// controller, the agent link and the agent's PTY, and its echo back the same
// way. The terminal runs `cat` (canonical mode, echo on), so the echo comes
// from the kernel's line discipline on the node and the measurement is the
// relay itself. Keystrokes go one at a time; each is timed from the send to
// the arrival of its echo (process.hrtime on the client, so Node's own event
// loop is included). After every 64 keystrokes a newline lets cat print the
// line; that output is waited for and not timed.
//   node latency.mjs WEBSOCKET_URL [KEYSTROKES] [WARMUP]
// Prints one JSON object: {n, p50_ms, p90_ms, p99_ms, max_ms, mean_ms,
// throughput_mb_s (seq 1 500000 through the terminal)}.
import { createRequire } from "node:module";

const require = createRequire(new URL("../../tests/node/package.json", import.meta.url));
const WebSocket = require("ws");

const [url, nArg, warmArg] = process.argv.slice(2);
const N = Number(nArg || 2000);
const WARMUP = Number(warmArg || 200);
if (!url) {
  console.error("usage: node latency.mjs WEBSOCKET_URL [KEYSTROKES] [WARMUP]");
  process.exit(2);
}

const ws = new WebSocket(url, { perMessageDeflate: false });
ws.binaryType = "nodebuffer";
let text = "";
let bytes = 0;
let waiter = null;
ws.on("message", (data, isBinary) => {
  if (!isBinary) return;
  bytes += data.length;
  text += data.toString("latin1");
  if (text.length > 65536) text = text.slice(-4096);
  if (waiter) waiter();
});
ws.on("close", (code) => {
  console.error(`closed early: ${code}`);
  process.exit(1);
});

let step = "start";
function until(pred, timeoutMs = 30000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      waiter = null;
      reject(new Error(`timeout at ${step}; last output: ${JSON.stringify(text.slice(-200))}`));
    }, timeoutMs);
    const check = () => {
      if (!pred()) return;
      clearTimeout(t);
      waiter = null;
      resolve();
    };
    waiter = check;
    check();
  });
}

await new Promise((resolve, reject) => {
  ws.once("open", resolve);
  ws.once("error", reject);
});
await until(() => text.includes(":~"));
text = "";
ws.send(Buffer.from("cat\r"), { binary: true });
await until(() => text.includes("cat\r\n"));

const samples = [];
const keys = "abcdefghijklmnopqrstuvwxyz0123456789";
for (let i = 0; i < WARMUP + N; i++) {
  const k = keys[i % keys.length];
  text = "";
  step = `keystroke ${i} (${k})`;
  const t0 = process.hrtime.bigint();
  ws.send(Buffer.from(k), { binary: true });
  await until(() => text.includes(k));
  const dt = Number(process.hrtime.bigint() - t0) / 1e6;
  if (i >= WARMUP) samples.push(dt);
  if (i % 64 === 63) {
    text = "";
    step = `newline after ${i}`;
    ws.send(Buffer.from("\r"), { binary: true });
    await until(() => text.endsWith("\r\n") && text.length > 64);
  }
}

// Throughput, for the record: leave cat, print half a million lines.
text = "";
step = "leaving cat";
ws.send(Buffer.from("\r\x04"), { binary: true }); // the line, then EOF: cat ends
await until(() => text.includes(":~"));
step = "seq";
const b0 = bytes;
const t0 = process.hrtime.bigint();
ws.send(Buffer.from("seq 1 500000; echo seq-$((2*3))-done\r"), { binary: true });
await until(() => text.includes("seq-6-done"), 300000);
const secs = Number(process.hrtime.bigint() - t0) / 1e9;

samples.sort((a, b) => a - b);
const pct = (p) => samples[Math.min(samples.length - 1, Math.floor((p / 100) * samples.length))];
const r = (x) => Math.round(x * 1000) / 1000;
console.log(
  JSON.stringify({
    n: samples.length,
    p50_ms: r(pct(50)),
    p90_ms: r(pct(90)),
    p99_ms: r(pct(99)),
    max_ms: r(samples[samples.length - 1]),
    mean_ms: r(samples.reduce((a, b) => a + b, 0) / samples.length),
    throughput_mb_s: r((bytes - b0) / secs / 1e6),
  }),
);
ws.removeAllListeners("close");
ws.close();
process.exit(0);
