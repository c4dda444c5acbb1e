// An S3 target behind TLS, as an external target usually is: radosgw behind a TLS-terminating proxy
// with a self-signed certificate, which the command trusts through NODE_EXTRA_CA_CERTS. Bodies go
// unsigned there (TLS guards them) and come back byte for byte.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { S3Client } from '../../src/s3/client.js';
import { seedRegistry } from '../fixtures/deis-sample.js';
import { recordingProxy, type RecordingProxy } from '../fixtures/recording-proxy.js';
import { stackS3TargetConfig } from '../fixtures/s3-target.js';
import {
  bucketContents,
  describeWithStack,
  gatewayClient,
  runBin,
  tempDir,
  unique,
  writeConfig,
} from './helpers.js';

const signal = AbortSignal.timeout(300_000);

/** A self-signed certificate for 127.0.0.1, made with openssl: its key and its PEM file. */
function selfSigned(): { key: Buffer; cert: Buffer; certFile: string } {
  const dir = tempDir('tls');
  const keyFile = join(dir, 'key.pem');
  const certFile = join(dir, 'cert.pem');
  const args =
    'req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1';
  execFileSync('openssl', [...args.split(' '), '-keyout', keyFile, '-out', certFile], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  return { key: readFileSync(keyFile), cert: readFileSync(certFile), certFile };
}

describeWithStack('https target', (stack) => {
  const registry = unique('tls-registry');
  let gateway: S3Client;
  let certFile: string;
  let proxy: RecordingProxy;

  /** A config backing up the registry bucket alone into the stack's target bucket through the proxy. */
  const config = (prefix: string, endpoint = proxy.url) =>
    writeConfig({
      etcd: { endpoints: [stack.etcdEndpoint] },
      sources: {
        buckets: { names: [registry] },
        volume: { enabled: false },
        database: { enabled: false },
      },
      target: stackS3TargetConfig(stack, endpoint, prefix, { partSizeMiB: 5 }),
      restore: { deisVersion: 'v1.13.4' },
    });

  beforeAll(async () => {
    const tls = selfSigned();
    certFile = tls.certFile;
    proxy = await recordingProxy(stack.rgwEndpoint, tls);
    gateway = gatewayClient(stack);
    await gateway.createBucket(registry, { signal });
    await seedRegistry(gateway, registry);
  });
  afterAll(async () => {
    gateway.close();
    await proxy.close();
  });

  it('backs up into it and restores from it byte for byte, with no body in signed chunks', async () => {
    const file = config(unique('tls'));
    const trusted = { NODE_EXTRA_CA_CERTS: certFile };
    const backup = await runBin(['backup', '--config', file, '--only', 'buckets', '--json'], trusted);
    expect(backup.code, backup.stderr).toBe(0);

    const puts = proxy.seen.filter((s) => s.method === 'PUT');
    // Single puts (small blobs, the manifest) and the parts of multipart uploads (layers, the index).
    expect(puts.some((s) => !s.path.includes('partNumber='))).toBe(true);
    expect(puts.some((s) => s.path.includes('partNumber='))).toBe(true);
    expect(puts.some((s) => s.request['x-amz-content-sha256'] === 'UNSIGNED-PAYLOAD')).toBe(true);
    for (const put of puts) {
      expect(put.request['x-amz-content-sha256']).toMatch(/^(UNSIGNED-PAYLOAD|[0-9a-f]{64})$/);
      expect(put.request['content-encoding']).toBeUndefined();
    }

    const restored = unique('tls-restored');
    const restore = await runBin(
      [
        'restore',
        'latest',
        '--config',
        file,
        '--only',
        'buckets',
        '--bucket',
        `${registry}=${restored}`,
        '--json',
        '--yes',
      ],
      trusted,
    );
    expect(restore.code, restore.stderr).toBe(0);
    // Every blob came back through the proxy, and none was stored with a content encoding.
    const gets = proxy.seen.filter((s) => s.method === 'GET' && s.path.includes('/blobs/'));
    expect(gets.length).toBeGreaterThan(0);
    for (const get of gets) expect(get.answer['content-encoding']).toBeUndefined();

    const want = await bucketContents(gateway, registry);
    const got = await bucketContents(gateway, restored);
    expect([...got.keys()].sort()).toEqual([...want.keys()].sort());
    for (const [key, value] of want) expect(got.get(key)).toEqual(value);
  });

  it("names the target and the fix in one line when the target's certificate is not trusted", async () => {
    const prefix = unique('untrusted');
    const run = await runBin(['backup', '--config', config(prefix), '--only', 'buckets']);
    expect(run.code).toBe(1);
    expect(run.stderr).toBe(
      `deis-backup: list locks/ in s3://${stack.targetBucket}/${prefix}: DEPTH_ZERO_SELF_SIGNED_CERT; the target's certificate is not signed by a trusted authority: set NODE_EXTRA_CA_CERTS to a PEM file of its CA\n`,
    );
    expect(run.stderr).not.toContain(stack.targetSecretKey);
  });

  it('names the fix when the certificate, trusted, is for another host than target.endpoint', async () => {
    // The certificate names 127.0.0.1 only; localhost reaches the same proxy.
    const prefix = unique('other-host');
    const endpoint = proxy.url.replace('127.0.0.1', 'localhost');
    const run = await runBin(['backup', '--config', config(prefix, endpoint), '--only', 'buckets'], {
      NODE_EXTRA_CA_CERTS: certFile,
    });
    expect(run.code).toBe(1);
    expect(run.stderr).toBe(
      `deis-backup: list locks/ in s3://${stack.targetBucket}/${prefix}: ERR_TLS_CERT_ALTNAME_INVALID; the target's certificate does not name the host in target.endpoint: fix target.endpoint\n`,
    );
  });
});
