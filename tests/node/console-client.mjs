// A scriptable WebSocket client for the console tests (npm `ws`, pinned in
// package-lock.json). It reads one JSON command per line on stdin and answers
// each with exactly one JSON line on stdout, so a C test drives it step by
// step. Every connection has an id; what arrives on it (terminal bytes,
// control messages, the close) is recorded and waited for with deadlines.
//
// Commands:
//   {"cmd":"connect","id":"a","url":"ws://...","headers":{...}}
//       -> {ok:true, session} | {ok:false, status, body}   (refused before the upgrade)
//   {"cmd":"send","id":"a","data":"text"}          a binary frame of the UTF-8 bytes
//   {"cmd":"send_text","id":"a","text":"..."}      a text frame, as is
//   {"cmd":"resize","id":"a","cols":N,"rows":M}    {"type":"resize",...} as a text frame
//   {"cmd":"pause","id":"a"} / {"cmd":"resume","id":"a"}   stop / start reading the socket
//   {"cmd":"wait_output","id":"a","includes":"s","timeout_ms":N}
//   {"cmd":"wait_bytes","id":"a","bytes":N,"timeout_ms":N}
//   {"cmd":"wait_closed","id":"a","timeout_ms":N}
//       -> {ok, code, reason, controls:[...]}
//   {"cmd":"output","id":"a"} -> {ok, bytes, lines, tail, controls}
//   {"cmd":"close","id":"a"}                       a normal close from the client
//   {"cmd":"quit"}
import readline from "node:readline";
import WebSocket from "ws";

const conns = new Map();
const TAIL = 4000;

function reply(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function state(id) {
  const c = conns.get(id);
  if (!c) throw new Error(`no connection ${id}`);
  return c;
}

function tail(c) {
  return c.text.slice(-TAIL);
}

function waitFor(c, pred, timeoutMs) {
  return new Promise((resolve) => {
    if (pred()) return resolve(true);
    const timer = setTimeout(() => {
      c.waiters.delete(check);
      resolve(false);
    }, timeoutMs);
    const check = () => {
      if (!pred()) return;
      clearTimeout(timer);
      c.waiters.delete(check);
      resolve(true);
    };
    c.waiters.add(check);
  });
}

function wake(c) {
  for (const w of [...c.waiters]) w();
}

function connect(cmd) {
  return new Promise((resolve) => {
    const c = {
      bytes: 0,
      text: "",
      newlines: 0,
      controls: [],
      closed: null,
      waiters: new Set(),
      ws: null,
    };
    const ws = new WebSocket(cmd.url, { headers: cmd.headers || {}, perMessageDeflate: false });
    c.ws = ws;
    ws.binaryType = "nodebuffer";
    ws.on("unexpected-response", (req, res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d) => (body += d));
      res.on("end", () => {
        let parsed = null;
        try {
          parsed = JSON.parse(body);
        } catch {
          parsed = body;
        }
        resolve({ ok: false, status: res.statusCode, body: parsed });
        req.destroy();
      });
    });
    ws.on("upgrade", (res) => {
      c.session = res.headers["x-console-session"] || null;
    });
    ws.on("open", () => {
      conns.set(cmd.id, c);
      resolve({ ok: true, session: c.session });
    });
    ws.on("message", (data, isBinary) => {
      if (isBinary) {
        c.bytes += data.length;
        for (const b of data) if (b === 10) c.newlines++;
        // Keep what the tests look for; a flood keeps only its end.
        c.text += data.toString("latin1");
        if (c.text.length > 1 << 20) c.text = c.text.slice(-(1 << 19));
      } else {
        let msg;
        try {
          msg = JSON.parse(data.toString("utf8"));
        } catch {
          msg = { unparsable: data.toString("utf8") };
        }
        c.controls.push(msg);
      }
      wake(c);
    });
    ws.on("close", (code, reason) => {
      c.closed = { code, reason: reason.toString("utf8") };
      wake(c);
    });
    ws.on("error", (err) => {
      if (!conns.has(cmd.id)) resolve({ ok: false, status: 0, error: String(err.message) });
      c.error = String(err.message);
      wake(c);
    });
  });
}

async function run(cmd) {
  switch (cmd.cmd) {
    case "connect":
      return connect(cmd);
    case "send": {
      const c = state(cmd.id);
      c.ws.send(Buffer.from(cmd.data, "utf8"), { binary: true });
      return { ok: true };
    }
    case "send_text":
      state(cmd.id).ws.send(cmd.text, { binary: false });
      return { ok: true };
    case "resize":
      state(cmd.id).ws.send(JSON.stringify({ type: "resize", cols: cmd.cols, rows: cmd.rows }));
      return { ok: true };
    case "pause":
      state(cmd.id).ws.pause();
      return { ok: true };
    case "resume":
      state(cmd.id).ws.resume();
      return { ok: true };
    case "wait_output": {
      const c = state(cmd.id);
      // Look only at what arrived since the last look (and a needle's
      // length before it): a flood must not be searched again per message.
      let seen = 0;
      const found = () => {
        const fresh = c.bytes - seen;
        seen = c.bytes;
        const n = Math.min(c.text.length, fresh + cmd.includes.length + 1);
        return c.text.slice(c.text.length - n).includes(cmd.includes);
      };
      const ok = await waitFor(c, found, cmd.timeout_ms || 20000);
      return { ok, bytes: c.bytes, tail: tail(c), closed: c.closed, controls: c.controls };
    }
    case "wait_bytes": {
      const c = state(cmd.id);
      const ok = await waitFor(c, () => c.bytes >= cmd.bytes, cmd.timeout_ms || 20000);
      return { ok, bytes: c.bytes, tail: tail(c), closed: c.closed };
    }
    case "wait_closed": {
      const c = state(cmd.id);
      const ok = await waitFor(c, () => c.closed !== null, cmd.timeout_ms || 20000);
      return {
        ok,
        code: c.closed ? c.closed.code : null,
        reason: c.closed ? c.closed.reason : null,
        controls: c.controls,
        bytes: c.bytes,
        tail: tail(c),
      };
    }
    case "output": {
      const c = state(cmd.id);
      return {
        ok: true,
        bytes: c.bytes,
        lines: c.newlines,
        tail: tail(c),
        controls: c.controls,
        closed: c.closed,
      };
    }
    case "close":
      state(cmd.id).ws.close(1000, "bye");
      return { ok: true };
    case "quit":
      for (const c of conns.values()) c.ws.terminate();
      reply({ ok: true });
      process.exit(0);
      return null;
    default:
      return { ok: false, error: `unknown command ${cmd.cmd}` };
  }
}

// Commands run one after another, in the order they arrive.
const rl = readline.createInterface({ input: process.stdin });
let chain = Promise.resolve();
rl.on("line", (line) => {
  chain = chain.then(async () => {
    let cmd;
    try {
      cmd = JSON.parse(line);
    } catch (e) {
      return reply({ ok: false, error: `bad command: ${e.message}` });
    }
    try {
      const r = await run(cmd);
      if (r) reply(r);
    } catch (e) {
      reply({ ok: false, error: String(e.message) });
    }
  });
});
rl.on("close", () => {
  chain.then(() => process.exit(0));
});
