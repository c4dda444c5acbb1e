// The gateway client against a real radosgw: what goes on the wire is signature V2 (all a Ceph hammer
// gateway accepts), odd keys, empty and multipart objects survive, both listing versions agree.
import { Readable } from 'node:stream';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { S3Client, S3Error } from '../../src/s3/client.js';
import { bytes, byteStream, ODD_KEYS, seedOddKeys } from '../fixtures/deis-sample.js';
import { recordingProxy, type Fault, type RecordingProxy } from '../fixtures/recording-proxy.js';
import { gatewayOptions } from '../fixtures/stack.js';
import { bucketContents, describeWithStack, gatewayClient, unique } from './helpers.js';

const signal = AbortSignal.timeout(120_000);

describeWithStack('gateway client', (stack) => {
  const bucket = unique('client');
  let proxy: RecordingProxy;
  let viaProxy: S3Client;

  beforeAll(async () => {
    proxy = await recordingProxy(stack.rgwEndpoint);
    // The Host header names the proxy; radosgw signs path and headers, not the host, under V2.
    viaProxy = new S3Client({
      endpoint: proxy.url,
      accessKey: stack.gatewayAccessKey,
      secretKey: stack.gatewaySecretKey,
      signatureVersion: 'v2',
      region: 'us-east-1',
    });
  });
  afterAll(async () => {
    viaProxy.close();
    await proxy.close();
  });

  it('sends only AWS signature V2 and radosgw accepts it for bucket, put, multipart, list and get', async () => {
    await viaProxy.createBucket(bucket, { signal });
    await seedOddKeys(viaProxy, bucket);
    await viaProxy.putObjectMultipart(
      bucket,
      'registry/images/big/layer',
      byteStream('big', 16 * 1024 * 1024 + 7),
      { signal, partSize: 5 * 1024 * 1024 },
    );
    const contents = await bucketContents(viaProxy, bucket);
    expect(proxy.seen.length).toBeGreaterThan(20);
    for (const request of proxy.seen) {
      expect(request.request.authorization).toMatch(
        new RegExp(`^AWS ${stack.gatewayAccessKey}:[A-Za-z0-9+/]{27}=$`),
      );
      expect(request.status).toBeLessThan(300);
    }
    expect(contents.get('registry/images/big/layer')?.etag).toMatch(/^[0-9a-f]{32}-4$/);
    expect(contents.get('odd/empty')).toMatchObject({ size: 0, contentType: 'application/x-empty' });
    for (const key of ODD_KEYS) {
      expect(contents.get(key)?.size).toBe(Buffer.byteLength(`body of ${key}\n`));
      expect(contents.get(key)?.metadata).toEqual({
        origin: 'deis-backup-test',
        'mixed-case': 'Value With Spaces',
      });
      expect(contents.get(key)?.contentType).toBe('text/plain; charset=utf-8');
    }
  });

  it('lists the same objects with ListObjects v1 and v2, across pages, with odd keys intact', async () => {
    const direct = gatewayClient(stack, 'v4');
    const list = async (listVersion: 1 | 2) => {
      const keys: string[] = [];
      for await (const item of direct.listObjects(bucket, { signal, listVersion, pageSize: 3 }))
        keys.push(item.key);
      return keys;
    };
    const v1 = await list(1);
    expect(v1).toEqual(await list(2));
    expect(v1).toEqual(expect.arrayContaining([...ODD_KEYS, 'odd/empty', 'registry/images/big/layer']));
    expect(new Set(v1).size).toBe(v1.length);
    direct.close();
  });

  it('lists on from where a caller stopped early, with the page it had asked for ahead cancelled', async () => {
    // One connection: a page left in flight that broke it would fail the listing after.
    const direct = new S3Client({ ...gatewayOptions(stack, 'v2'), maxSockets: 1 });
    const first: string[] = [];
    for await (const item of direct.listObjects(bucket, { signal, listVersion: 1, pageSize: 2 })) {
      first.push(item.key);
      break;
    }
    // The cancelled page must not fail unhandled (the test run reports that as an error).
    await new Promise((resolve) => setTimeout(resolve, 50));
    const all: string[] = [];
    for await (const item of direct.listObjects(bucket, { signal, listVersion: 1, pageSize: 2 }))
      all.push(item.key);
    expect(first).toHaveLength(1);
    expect(all[0]).toBe(first[0]);
    expect(all.length).toBeGreaterThan(4);
    direct.close();
  });

  it('lets a reader slower than timeoutMs take its time over a body', async () => {
    // Only the read has the short limit: on a busy machine the gateway may take longer to store.
    const writer = gatewayClient(stack, 'v2');
    const body = bytes('slow-reader', 8 * 1024 * 1024);
    await writer.putObject(bucket, 'slow/reader', body, {
      signal,
      size: body.length,
      contentType: 'application/octet-stream',
    });
    writer.close();
    const slow = new S3Client({ ...gatewayOptions(stack, 'v2'), timeoutMs: 1000 });
    const got = await slow.getObject(bucket, 'slow/reader', { signal });
    // Three timeouts long with the answer's bytes unread: the connection idles, the reader is why.
    await new Promise((resolve) => setTimeout(resolve, 3200));
    const chunks: Buffer[] = [];
    for await (const chunk of got?.body ?? []) chunks.push(chunk as Buffer);
    expect(Buffer.concat(chunks).equals(body)).toBe(true);
    slow.close();
  });

  it('gets the exact bytes of every odd key with signature V4 too', async () => {
    const v4 = gatewayClient(stack, 'v4');
    for (const key of ODD_KEYS) {
      const got = await v4.getObject(bucket, key, { signal });
      let text = '';
      for await (const chunk of got?.body ?? []) text += (chunk as Buffer).toString('utf8');
      expect(text).toBe(`body of ${key}\n`);
    }
    expect(await v4.getObject(bucket, 'no/such/key', { signal })).toBeUndefined();
    // A missing bucket is an error, not a missing object.
    await expect(v4.getObject(`${bucket}-none`, 'key', { signal })).rejects.toMatchObject({
      status: 404,
      s3Code: 'NoSuchBucket',
    });
    v4.close();
  });

  it('stores a body streamed with V4 as it came, with no Content-Encoding, as a restore must', async () => {
    // radosgw 16.2 keeps the `aws-chunked` encoding of a body sent in signed chunks on the object,
    // so the gateway's client sends streams unsigned.
    const v4 = gatewayClient(stack, 'v4');
    const body = bytes('v4-streamed', 200_000);
    await v4.putObject(bucket, 'v4/streamed', Readable.from([body]), { signal, size: body.length });
    const got = await viaProxy.getObject(bucket, 'v4/streamed', { signal });
    const answer = proxy.seen.findLast((e) => e.method === 'GET' && e.path === `/${bucket}/v4/streamed`);
    expect(answer?.status).toBe(200);
    expect(answer?.answer['content-encoding']).toBeUndefined();
    const chunks: Buffer[] = [];
    for await (const chunk of got?.body ?? []) chunks.push(chunk as Buffer);
    expect(Buffer.concat(chunks).equals(body)).toBe(true);
    await v4.deleteObject(bucket, 'v4/streamed', { signal });
    v4.close();
  });

  it('sends a listing page, a GET and a HEAD again after a 5xx or a reset, four times at most', async () => {
    const key = 'retry/object';
    const body = bytes('retry', 70_000);
    await viaProxy.putObject(bucket, key, body, { signal, size: body.length });
    // Each request's first attempts fail as listed, then it goes through.
    // Requests by name: the listing's first page, its later pages (the second one faults), the
    // object's GET and HEAD.
    const firstPage = `GET /${bucket}?max-keys=2`;
    const laterPage = `GET /${bucket}?max-keys=2&marker=`;
    const plan = new Map<string, Fault[]>([
      [firstPage, [503, 'reset']],
      [laterPage, [502]],
      [`GET /${bucket}/${key}`, [500, 503]],
      [`HEAD /${bucket}/${key}`, ['reset']],
    ]);
    const tries = new Map<string, number>();
    proxy.fault = ({ method, path }) => {
      const request = `${method} ${path}`;
      const name = request.startsWith(laterPage)
        ? laterPage
        : [...plan.keys()].find((start) => request === start || request.startsWith(`${start}?`));
      if (name === undefined) return undefined;
      const n = tries.get(name) ?? 0;
      tries.set(name, n + 1);
      return plan.get(name)?.[n];
    };
    try {
      const keys: string[] = [];
      for await (const item of viaProxy.listObjects(bucket, { signal, listVersion: 1, pageSize: 2 }))
        keys.push(item.key);
      const direct = await bucketContents(gatewayClient(stack, 'v2'), bucket);
      expect(keys).toEqual([...direct.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)));
      const got = await viaProxy.getObject(bucket, key, { signal });
      const chunks: Buffer[] = [];
      for await (const chunk of got?.body ?? []) chunks.push(chunk as Buffer);
      expect(Buffer.concat(chunks).equals(body)).toBe(true);
      expect(await viaProxy.headObject(bucket, key, { signal })).toMatchObject({ size: body.length });
      expect(tries.get(laterPage)).toBeGreaterThan(2);
      tries.delete(laterPage);
      expect(Object.fromEntries(tries)).toEqual({
        [firstPage]: 3,
        [`GET /${bucket}/${key}`]: 3,
        [`HEAD /${bucket}/${key}`]: 2,
      });

      // Refused for good: four attempts, then the gateway's answer, saying so.
      tries.clear();
      plan.set(`GET /${bucket}/${key}`, [503, 503, 503, 503, 503]);
      await expect(viaProxy.getObject(bucket, key, { signal })).rejects.toMatchObject({
        status: 503,
        s3Code: 'SlowDown',
        message: expect.stringMatching(/ \(4 attempts\)$/) as unknown,
      });
      expect(tries.get(`GET /${bucket}/${key}`)).toBe(4);

      // Not sent again: a missing key (404), and a POST, which may have taken effect.
      expect(await viaProxy.getObject(bucket, 'retry/missing', { signal })).toBeUndefined();
      plan.set(`POST /${bucket}/retry/multipart?uploads`, [503]);
      const upload = viaProxy.putObjectMultipart(
        bucket,
        'retry/multipart',
        byteStream('mp', 6 * 1024 * 1024),
        {
          signal,
          partSize: 5 * 1024 * 1024,
        },
      );
      await expect(upload).rejects.toMatchObject({ status: 503 });
      expect(tries.get(`POST /${bucket}/retry/multipart?uploads`)).toBe(1);
      expect(proxy.seen.filter((e) => e.path === `/${bucket}/retry/missing`)).toHaveLength(1);
    } finally {
      proxy.fault = undefined;
    }
  });

  it('is refused with a wrong secret, under V2 and V4', async () => {
    for (const version of ['v2', 'v4'] as const) {
      const wrong = gatewayClient(stack, version, 'not-the-secret-key-00000000000000000000');
      const attempt = wrong.listObjects(bucket, { signal, listVersion: 1 })[Symbol.asyncIterator]().next();
      await expect(attempt).rejects.toThrow(S3Error);
      await expect(attempt).rejects.toMatchObject({ status: 403, s3Code: 'SignatureDoesNotMatch' });
      wrong.close();
    }
  });
});
