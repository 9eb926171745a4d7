// SPDX-License-Identifier: MIT
// A fake of Stripe's API for the billing tests, speaking Stripe's wire format:
// form-encoded requests in Stripe's bracket notation
// (line_items[0][price_data][currency]=usd), `Authorization: Bearer sk_...`,
// `Stripe-Version` and `Idempotency-Key` headers (a retried key with the same
// body replays the first answer, another body is an idempotency_error),
// JSON objects shaped as the `stripe` package's types say
// ("object":"checkout.session", "refund", "event"), and Stripe's error
// envelope {"error":{"type","code","message","param"}}.
//
// Like Stripe, it sends webhooks: each event is signed with the `stripe`
// package's own stripe.webhooks.generateTestHeaderString and POSTed, raw and
// pretty-printed as Stripe does, to --webhook-url.
//
// Test control (no auth), all JSON:
//   POST /_test/config          {webhook_url, checkout_delay_ms, webhook_before_reply, refund_status,
//                                fail_next: {status, type, code, message}}
//   GET  /_test/requests        every API request received (method, path, headers, form)
//   POST /_test/sessions/:id/complete | /expire | /async_failed
//                               settle a session and deliver the event; answers the delivery
//   POST /_test/deliver         {type, object, id?, secret?, timestamp?, truncate?, raw?}
//                               sign and deliver an arbitrary event
//   POST /_test/refund_external {payment_intent, amount}: a refund made in the dashboard,
//                               delivered as charge.refunded
// usage: node stripe-fake.mjs --port N --secret-key sk_test_... --webhook-url URL
//                             --webhook-secret whsec_...
// Prints "READY <port>" when listening.
import http from 'node:http';
import crypto from 'node:crypto';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const Stripe = require('stripe');
const stripe = Stripe('sk_test_fake_signing_only');

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, v, i, a) => (i % 2 === 0 ? acc.concat([[v.replace(/^--/, ''), a[i + 1]]]) : acc), []),
);
const port = Number(args.port || 0);
const secretKey = args['secret-key'];
const webhookUrl = args['webhook-url'];
const webhookSecret = args['webhook-secret'];
const apiVersion = '2026-10-28.endive';

const config = { webhook_url: webhookUrl, checkout_delay_ms: 0, webhook_before_reply: false, refund_status: 'succeeded', fail_next: null };
const requests = [];
const sessions = new Map(); // cs id -> session
const intents = new Map(); // pi id -> {session, amount, refunded, refunds: []}
const idempotency = new Map(); // key -> {body, status, response}

const rand = (n) => crypto.randomBytes(n).toString('base64url').replace(/[-_]/g, 'x').slice(0, n);
const now = () => Math.floor(Date.now() / 1000);

// Stripe's form decoding: a[b][0][c]=v -> {a: {b: {0: {c: v}}}} (indices stay keys; arrays where all keys are integers).
function parseForm(body) {
  const out = {};
  for (const part of body.split('&')) {
    if (!part) continue;
    const eq = part.indexOf('=');
    const k = decodeURIComponent((eq < 0 ? part : part.slice(0, eq)).replace(/\+/g, ' '));
    const v = eq < 0 ? '' : decodeURIComponent(part.slice(eq + 1).replace(/\+/g, ' '));
    const keys = k.match(/^[^[\]]+|\[[^[\]]*\]/g).map((s) => s.replace(/^\[|\]$/g, ''));
    let o = out;
    keys.forEach((key, i) => {
      if (i === keys.length - 1) o[key] = v;
      else o = o[key] ??= {};
    });
  }
  return out;
}

function stripeError(res, status, type, message, code, param) {
  const error = { type, message };
  if (code) error.code = code;
  if (param) error.param = param;
  error.request_log_url = 'https://dashboard.stripe.com/test/logs/req_' + rand(14);
  send(res, status, { error });
}

function send(res, status, obj, extraHeaders = {}) {
  const body = JSON.stringify(obj, null, 2);
  res.writeHead(status, {
    'content-type': 'application/json',
    'request-id': 'req_' + rand(14),
    'stripe-version': apiVersion,
    ...extraHeaders,
  });
  res.end(body);
}

function readBody(req) {
  return new Promise((resolve) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
  });
}

function event(type, object, id) {
  return {
    id: id || 'evt_' + rand(24),
    object: 'event',
    api_version: apiVersion,
    created: now(),
    data: { object },
    livemode: false,
    pending_webhooks: 1,
    request: { id: null, idempotency_key: null },
    type,
  };
}

// Signs with Stripe's library and POSTs like Stripe: raw pretty-printed JSON.
async function deliver(evt, opts = {}) {
  let payload = typeof opts.raw === 'string' ? opts.raw : JSON.stringify(evt, null, 2);
  const header =
    opts.header ??
    stripe.webhooks.generateTestHeaderString({
      payload,
      secret: opts.secret || webhookSecret,
      timestamp: opts.timestamp ?? now(),
    });
  if (opts.truncate) payload = payload.slice(0, payload.length - opts.truncate);
  const res = await fetch(config.webhook_url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json; charset=utf-8',
      'stripe-signature': header,
      'user-agent': 'Stripe/1.0 (+https://stripe.com/docs/webhooks)',
    },
    body: payload,
  });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, body: json ?? text, event_id: evt.id, header };
}

function requireAuth(req, res) {
  const auth = req.headers.authorization || '';
  if (!auth.startsWith('Bearer ')) {
    stripeError(res, 401, 'invalid_request_error',
      "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').");
    return false;
  }
  if (auth.slice(7) !== secretKey) {
    stripeError(res, 401, 'invalid_request_error', 'Invalid API Key provided: ' + auth.slice(7, 15) + '****');
    return false;
  }
  return true;
}

function createSession(form) {
  const li = form.line_items?.['0'];
  const pd = li?.price_data;
  if (form.mode !== 'payment') return [400, 'invalid_request_error', 'Missing required param: mode.', 'parameter_missing', 'mode'];
  if (!form.success_url) return [400, 'invalid_request_error', 'Missing required param: success_url.', 'parameter_missing', 'success_url'];
  if (!pd || !pd.currency || !pd.unit_amount || !pd.product_data?.name)
    return [400, 'invalid_request_error', 'Missing required param: line_items[0][price_data].', 'parameter_missing', 'line_items[0][price_data]'];
  if (!/^\d+$/.test(pd.unit_amount)) return [400, 'invalid_request_error', 'Invalid integer: ' + pd.unit_amount, 'parameter_invalid_integer', 'line_items[0][price_data][unit_amount]'];
  const amount = Number(pd.unit_amount) * Number(li.quantity || 1);
  if (amount < 50) return [400, 'invalid_request_error', 'The Checkout Session\'s total amount due must add up to at least $0.50 usd', 'amount_too_small', null];
  const id = 'cs_test_' + rand(58);
  const s = {
    id,
    object: 'checkout.session',
    amount_subtotal: amount,
    amount_total: amount,
    cancel_url: form.cancel_url || null,
    client_reference_id: form.client_reference_id || null,
    created: now(),
    currency: pd.currency,
    customer: null,
    customer_email: form.customer_email || null,
    expires_at: now() + 86400,
    livemode: false,
    metadata: form.metadata || {},
    mode: 'payment',
    payment_intent: null,
    payment_status: 'unpaid',
    status: 'open',
    success_url: form.success_url,
    url: 'https://checkout.stripe.com/c/pay/' + id + '#fidkdWxOYHwnPyd1blpxYHZxWjA0',
    _pi_metadata: form.payment_intent_data?.metadata || {},
  };
  sessions.set(id, s);
  return [200, s];
}

const publicSession = (s) => Object.fromEntries(Object.entries(s).filter(([k]) => !k.startsWith('_')));

function pay(s) {
  if (s.payment_intent) return;
  const pi = 'pi_' + rand(24);
  s.payment_intent = pi;
  s.payment_status = 'paid';
  s.status = 'complete';
  intents.set(pi, { session: s, amount: s.amount_total, refunded: 0, refunds: [], charge: 'ch_' + rand(24) });
}

function chargeObject(pi) {
  const p = intents.get(pi);
  return {
    id: p.charge,
    object: 'charge',
    amount: p.amount,
    amount_captured: p.amount,
    amount_refunded: p.refunded,
    currency: 'usd',
    metadata: p.session._pi_metadata,
    paid: true,
    payment_intent: pi,
    refunded: p.refunded === p.amount,
    refunds: { object: 'list', data: p.refunds.slice().reverse(), has_more: false, url: '/v1/charges/' + p.charge + '/refunds' },
    status: 'succeeded',
  };
}

function createRefund(form) {
  const p = intents.get(form.payment_intent);
  if (!p) return [400, 'invalid_request_error', 'No such payment_intent: \'' + form.payment_intent + '\'', 'resource_missing', 'payment_intent'];
  const amount = form.amount ? Number(form.amount) : p.amount - p.refunded;
  if (!Number.isInteger(amount) || amount <= 0) return [400, 'invalid_request_error', 'Invalid integer: ' + form.amount, 'parameter_invalid_integer', 'amount'];
  if (p.refunded >= p.amount) return [400, 'invalid_request_error', 'Charge ' + p.charge + ' has already been refunded.', 'charge_already_refunded', null];
  if (amount > p.amount - p.refunded)
    return [400, 'invalid_request_error', 'Refund amount ($' + (amount / 100).toFixed(2) + ') is greater than unrefunded amount on charge ($' + ((p.amount - p.refunded) / 100).toFixed(2) + ')', 'amount_too_large', 'amount'];
  const status = config.refund_status;
  const r = {
    id: 're_' + rand(24),
    object: 'refund',
    amount,
    charge: p.charge,
    created: now(),
    currency: 'usd',
    metadata: form.metadata || {},
    payment_intent: form.payment_intent,
    reason: form.reason || null,
    status,
    failure_reason: status === 'failed' ? 'lost_or_stolen_card' : undefined,
  };
  if (status !== 'failed') p.refunded += amount;
  p.refunds.push(r);
  return [200, r];
}

async function handleApi(req, res, body) {
  const form = parseForm(body);
  requests.push({
    method: req.method,
    path: req.url,
    authorization: req.headers.authorization || null,
    stripe_version: req.headers['stripe-version'] || null,
    idempotency_key: req.headers['idempotency-key'] || null,
    content_type: req.headers['content-type'] || null,
    body,
    form,
  });
  if (!requireAuth(req, res)) return;
  if (req.method === 'POST' && !(req.headers['content-type'] || '').startsWith('application/x-www-form-urlencoded'))
    return stripeError(res, 400, 'invalid_request_error', 'Invalid request: unsupported Content-Type. Please use application/x-www-form-urlencoded.');
  if (config.fail_next) {
    const f = config.fail_next;
    config.fail_next = null;
    return stripeError(res, f.status || 402, f.type || 'card_error', f.message || 'Your card was declined.', f.code || 'card_declined');
  }
  const key = req.headers['idempotency-key'];
  if (req.method === 'POST' && key) {
    const prior = idempotency.get(key);
    if (prior) {
      if (prior.body !== body)
        return stripeError(res, 400, 'idempotency_error',
          'Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than \'' + key + '\' if you meant to execute a different request.');
      return send(res, prior.status, prior.response, { 'idempotent-replayed': 'true' });
    }
  }
  let result;
  let m;
  if (req.method === 'POST' && req.url === '/v1/checkout/sessions') {
    result = createSession(form);
    if (result[0] === 200) {
      if (config.webhook_before_reply) {
        // The customer pays and Stripe's webhook arrives before our answer.
        pay(result[1]);
        await deliver(event('checkout.session.completed', publicSession(result[1])));
      }
      if (config.checkout_delay_ms) await new Promise((r) => setTimeout(r, config.checkout_delay_ms));
      result = [200, publicSession(result[1])];
    }
  } else if (req.method === 'GET' && (m = req.url.match(/^\/v1\/checkout\/sessions\/([^/?]+)$/))) {
    const s = sessions.get(m[1]);
    result = s ? [200, publicSession(s)] : [404, 'invalid_request_error', 'No such checkout.session: \'' + m[1] + '\'', 'resource_missing', 'id'];
  } else if (req.method === 'POST' && req.url === '/v1/refunds') {
    result = createRefund(form);
  } else {
    result = [404, 'invalid_request_error', 'Unrecognized request URL (' + req.method + ': ' + req.url + ').', null, null];
  }
  if (result.length === 2) {
    if (key) idempotency.set(key, { body, status: result[0], response: result[1] });
    return send(res, result[0], result[1]);
  }
  const [status, type, message, code, param] = result;
  stripeError(res, status, type, message, code, param);
}

async function handleTest(req, res, body) {
  const j = body ? JSON.parse(body) : {};
  let m;
  if (req.url === '/_test/config' && req.method === 'POST') {
    Object.assign(config, j);
    return send(res, 200, config);
  }
  if (req.url === '/_test/requests') return send(res, 200, { requests });
  if ((m = req.url.match(/^\/_test\/sessions\/([^/]+)\/(complete|expire|async_failed)$/))) {
    const s = sessions.get(m[1]);
    if (!s) return send(res, 404, { error: 'no such session' });
    let type;
    if (m[2] === 'complete') {
      pay(s);
      type = 'checkout.session.completed';
    } else if (m[2] === 'expire') {
      s.status = 'expired';
      type = 'checkout.session.expired';
    } else {
      type = 'checkout.session.async_payment_failed';
    }
    const evt = event(type, publicSession(s), j.event_id);
    const out = await deliver(evt, j);
    return send(res, 200, { ...out, session: publicSession(s), event: evt });
  }
  if (req.url === '/_test/deliver') {
    const evt = j.event || event(j.type, j.object, j.id);
    const out = await deliver(evt, j);
    return send(res, 200, { ...out, event: evt });
  }
  if (req.url === '/_test/refund_external') {
    const p = intents.get(j.payment_intent);
    if (!p) return send(res, 404, { error: 'no such payment_intent' });
    const r = { id: 're_' + rand(24), object: 'refund', amount: j.amount, charge: p.charge, created: now(), currency: 'usd', metadata: {}, payment_intent: j.payment_intent, reason: null, status: 'succeeded' };
    p.refunded += j.amount;
    p.refunds.push(r);
    const evt = event('charge.refunded', chargeObject(j.payment_intent));
    const out = await deliver(evt, j);
    return send(res, 200, { ...out, event: evt, refund: r });
  }
  if (req.url === '/_test/charge') {
    // The charge.refunded event for a payment intent as it stands (to redeliver, reorder).
    if (!intents.get(j.payment_intent)) return send(res, 404, { error: 'no such payment_intent' });
    return send(res, 200, { charge: chargeObject(j.payment_intent) });
  }
  send(res, 404, { error: 'no such test endpoint' });
}

const server = http.createServer(async (req, res) => {
  const body = await readBody(req);
  try {
    if (req.url.startsWith('/_test/')) await handleTest(req, res, body);
    else await handleApi(req, res, body);
  } catch (e) {
    if (!res.headersSent) stripeError(res, 500, 'api_error', 'fake: ' + e.message);
  }
});
server.listen(port, '127.0.0.1', () => {
  process.stdout.write('READY ' + server.address().port + '\n');
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
