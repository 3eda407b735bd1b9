import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { inspect } from 'node:util';
import { AuthenticationError, NotFoundError, ThrottledError } from '@drkit/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rejection } from '../rejection.js';
import { rgw } from './rgw-description.js';
import { freshBucket, removeBucket, rgwStore } from './rgw-fixture.js';

/**
 * A proxy in front of RGW on 127.0.0.1 that answers the next `storm` requests with 503 SlowDown and forwards the
 * rest unchanged (the Host header too, so that signatures still match).
 */
async function slowDownProxy(
  target: URL,
): Promise<{ server: Server; url: string; storm(n: number): void; refused(): number }> {
  let remaining = 0;
  let refused = 0;
  const server = createServer((incoming, outgoing) => {
    if (remaining > 0) {
      remaining--;
      refused++;
      incoming.resume();
      incoming.on('end', () => {
        outgoing.writeHead(503, { 'content-type': 'application/xml', 'retry-after': '0' });
        outgoing.end(
          '<?xml version="1.0"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>',
        );
      });
      return;
    }
    const forwarded = request(
      {
        host: target.hostname,
        port: target.port,
        method: incoming.method,
        path: incoming.url,
        headers: incoming.headers,
      },
      (reply) => {
        outgoing.writeHead(reply.statusCode ?? 502, reply.headers);
        reply.pipe(outgoing);
      },
    );
    forwarded.on('error', () => outgoing.destroy());
    incoming.pipe(forwarded);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    server,
    url: `http://127.0.0.1:${port}`,
    storm(n) {
      remaining = n;
    },
    refused: () => refused,
  };
}

describe('faults against Ceph RGW 16', () => {
  let bucket: string;
  beforeAll(async () => {
    bucket = await freshBucket();
  });
  afterAll(async () => {
    await removeBucket(bucket);
  });

  it('a wrong secret is an AuthenticationError that never shows the secret', async () => {
    const wrong = 'this-is-the-wrong-secret-0123456789abcdef';
    const store = rgwStore(bucket, {
      credentials: { accessKeyId: rgw().accessKeyId, secretAccessKey: wrong },
    });
    for (const action of [
      () => store.put('k', new Uint8Array(1)),
      () => store.get('k'),
      () => store.has('k'),
    ]) {
      const error = await rejection(action);
      expect(AuthenticationError.isInstance(error), inspect(error)).toBe(true);
      const text = [(error as Error).message, inspect(error, { depth: 10 }), JSON.stringify(error)].join(
        '\n',
      );
      expect(text).not.toContain(wrong);
      expect(text).not.toContain(rgw().secretAccessKey);
    }
    store.destroy();
  });

  it('a missing bucket is a NotFoundError naming the bucket', async () => {
    const store = rgwStore('drkit-no-such-bucket');
    for (const action of [
      () => store.put('k', new Uint8Array(1)),
      () => store.get('k'),
      async () => {
        for await (const _ of store.list('')) break;
      },
    ]) {
      const error = await rejection(action);
      expect(NotFoundError.isInstance(error), inspect(error)).toBe(true);
      expect((error as Error).message).toContain('drkit-no-such-bucket');
    }
    store.destroy();
  });

  it('an injected storm of 503 SlowDown is ridden out by the backoff, and a longer one ends in ThrottledError', async () => {
    const proxy = await slowDownProxy(new URL(rgw().endpoint));
    try {
      const waits: number[] = [];
      const store = rgwStore(bucket, {
        endpoint: proxy.url,
        retry: { attempts: 6, sleep: async (ms) => void waits.push(ms) },
      });
      proxy.storm(4);
      expect(
        await store.put('storm/a', new TextEncoder().encode('after the storm'), { ifAbsent: true }),
      ).toBe(true);
      expect(proxy.refused()).toBe(4);
      expect(waits).toHaveLength(4);
      proxy.storm(3);
      expect(new TextDecoder().decode(await store.get('storm/a'))).toBe('after the storm');
      expect(proxy.refused()).toBe(7);
      proxy.storm(6);
      expect(ThrottledError.isInstance(await rejection(() => store.get('storm/a')))).toBe(true);
      expect(proxy.refused()).toBe(13);
      store.destroy();
    } finally {
      await new Promise((resolve) => proxy.server.close(resolve));
    }
  });
});
