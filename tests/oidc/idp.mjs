// tests/oidc/idp.mjs - a real OpenID provider (panva's oidc-provider, not written here) on
// loopback with TLS, for tests/integration/test_oidc.py. It issues JWT access tokens (RFC
// 9068, typ at+jwt) by the client credentials grant: for the resource "urn:sidecast" with
// audience "sidecast" (any other resource: "another-api"), and the granted scope as a space-separated "scope" claim, signed
// with a key it makes at start (ES256; an RS256 key too, which ID tokens would use).
//
// Environment: IDP_PORT, IDP_CERT and IDP_KEY (a certificate for 127.0.0.1 and its key),
// IDP_CLIENT_SECRET. Prints "ready" when it listens; stops on SIGTERM.
import { generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import Provider from 'oidc-provider';

const port = Number(process.env.IDP_PORT);
const issuer = `https://127.0.0.1:${port}`;

function key(type, options, kid, alg) {
  const { privateKey } = generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
}

const scopes = ['prices.*', 'chat.>', 'news.*'];
const provider = new Provider(issuer, {
  clients: [{
    client_id: 'sidecast-svc',
    client_secret: process.env.IDP_CLIENT_SECRET,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  scopes,
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:sidecast',
      useGrantedResource: () => true,
      // urn:sidecast is Sidecast (audience "sidecast"); any other resource is another API
      getResourceServerInfo: (ctx, resource) => ({
        scope: scopes.join(' '),
        audience: resource === 'urn:sidecast' ? 'sidecast' : 'another-api',
        accessTokenTTL: 300,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'ES256' } },
      }),
    },
  },
  jwks: {
    keys: [
      key('ec', { namedCurve: 'P-256' }, 'idp-es256', 'ES256'),
      key('rsa', { modulusLength: 2048 }, 'idp-rs256', 'RS256'),
    ],
  },
});

const server = https.createServer({
  key: fs.readFileSync(process.env.IDP_KEY),
  cert: fs.readFileSync(process.env.IDP_CERT),
}, provider.callback());
server.listen(port, '127.0.0.1', () => console.log('ready'));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
