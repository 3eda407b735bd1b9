// TLS against a real local HTTPS server with a self-signed certificate (made with openssl): verification is on by
// default, and `caCertificates` trusts a private CA without turning verification off.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { UnreachableError } from '@drkit/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKeystoneClient, type KeystoneClientOptions } from './keystone-client.js';

let dir: string;
let server: Server;
let certificate: string;
let options: KeystoneClientOptions;

// An EC P-256 key: generated at once, where an RSA key takes a random (and on a busy machine long) search for
// primes.
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'drkit-tls-'));
  await promisify(execFile)('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-days',
    '1',
    '-subj',
    '/CN=127.0.0.1',
    '-addext',
    'subjectAltName=IP:127.0.0.1',
    '-keyout',
    join(dir, 'key.pem'),
    '-out',
    join(dir, 'cert.pem'),
  ]);
  certificate = await readFile(join(dir, 'cert.pem'), 'utf8');
  server = createServer(
    { key: await readFile(join(dir, 'key.pem')), cert: certificate },
    (request, response) => {
      const issued = new Date();
      response.writeHead(201, { 'content-type': 'application/json', 'x-subject-token': 'tls-token' });
      response.end(
        JSON.stringify({
          token: {
            issued_at: issued.toISOString(),
            expires_at: new Date(issued.getTime() + 3600_000).toISOString(),
            user: { id: 'u', name: 'admin' },
            project: { id: 'p', name: 'admin' },
            roles: [],
            catalog: [],
            method: request.method,
          },
        }),
      );
    },
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  options = {
    authUrl: `https://127.0.0.1:${(server.address() as AddressInfo).port}/v3`,
    userDomainId: 'default',
    username: 'admin',
    password: 'tls-password',
    projectDomainId: 'default',
    projectName: 'admin',
    regionName: 'RegionOne',
  };
}, 60_000); // runs openssl: a process start, slow on 2 busy cores

afterAll(async () => {
  await new Promise<void>((resolve) => server?.close(() => resolve()));
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('TLS', () => {
  it('refuses a certificate no trusted CA signed: UnreachableError, not retried, naming caCertificates', async () => {
    const error = await createKeystoneClient(options)
      .authenticate()
      .catch((e: unknown) => e);
    expect(UnreachableError.isInstance(error), String(error)).toBe(true);
    expect((error as UnreachableError).retryable).toBe(false);
    expect((error as Error).message).toMatch(
      /the TLS certificate is not trusted \((DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN)\): pass the CA bundle of the OpenStack endpoints as `openstack\.caCertificates`/,
    );
  });

  it('trusts the certificate given in caCertificates, with verification on', async () => {
    const token = await createKeystoneClient({ ...options, caCertificates: certificate }).authenticate();
    expect(token.projectId).toBe('p');
  });
});
