#!/usr/bin/env node
// A terminal on an allocation's console, in this terminal: connects to a
// websocket_url from POST /api/v1/allocations/{id}/terminal-token, puts the
// local terminal in raw mode, sends keystrokes as binary frames and the
// window size as {"type":"resize"} messages (now and on every SIGWINCH),
// writes what arrives. Ends with the session (exit code or error printed).
//   node scripts/console.mjs WEBSOCKET_URL
// Needs npm `ws` from tests/node (cd tests/node && npm ci).
import { createRequire } from "node:module";

let WebSocket;
try {
  const require = createRequire(new URL("../tests/node/package.json", import.meta.url));
  WebSocket = require("ws");
} catch {
  console.error("console.mjs: npm ws is missing: run (cd tests/node && npm ci)");
  process.exit(2);
}
const url = process.argv[2];
if (!url) {
  console.error("usage: node scripts/console.mjs WEBSOCKET_URL");
  process.exit(2);
}

const ws = new WebSocket(url, { perMessageDeflate: false });
let status = 0;
const size = () => {
  if (process.stdout.isTTY && ws.readyState === WebSocket.OPEN)
    ws.send(JSON.stringify({ type: "resize", cols: process.stdout.columns, rows: process.stdout.rows }));
};
ws.on("unexpected-response", (req, res) => {
  let body = "";
  res.on("data", (d) => (body += d));
  res.on("end", () => {
    console.error(`console.mjs: refused (${res.statusCode}): ${body}`);
    process.exit(1);
  });
});
ws.on("open", () => {
  if (process.stdin.isTTY) process.stdin.setRawMode(true);
  process.stdin.on("data", (d) => ws.send(d, { binary: true }));
  process.stdout.on("resize", size);
  size();
});
ws.on("message", (data, isBinary) => {
  if (isBinary) return process.stdout.write(data);
  const msg = JSON.parse(data.toString("utf8"));
  if (msg.type === "exit") status = msg.code;
  else if (msg.type === "error") {
    process.stderr.write(`\r\nconsole.mjs: ${msg.code}: ${msg.message}\r\n`);
    status = 1;
  }
});
ws.on("close", () => {
  if (process.stdin.isTTY) process.stdin.setRawMode(false);
  process.exit(status);
});
ws.on("error", (e) => {
  console.error(`console.mjs: ${e.message}`);
  process.exit(1);
});
