// SPDX-License-Identifier: MIT
// A real OpenID Connect provider (npm oidc-provider, pinned in package-lock.json)
// for gpuslice's single sign-on tests, on loopback, driven without a browser.
//
//   node oidc-provider.mjs --port PORT --client-id ID --client-secret SECRET
//        --redirect-uri URI [--alg RS256|ES256] [--auth client_secret_basic|client_secret_post]
//
// Keys are generated at start (so a restart is a key rotation); "READY <issuer>"
// is printed once it listens. Login and consent are one plain HTTP call:
//   POST /interaction/<uid>/login  login=<sub>&email=<e>&email_verified=true|false&name=<n>
// records the account's claims, grants openid/email/profile and redirects on.
//
// Test hooks (this script only runs inside tests, on 127.0.0.1):
//   POST /__test/mode  body "expired" | "tamper" | "unknown_kid" | "alg_none" |
//        "hs256" | "wrong_aud" | "multi_aud_no_azp" | "normal": how the next
//        token responses' ID token is altered (re-signed with the provider's own
//        key with exp/iat in the past; one signature byte flipped; re-signed with
//        a key that is not in the JWKS; unsigned; HMAC-signed with the client
//        secret; re-signed for another audience; two audiences without azp).
//   GET  /__test/stats -> {"jwks_requests":n,"token_requests":n,"discovery_requests":n}
import crypto from 'node:crypto';
import http from 'node:http';
import { parseArgs } from 'node:util';

import { SignJWT, importJWK, decodeJwt, decodeProtectedHeader } from 'jose';
import Provider from 'oidc-provider';

// The test reads stdout up to READY and then closes its end: later writes
// (oidc-provider's notices) must not kill the provider with EPIPE.
process.stdout.on('error', () => {});

const { values: opt } = parseArgs({
  options: {
    port: { type: 'string' },
    'client-id': { type: 'string', default: process.env.OIDC_CLIENT_ID },
    'client-secret': { type: 'string', default: process.env.OIDC_CLIENT_SECRET },
    'redirect-uri': { type: 'string', multiple: true },
    alg: { type: 'string', default: 'RS256' },
    auth: { type: 'string', default: 'client_secret_basic' },
  },
});
const port = Number(opt.port ?? process.env.OIDC_PORT);
const issuer = `http://127.0.0.1:${port}`;
const alg = opt.alg;
if (!port || !opt['client-id'] || !opt['client-secret'] || !opt['redirect-uri'] ||
    !['RS256', 'ES256'].includes(alg)) {
  console.error('usage: oidc-provider.mjs --port P --client-id ID --client-secret S ' +
                '--redirect-uri URI [--alg RS256|ES256] [--auth METHOD]');
  process.exit(2);
}

function newKey(kidPrefix) {
  const pair = alg === 'RS256'
    ? crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
    : crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = pair.privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: `${kidPrefix}-${crypto.randomBytes(6).toString('hex')}`, alg, use: 'sig' };
}
const signingKey = newKey('k');
const strayKey = newKey('stray'); // never published: tokens signed with it have an unknown kid

const accounts = new Map();
const stats = { jwks_requests: 0, token_requests: 0, discovery_requests: 0 };
let mode = 'normal';

const provider = new Provider(issuer, {
  clients: [{
    client_id: opt['client-id'],
    client_secret: opt['client-secret'],
    redirect_uris: opt['redirect-uri'],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: opt.auth,
    id_token_signed_response_alg: alg,
  }],
  jwks: { keys: [signingKey] },
  cookies: { keys: [crypto.randomBytes(16).toString('hex')] },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  conformIdTokenClaims: false,
  pkce: { methods: ['S256'], required: () => true },
  features: { devInteractions: { enabled: false } },
  findAccount(ctx, id) {
    const a = accounts.get(id);
    if (!a) return undefined;
    return { accountId: id, claims: () => ({ sub: id, ...a }) };
  },
});

// Alters the ID token of a token response as the test asked.
async function mangle(body) {
  if (!body || typeof body.id_token !== 'string' || mode === 'normal') return;
  const claims = decodeJwt(body.id_token);
  const header = decodeProtectedHeader(body.id_token);
  if (mode === 'tamper') {
    const [h, p, s] = body.id_token.split('.');
    const sig = Buffer.from(s, 'base64url');
    sig[sig.length >> 1] ^= 0x01;
    body.id_token = [h, p, sig.toString('base64url')].join('.');
    return;
  }
  if (mode === 'alg_none') {
    const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
    body.id_token = `${enc({ alg: 'none', typ: 'JWT' })}.${enc(claims)}.`;
    return;
  }
  if (mode === 'hs256') { // the key-confusion attack: HMAC keyed with a public value
    body.id_token = await new SignJWT(claims)
      .setProtectedHeader({ alg: 'HS256', kid: signingKey.kid })
      .sign(new TextEncoder().encode(opt['client-secret']));
    return;
  }
  let key = signingKey;
  if (mode === 'wrong_aud') {
    claims.aud = 'another-client';
  } else if (mode === 'multi_aud_no_azp') {
    claims.aud = [opt['client-id'], 'another-client'];
    delete claims.azp;
  } else if (mode === 'expired') {
    const now = Math.floor(Date.now() / 1000);
    claims.iat = now - 3600;
    claims.exp = now - 1800;
  } else if (mode === 'unknown_kid') {
    key = strayKey;
  }
  body.id_token = await new SignJWT(claims)
    .setProtectedHeader({ ...header, alg, kid: key.kid })
    .sign(await importJWK(key, alg));
}

provider.use(async (ctx, next) => {
  if (ctx.path === '/jwks') stats.jwks_requests++;
  if (ctx.path === '/token') stats.token_requests++;
  if (ctx.path === '/.well-known/openid-configuration') stats.discovery_requests++;
  await next();
  if (ctx.path === '/token' && ctx.status === 200) await mangle(ctx.body);
});

function readBody(req) {
  return new Promise((resolve, reject) => {
    let data = '';
    req.setEncoding('utf8');
    req.on('data', (c) => { data += c; });
    req.on('end', () => resolve(data));
    req.on('error', reject);
  });
}

function send(res, status, obj) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(obj));
}

async function interactionLogin(req, res) {
  const form = new URLSearchParams(await readBody(req));
  const accountId = form.get('login');
  if (!accountId) return send(res, 400, { error: 'login required' });
  accounts.set(accountId, {
    email: form.get('email') ?? `${accountId}@example.com`,
    email_verified: (form.get('email_verified') ?? 'true') === 'true',
    name: form.get('name') ?? accountId,
  });
  const details = await provider.interactionDetails(req, res);
  const grant = new provider.Grant({ accountId, clientId: details.params.client_id });
  grant.addOIDCScope(details.params.scope);
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { login: { accountId }, consent: { grantId } },
                                     { mergeWithLastSubmission: false });
}

const callback = provider.callback();
const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, issuer);
    if (url.pathname === '/__test/mode' && req.method === 'POST') {
      mode = (await readBody(req)).trim();
      return send(res, 200, { mode });
    }
    if (url.pathname === '/__test/stats') return send(res, 200, stats);
    const m = url.pathname.match(/^\/interaction\/([^/]+)(\/login)?$/);
    if (m && m[2] && req.method === 'POST') return await interactionLogin(req, res);
    if (m) {
      const details = await provider.interactionDetails(req, res);
      return send(res, 200, { uid: details.uid, prompt: details.prompt.name });
    }
    return callback(req, res);
  } catch (err) {
    console.error(err);
    if (!res.headersSent) send(res, 500, { error: String(err && err.message) });
  }
});

server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`READY ${issuer}\n`);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
