// The OpenID provider Vallum's integration tests sign in against: panva's certified
// `oidc-provider`, configured from one JSON file so each test run can choose its own port,
// certificate, clients, users and token lifetimes.
//
//   node provider.mjs /path/to/config.json
//
// config.json:
//   { "port": 9443, "issuer": "https://127.0.0.1:9443",
//     "cert_file": "...", "key_file": "...",
//     "clients": [{"client_id": "vallum", "client_secret": "s3cret",
//                  "redirect_uris": ["https://auth.example.test/.vallum/callback"],
//                  "post_logout_redirect_uris": ["https://app.example.test/"]}],
//     "users": {"alice": {"email": "alice@example.test", "name": "Alice", "groups": ["admins"]}},
//     "ttl": {"IdToken": 3600, "AccessToken": 3600},
//     "resource_audience": "https://api.example.test", "access_token_audience": "vallum",
//     "rotate_refresh_tokens": false }
//
// A user may carry "email_verified" (default true) and "azp" (an authorized party put in the ID
// token, default none). With "rotate_refresh_tokens" every refresh returns a new refresh token
// and a second use of a spent one revokes the whole grant (oidc-provider's reuse detection).
//
// Sign in on the provider's dev login form with a user name from "users" (any password).
// An authorization request carrying `resource=<resource_audience>` gets a JWT access token
// (audience = access_token_audience, default resource_audience) instead of an opaque one, for
// the bearer-token tests.
// Prints "ready <issuer>" on stdout once it listens.
import { readFileSync } from 'node:fs';
import { generateKeyPairSync } from 'node:crypto';
import https from 'node:https';
import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const users = config.users ?? {};
const ttl = config.ttl ?? {};
const resourceAudience = config.resource_audience ?? null;
const accessTokenAudience = config.access_token_audience ?? resourceAudience;

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingJwk = { ...privateKey.export({ format: 'jwk' }), kid: config.kid ?? 'test-key-1', use: 'sig', alg: 'RS256' };

const provider = new Provider(config.issuer, {
  clients: config.clients.map((c) => ({
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    ...c,
  })),
  jwks: { keys: [signingJwk] },
  cookies: { keys: ['vallum-test-provider-cookie-key'] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'groups', 'azp'],
  },
  conformIdTokenClaims: false,
  issueRefreshToken: async () => true,
  ...(config.rotate_refresh_tokens ? { rotateRefreshToken: () => true } : {}),
  // JWT access tokens carry the user's email and groups, as most IdPs' access tokens do.
  extraTokenClaims: async (_ctx, token) => {
    const user = users[token.accountId];
    if (!user || token.kind !== 'AccessToken') return undefined;
    return { email: user.email, groups: user.groups ?? [] };
  },
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (_ctx, _client, oneOf) => oneOf,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resource) => {
        if (resourceAudience === null || resource !== resourceAudience) {
          throw new Provider.errors.InvalidTarget();
        }
        return { scope: 'openid profile email', audience: accessTokenAudience, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } };
      },
    },
  },
  ttl: {
    AccessToken: ttl.AccessToken ?? 3600,
    IdToken: ttl.IdToken ?? 3600,
    RefreshToken: ttl.RefreshToken ?? 86400,
    Interaction: 600,
    Session: 86400,
    Grant: 86400,
    AuthorizationCode: 60,
  },
  async findAccount(_ctx, id) {
    const user = users[id];
    if (!user) return undefined;
    return {
      accountId: id,
      async claims() {
        const claims = {
          sub: id, email: user.email, email_verified: user.email_verified ?? true,
          name: user.name ?? id, groups: user.groups ?? [],
        };
        if (user.azp !== undefined) claims.azp = user.azp;
        return claims;
      },
    };
  },
});
provider.proxy = false;

const server = https.createServer(
  { cert: readFileSync(config.cert_file), key: readFileSync(config.key_file) },
  provider.callback(),
);
server.listen(config.port, '127.0.0.1', () => {
  process.stdout.write(`ready ${config.issuer}\n`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
