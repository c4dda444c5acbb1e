// Object GETs over plain HTTP without node:http (src/s3/plain-get.ts), against a real radosgw: bodies
// of every size around the chunk boundaries arrive whole, on kept-alive connections; chunks handed
// back are read into again without spoiling any body; a body cut, aborted or given up on fails and
// leaves the next GET working; an answer without a length goes through node:http instead.
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Readable } from 'node:stream';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { S3Client } from '../../src/s3/client.js';
import { bytes } from '../fixtures/deis-sample.js';
import { startFaultProxy, type FaultProxy } from '../fixtures/fault-proxy.js';
import { gatewayOptions, type Stack } from '../fixtures/stack.js';
import { describeWithStack, gatewayClient, unique } from './helpers.js';

const signal = AbortSignal.timeout(120_000);
const KiB = 1024;
const CHUNK = 192 * KiB;
/** Sizes around the body chunk's edges, the first read's and none at all. */
const SIZES = [0, 1, 100, 64 * KiB + 5, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 5 * 1024 * KiB + 3];

/** A body's bytes (copied as read); a GET that found nothing fails. */
async function readAll(body: Readable | undefined): Promise<Buffer> {
  if (body === undefined) throw new Error('no object');
  const chunks: Buffer[] = [];
  for await (const chunk of body) chunks.push(Buffer.from(chunk as Buffer));
  return Buffer.concat(chunks);
}

/** Runs `use` with a client of a loopback HTTP server answering with `handler`, then stops both. */
async function withServer(
  stack: Stack,
  handler: http.RequestListener,
  use: (client: S3Client) => Promise<void>,
): Promise<void> {
  const server = http.createServer(handler);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const client = new S3Client({
    ...gatewayOptions(stack, 'v2'),
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
  });
  try {
    await use(client);
  } finally {
    client.close();
    server.closeAllConnections();
    server.close();
  }
}

describeWithStack('plain GETs', (stack) => {
  const bucket = unique('plain');
  const key = (size: number): string => `plain/${size}`;
  let proxy: FaultProxy;
  let viaProxy: S3Client;

  beforeAll(async () => {
    const writer = gatewayClient(stack, 'v2');
    await writer.createBucket(bucket, { signal });
    for (const size of SIZES) {
      const body = bytes(`plain-${size}`, size);
      await writer.putObject(bucket, key(size), body, {
        signal,
        size,
        contentType: 'application/octet-stream',
        metadata: { origin: 'plain-get-test' },
      });
    }
    writer.close();
    proxy = await startFaultProxy(Number(new URL(stack.rgwEndpoint).port));
    viaProxy = new S3Client({
      ...gatewayOptions(stack, 'v2'),
      endpoint: `http://127.0.0.1:${proxy.port}`,
      maxSockets: 2,
    });
  });
  afterAll(async () => {
    viaProxy.close();
    await proxy.cut();
  });

  it('reads every body whole with its head, and reads into the chunks handed back', async () => {
    const client = viaProxy;
    const seen = new Set<ArrayBufferLike>();
    let reused = 0;
    for (const round of [1, 2]) {
      for (const size of SIZES) {
        const got = await client.getObject(bucket, key(size), { signal });
        expect(got?.recycle).toBeTypeOf('function');
        const chunks: Buffer[] = [];
        for await (const chunk of got?.body ?? []) {
          const buffer = chunk as Buffer;
          if (seen.has(buffer.buffer)) reused++;
          seen.add(buffer.buffer);
          chunks.push(Buffer.from(buffer));
          // Handed back at once, as a target does once it has written a chunk.
          got?.recycle?.(buffer);
        }
        expect(
          Buffer.concat(chunks).equals(bytes(`plain-${size}`, size)),
          `${size} bytes, round ${round}`,
        ).toBe(true);
        expect(got?.head).toEqual(await client.headObject(bucket, key(size), { signal }));
        expect(got?.head).toMatchObject({ size, metadata: { origin: 'plain-get-test' } });
      }
    }
    expect(reused).toBeGreaterThan(20);
    // One connection for the GETs, one (node:http's) for the HEADs.
    expect(proxy.connections).toBeLessThanOrEqual(2);
  });

  it('hands a chunk given back twice to one body only', async () => {
    const client = gatewayClient(stack, 'v2');
    const size = 5 * 1024 * KiB + 3;
    const first = await client.getObject(bucket, key(size), { signal });
    const chunks: Buffer[] = [];
    for await (const chunk of first?.body ?? []) chunks.push(chunk as Buffer);
    for (const chunk of [...chunks, ...chunks]) first?.recycle?.(chunk);
    const both = await Promise.all(
      [1, 2].map(async () => {
        const got = await client.getObject(bucket, key(size), { signal });
        return readAll(got?.body);
      }),
    );
    for (const body of both) expect(body.equals(bytes(`plain-${size}`, size))).toBe(true);
    client.close();
  });

  it('fails a body the gateway cuts, then reads the next on a new connection', async () => {
    const size = 5 * 1024 * KiB + 3;
    const cutting = proxy.cutAfter('down', 2 * 1024 * KiB, { keepListening: true });
    const got = await viaProxy.getObject(bucket, key(size), { signal });
    await expect(readAll(got?.body)).rejects.toMatchObject({
      code: 'ECONNRESET',
    });
    await cutting;
    const again = await viaProxy.getObject(bucket, key(size), { signal });
    expect((await readAll(again?.body)).equals(bytes(`plain-${size}`, size))).toBe(true);
  });

  it('gets through when the gateway closed its kept-alive connections, and when it is gone says so', async () => {
    const warm = await viaProxy.getObject(bucket, key(100), { signal });
    await readAll(warm?.body);
    await proxy.cut();
    await proxy.open();
    const got = await viaProxy.getObject(bucket, key(100), { signal });
    expect((await readAll(got?.body)).equals(bytes('plain-100', 100))).toBe(true);
    await proxy.cut();
    await expect(viaProxy.getObject(bucket, key(100), { signal })).rejects.toMatchObject({
      status: 0,
      s3Code: 'ECONNREFUSED',
      message: `GET 127.0.0.1:${proxy.port}: ECONNREFUSED`,
    });
    await proxy.open();
  });

  it('ends a body on abort or when its reader lets go, and the next GET is whole', async () => {
    const client = gatewayClient(stack, 'v2');
    const size = 5 * 1024 * KiB + 3;
    const stop = new AbortController();
    const aborted = await client.getObject(bucket, key(size), { signal: stop.signal });
    const reading = readAll(aborted?.body);
    stop.abort(new Error('stopped by the test'));
    await expect(reading).rejects.toThrow('stopped by the test');
    const dropped = await client.getObject(bucket, key(size), { signal });
    for await (const chunk of dropped?.body ?? []) {
      expect((chunk as Buffer).length).toBeGreaterThan(0);
      break;
    }
    expect(dropped?.body.destroyed).toBe(true);
    for (const n of [1, 2, 3]) {
      const got = await client.getObject(bucket, key(size), { signal });
      expect((await readAll(got?.body)).equals(bytes(`plain-${size}`, size)), `${n}`).toBe(true);
    }
    client.close();
  });

  it('sends a GET again when its error answer is cut off, as a reset before any answer', async () => {
    const body = bytes('after-cut', 50 * KiB);
    let asked = 0;
    const answer: http.RequestListener = (req, res) => {
      asked++;
      req.resume();
      if (asked === 1) {
        // A 503 that promises 1000 bytes and dies after 10.
        res.writeHead(503, { 'content-type': 'application/xml', 'content-length': '1000' });
        res.write('<Error><Co');
        setTimeout(() => res.destroy(), 50);
        return;
      }
      res.writeHead(200, { etag: '"0123"', 'content-length': String(body.length) });
      res.end(body);
    };
    await withServer(stack, answer, async (client) => {
      const got = await client.getObject('any', 'key', { signal });
      expect((await readAll(got?.body)).equals(body)).toBe(true);
      expect(asked).toBe(2);
    });
  });

  it('reads an answer without a Content-Length through node:http', async () => {
    // radosgw always sends a length for an object; a server in front of it might not.
    const body = bytes('chunked', 300 * KiB);
    const answer: http.RequestListener = (req, res) => {
      res.writeHead(200, { etag: '"0123"', 'x-amz-meta-origin': 'chunked', 'transfer-encoding': 'chunked' });
      res.write(body.subarray(0, 1000));
      res.end(body.subarray(1000));
      req.resume();
    };
    await withServer(stack, answer, async (client) => {
      const got = await client.getObject('any', 'key', { signal });
      expect(got?.recycle).toBeUndefined();
      expect(got?.head).toMatchObject({ etag: '0123', metadata: { origin: 'chunked' } });
      expect((await readAll(got?.body)).equals(body)).toBe(true);
    });
  });
});
