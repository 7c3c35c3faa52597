// verify.mjs: verifies an identity assertion with the npm `jose` library (panva), the way a
// JavaScript upstream of Pomerium (or Vallum) does: a remote JWKS + jwtVerify with issuer,
// audience and algorithms ['ES256'].
//
// It exists so Vallum's tests can prove a library nobody here wrote accepts Vallum's assertion
// (and rejects tampered, expired, wrong-audience and unknown-kid tokens).
//
// Flags:
//   --token T          the JWT (or @FILE, or - for standard input)
//   --jwks-url URL     JWKS endpoint fetched over HTTPS (createRemoteJWKSet), or
//   --jwks-file F      a local JWKS document (createLocalJWKSet)
//   --issuer S         expected iss (optional)
//   --audience S       expected aud (optional)
//   --ca-file F        PEM CA bundle trusted for HTTPS (optional; default: Node's roots)
//   --resolve H=ADDR   connect to ADDR (ip or ip:port) whenever H is contacted (repeatable)
//
// Output: exit 0 and one JSON object {payload, protectedHeader} on stdout when accepted;
// exit 1 and the error (code and message) on stderr when rejected; exit 2 on usage errors.
import { readFileSync } from 'node:fs';
import https from 'node:https';
import { parseArgs } from 'node:util';
import * as jose from 'jose';

function usage(message) {
  process.stderr.write(`usage: ${message}\n`);
  process.exit(2);
}

function readToken(value) {
  if (!value) usage('--token is required');
  if (value === '-') return readFileSync(0, 'utf8').trim();
  if (value.startsWith('@')) return readFileSync(value.slice(1), 'utf8').trim();
  return value.trim();
}

function parseResolve(values) {
  const map = new Map();
  for (const item of values ?? []) {
    const at = item.indexOf('=');
    if (at <= 0 || at === item.length - 1) usage(`--resolve wants HOST=IP[:PORT], got ${item}`);
    const host = item.slice(0, at).toLowerCase();
    const target = item.slice(at + 1);
    const m = /^(.*?)(?::(\d+))?$/.exec(target);
    map.set(host, { ip: m[1], port: m[2] ? Number(m[2]) : undefined });
  }
  return map;
}

// A fetch for jose's [customFetch] hook that uses node:https, so a test CA and a host mapping
// can be given without touching the process-wide trust store or DNS.
function makeFetch(ca, resolve) {
  return (url, options) =>
    new Promise((resolvePromise, reject) => {
      const target = new URL(url);
      const mapped = resolve.get(target.hostname.toLowerCase());
      const headers = {};
      options.headers?.forEach?.((v, k) => {
        headers[k] = v;
      });
      const request = https.request(
        {
          protocol: 'https:',
          host: mapped ? mapped.ip : target.hostname,
          servername: target.hostname,
          port: mapped?.port ?? (target.port ? Number(target.port) : 443),
          path: `${target.pathname}${target.search}`,
          method: options.method ?? 'GET',
          headers: { ...headers, host: target.host },
          ca,
        },
        (response) => {
          const chunks = [];
          response.on('data', (c) => chunks.push(c));
          response.on('end', () => {
            const body = Buffer.concat(chunks);
            resolvePromise(
              new Response(body, {
                status: response.statusCode,
                headers: Object.entries(response.headers).flatMap(([k, v]) =>
                  Array.isArray(v) ? v.map((x) => [k, x]) : [[k, String(v)]],
                ),
              }),
            );
          });
          response.on('error', reject);
        },
      );
      request.on('error', reject);
      options.signal?.addEventListener?.('abort', () => request.destroy(new Error('aborted')));
      request.end();
    });
}

async function main() {
  let args;
  try {
    ({ values: args } = parseArgs({
      options: {
        token: { type: 'string' },
        'jwks-url': { type: 'string' },
        'jwks-file': { type: 'string' },
        issuer: { type: 'string' },
        audience: { type: 'string' },
        'ca-file': { type: 'string' },
        resolve: { type: 'string', multiple: true },
      },
      strict: true,
    }));
  } catch (err) {
    usage(err.message);
  }
  const token = readToken(args.token);
  let keySet;
  if (args['jwks-file']) {
    keySet = jose.createLocalJWKSet(JSON.parse(readFileSync(args['jwks-file'], 'utf8')));
  } else if (args['jwks-url']) {
    const ca = args['ca-file'] ? readFileSync(args['ca-file']) : undefined;
    keySet = jose.createRemoteJWKSet(new URL(args['jwks-url']), {
      [jose.customFetch]: makeFetch(ca, parseResolve(args.resolve)),
      timeoutDuration: 15000,
    });
  } else {
    usage('give --jwks-url or --jwks-file');
  }
  const options = { algorithms: ['ES256'] };
  if (args.issuer) options.issuer = args.issuer;
  if (args.audience) options.audience = args.audience;
  try {
    const { payload, protectedHeader } = await jose.jwtVerify(token, keySet, options);
    process.stdout.write(`${JSON.stringify({ payload, protectedHeader })}\n`);
    return 0;
  } catch (err) {
    process.stderr.write(`rejected: ${err.code ?? err.name}: ${err.message}\n`);
    return 1;
  }
}

process.exitCode = await main();
