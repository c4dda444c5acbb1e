// Prune on an S3 target (radosgw), where a killed run leaves multipart uploads unfinished and a
// policy can refuse part of the work. Uploads under snapshots/ and blobs/ begun before the prune took
// the lock are aborted (a dry run only counts them), across ListMultipartUploads pages; one begun
// since the lock, one elsewhere under the prefix and one outside it are left. A denied abort, or a
// denied delete in a full prune or in the sweep after a backup, fails the prune with its report whole.
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { Client } from 'minio';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { silentLogger } from '../../src/logger.js';
import type { S3Client } from '../../src/s3/client.js';
import type { Target } from '../../src/targets/target.js';
import { fullPruneDue, prune, type PruneReport } from '../../src/repository/prune.js';
import { Repository } from '../../src/repository/repository.js';
import { stackS3Target, stackS3TargetConfig } from '../fixtures/s3-target.js';
import { cli, describeWithStack, gatewayClient, tempDir, unique, writeConfig } from './helpers.js';

const signal = AbortSignal.timeout(300_000);

/** The target's Date header counts whole seconds: an upload this long before a lock is before it. */
const BEFORE_LOCK_MS = 2_500;

/** The prefix in the deny bucket where blobs cannot be deleted. */
const NO_DELETE = 'nodelete';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describeWithStack('prune of unfinished multipart uploads', (stack) => {
  const url = new URL(stack.rgwEndpoint);
  const client = new Client({
    endPoint: url.hostname,
    port: Number(url.port),
    useSSL: false,
    pathStyle: true,
    region: 'us-east-1',
    accessKey: stack.targetAccessKey,
    secretKey: stack.targetSecretKey,
  });
  const prefix = unique('uploads');
  /**
   * A bucket of the target's own whose policy denies AbortMultipartUpload, and DeleteObject under
   * NO_DELETE/blobs/; minio refuses '_'.
   */
  const denyBucket = `deny-${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
  /** Every upload a test started, to abort whatever is left at the end. */
  const started: { bucket: string; key: string; uploadId: string }[] = [];

  /** Starts a multipart upload of `key` and sends one part of it, as a killed put leaves it. */
  async function startUpload(key: string, bucket = stack.targetBucket): Promise<string> {
    const uploadId = await client.initiateNewMultipartUpload(bucket, key, {});
    started.push({ bucket, key, uploadId });
    await client.uploadPart(
      { bucketName: bucket, objectName: key, uploadID: uploadId, partNumber: 1, headers: {} },
      randomBytes(64 * 1024),
    );
    return uploadId;
  }

  /** The ids of the bucket's unfinished uploads under `under`, as minio's own listing reads them. */
  async function uploadIds(under: string, bucket = stack.targetBucket): Promise<string[]> {
    const page = await client.listIncompleteUploadsQuery(bucket, under, '', '', '');
    expect(page.isTruncated).toBeFalsy();
    return page.uploads.map((u) => u.uploadId).sort();
  }

  const targetConfig = (bucket: string, prefixOf: string) =>
    writeConfig({
      etcd: { endpoints: [stack.etcdEndpoint] },
      sources: {
        buckets: { enabled: false },
        volume: { path: tempDir('uploads-volume') },
        database: { enabled: false },
      },
      target: stackS3TargetConfig(stack, stack.rgwEndpoint, prefixOf, { bucket, partSizeMiB: 5 }),
    });

  beforeAll(async () => {
    await client.makeBucket(denyBucket, 'us-east-1');
    await client.setBucketPolicy(
      denyBucket,
      JSON.stringify({
        Version: '2012-10-17',
        Statement: [
          {
            Effect: 'Deny',
            Principal: { AWS: ['*'] },
            Action: ['s3:AbortMultipartUpload'],
            Resource: [`arn:aws:s3:::${denyBucket}/*`],
          },
          {
            Effect: 'Deny',
            Principal: { AWS: ['*'] },
            Action: ['s3:DeleteObject'],
            Resource: [`arn:aws:s3:::${denyBucket}/${NO_DELETE}/blobs/*`],
          },
        ],
      }),
    );
  });

  afterAll(async () => {
    await client.setBucketPolicy(denyBucket, '').catch(() => undefined);
    for (const { bucket, key, uploadId } of started) {
      await client.abortMultipartUpload(bucket, key, uploadId).catch(() => undefined);
    }
    for await (const item of client.listObjectsV2(denyBucket, '', true) as AsyncIterable<{ name?: string }>) {
      if (item.name !== undefined) await client.removeObject(denyBucket, item.name);
    }
    await client.removeBucket(denyBucket).catch(() => undefined);
  });

  it('aborts a dead run’s uploads under snapshots/ and blobs/ only, after a dry run that counts them', async () => {
    const blob = await startUpload(`${prefix}/blobs/aa/${'a'.repeat(64)}`);
    const archive = await startUpload(`${prefix}/snapshots/20261201T000000Z-dead/volume.tar.gz`);
    // Under the prefix but outside what prune removes, and in a prefix that only starts the same.
    const status = await startUpload(`${prefix}/status/other.json`);
    const outside = await startUpload(`${prefix}x/blobs/aa/${'a'.repeat(64)}`);
    await sleep(BEFORE_LOCK_MS);
    const config = targetConfig(stack.targetBucket, prefix);
    const all = [blob, archive, status].sort();

    const dry = await cli(['prune', '--config', config, '--dry-run']);
    expect(dry.err).toBe('');
    expect(dry.code).toBe(0);
    expect(dry.out).toMatch(/; would abort 2 unfinished upload\(s\)$/);
    const dryJson = await cli(['prune', '--config', config, '--dry-run', '--json']);
    expect(dryJson.code, dryJson.err).toBe(0);
    expect(JSON.parse(dryJson.out)).toMatchObject({ dryRun: true, abortedUploads: 2, recentUploads: 0 });
    expect(await uploadIds(`${prefix}/`)).toEqual(all);

    const run = await cli(['prune', '--config', config, '--json']);
    expect(run.err).toBe('');
    expect(run.code).toBe(0);
    const report = JSON.parse(run.out) as PruneReport;
    expect(report).toMatchObject({ dryRun: false, abortedUploads: 2, recentUploads: 0 });
    expect(report.uploadsError).toBeUndefined();
    expect(await uploadIds(`${prefix}/`)).toEqual([status]);
    expect(await uploadIds(`${prefix}x/`)).toEqual([outside]);

    const again = await cli(['prune', '--config', config]);
    expect(again.code, again.err).toBe(0);
    expect(again.out).toMatch(/; aborted 0 unfinished upload\(s\)$/);
  });

  it('leaves an upload begun since the lock was taken, and pages through uploads of one key', async () => {
    const log = silentLogger;
    // Two pages of two and one of one, the two uploads of 0f/ split across the first two: the next
    // page must start from the upload id, not only the key.
    const target = stackS3Target(stack, prefix, { uploadsPageSize: 2 });
    const repository = new Repository(target);
    const lockedAt = new Date();
    const recent = await startUpload(`${prefix}/blobs/0e/${'e'.repeat(64)}`);
    const recentOnly = await prune(repository, { dryRun: false, lockedAt, signal, log });
    expect(recentOnly).toMatchObject({ abortedUploads: 0, recentUploads: 1 });
    expect(await uploadIds(`${prefix}/blobs/`)).toEqual([recent]);

    const more = [
      await startUpload(`${prefix}/blobs/0f/${'f'.repeat(64)}`),
      await startUpload(`${prefix}/blobs/0f/${'f'.repeat(64)}`),
      await startUpload(`${prefix}/blobs/1a/${'1'.repeat(64)}`),
      await startUpload(`${prefix}/blobs/1b/${'2'.repeat(64)}`),
      await startUpload(`${prefix}/snapshots/20261202T000000Z-dead/db.pgdump.gz`),
    ];
    // A lock taken after all of them, allowing for the whole seconds of the target's clock.
    await sleep(BEFORE_LOCK_MS);
    const later = new Date();
    const seen: string[] = [];
    for await (const upload of target.listUploads('blobs/', { signal })) seen.push(upload.uploadId);
    expect(seen.sort()).toEqual([recent, ...more.slice(0, 4)].sort());
    const dry = await prune(repository, { dryRun: true, lockedAt: later, signal, log });
    expect(dry).toMatchObject({ abortedUploads: 6, recentUploads: 0 });
    expect(await uploadIds(`${prefix}/blobs/`)).toHaveLength(5);
    const real = await prune(repository, { dryRun: false, lockedAt: later, signal, log });
    expect(real).toMatchObject({ abortedUploads: 6, recentUploads: 0 });
    expect(await uploadIds(`${prefix}/blobs/`)).toEqual([]);
    expect(await uploadIds(`${prefix}/snapshots/`)).toEqual([]);
    // Aborting an upload already gone succeeds.
    await target.abortUpload(
      { key: `blobs/0e/${'e'.repeat(64)}`, uploadId: recent, initiated: lockedAt },
      { signal },
    );
  });

  it('aborts a killed run’s uploads in the prune after the next backup', async () => {
    const own = unique('uploads-backup');
    const target = stackS3Target(stack, own);
    // A run killed midway: its marker without a manifest, and its archive's upload unfinished.
    await target.put('snapshots/20261203T000000Z-dead/run.json', Readable.from([Buffer.from('{}')]), {
      signal,
      size: 2,
    });
    const dead = await startUpload(`${own}/snapshots/20261203T000000Z-dead/volume.tar.gz`);
    await sleep(BEFORE_LOCK_MS);
    const config = targetConfig(stack.targetBucket, own);
    const run = await cli(['backup', '--config', config, '--json']);
    expect(run.code, run.err).toBe(0);
    const result = JSON.parse(run.out) as { id: string; retention: { prune: PruneReport } };
    expect(result.retention.prune).toMatchObject({ scope: 'all', interrupted: ['20261203T000000Z-dead'] });
    expect(result.retention.prune.abortedUploads).toBe(1);
    expect(await uploadIds(`${own}/`)).toEqual([]);
    expect(started.map((u) => u.uploadId)).toContain(dead);
  });

  it('puts a key anew beside the unfinished upload of it a killed run left, leaving that to the prune', async () => {
    // A put starts an upload of its own: it resumes no other (minio's putObject resumed the newest
    // upload of its key, a completion radosgw can refuse with InvalidPart).
    const own = unique('uploads-resume');
    const target = stackS3Target(stack, own);
    const part = 5 * 1024 * 1024;
    const body = randomBytes(3 * part + 1);
    const key = `blobs/ab/${'b'.repeat(64)}`;
    // What a put killed after two parts leaves, numbered as minio numbered them.
    const uploadId = await client.initiateNewMultipartUpload(stack.targetBucket, `${own}/${key}`, {});
    started.push({ bucket: stack.targetBucket, key: `${own}/${key}`, uploadId });
    for (const n of [0, 1]) {
      await client.uploadPart(
        {
          bucketName: stack.targetBucket,
          objectName: `${own}/${key}`,
          uploadID: uploadId,
          partNumber: n + 2,
          headers: {},
        },
        body.subarray(n * part, (n + 1) * part),
      );
    }
    await target.put(key, Readable.from([body]), { signal, size: body.length });
    expect(await uploadIds(`${own}/`)).toEqual([uploadId]);
    const stored: Buffer[] = [];
    for await (const chunk of await target.get(key, { signal })) stored.push(chunk as Buffer);
    expect(Buffer.concat(stored).equals(body)).toBe(true);
  });

  it('fails a prune whose abort is denied, after printing the whole report', async () => {
    const repoPrefix = 'repo';
    const target = stackS3Target(stack, repoPrefix, { bucket: denyBucket });
    await target.put(`blobs/ff/${'f'.repeat(64)}`, Readable.from([Buffer.from('orphan')]), {
      signal,
      size: 6,
    });
    const leftover = await startUpload(`${repoPrefix}/blobs/aa/${'a'.repeat(64)}`, denyBucket);
    await sleep(BEFORE_LOCK_MS);
    const config = targetConfig(denyBucket, repoPrefix);

    const run = await cli(['prune', '--config', config]);
    expect(run.code).toBe(1);
    expect(run.out).toMatch(
      /^prune: removed 1 blob\(s\) and 0 other key\(s\), 6 B; .*; aborted 0 unfinished upload\(s\)$/,
    );
    expect(run.err).toBe(
      `deis-backup: prune: abort unfinished upload of blobs/aa/${'a'.repeat(64)} in s3://${denyBucket}/${repoPrefix}: AccessDenied; allow s3:ListBucketMultipartUploads and s3:AbortMultipartUpload on the target bucket for target.accessKey`,
    );
    expect(run.err).not.toContain(stack.targetSecretKey);
    expect(await uploadIds(`${repoPrefix}/`, denyBucket)).toEqual([leftover]);

    const json = await cli(['prune', '--config', config, '--json']);
    expect(json.code).toBe(1);
    const report = JSON.parse(json.out) as PruneReport;
    expect(report).toMatchObject({ scope: 'all', removedBlobs: 0, abortedUploads: 0 });
    expect(report.uploadsError).toContain('AccessDenied');
    expect(json.err.split('\n')).toHaveLength(1);

    // The prune after a backup reports the same as a retention failure, its report beside it.
    await target.put('snapshots/20261204T000000Z-dead/run.json', Readable.from([Buffer.from('{}')]), {
      signal,
      size: 2,
    });
    const backup = await cli(['backup', '--config', config]);
    expect(backup.code, backup.err).toBe(0);
    const lines = backup.err.split('\n');
    expect(lines.at(-2)).toMatch(
      /^prune: removed 0 blob\(s\) and 1 other key\(s\) \(incl\. 1 interrupted run\(s\)\), 2 B; .*; aborted 0 unfinished upload\(s\)$/,
    );
    expect(lines.at(-1)).toMatch(
      /^retention failed \(the restore point stands\): prune: abort unfinished upload of blobs\/aa\/a+ in .*: AccessDenied; allow /,
    );
  });

  it('stops a prune, after a backup or by hand, at a denied delete, and reports what it removed', async () => {
    const gateway: S3Client = gatewayClient(stack);
    const source = unique('nodelete').replace(/_/g, '-');
    const target = stackS3Target(stack, NO_DELETE, { bucket: denyBucket });
    const repository = new Repository(target);
    try {
      await gateway.createBucket(source, { signal });
      const put = (text: string) =>
        gateway.putObject(source, 'layer', Buffer.from(text), { signal, size: text.length });
      // A full prune on record this week: the backup's retention sweeps only the forgotten point.
      await repository.writeStatus('prune', { lastFullAt: new Date().toISOString() }, { signal });
      const config = writeConfig({
        etcd: { endpoints: [stack.etcdEndpoint] },
        sources: {
          buckets: { names: [source] },
          volume: { path: tempDir('nodelete-volume') },
          database: { enabled: false },
        },
        target: stackS3TargetConfig(stack, stack.rgwEndpoint, NO_DELETE, { bucket: denyBucket }),
        retention: { keepLast: 1 },
      });
      await put('first body');
      const first = await cli(['backup', '--config', config, '--json']);
      expect(first.code, first.err).toBe(0);
      const firstId = (JSON.parse(first.out) as { id: string }).id;
      const [oldBlob] = await keysUnder(target, 'blobs/');
      expect(oldBlob).toBeDefined();

      // The object changed: retention forgets the first point, and its blob alone is not deletable.
      await put('second body');
      const second = await cli(['backup', '--config', config]);
      expect(second.code, second.err).toBe(0);
      const lines = second.err.trimEnd().split('\n');
      expect(lines.at(-3)).toBe(`retention (keepLast 1): 1 kept, dropped ${firstId}`);
      expect(lines.at(-2)).toBe('prune: removed 0 blob(s) only the forgotten restore point(s) held, 0 B');
      expect(lines.at(-1)).toBe(
        `retention failed (the restore point stands): prune: remove ${oldBlob ?? ''} in s3://${denyBucket}/${NO_DELETE}: AccessDenied; allow s3:DeleteObject on the target bucket for target.accessKey`,
      );
      expect(second.err).not.toContain(stack.targetSecretKey);
      // Forget went on after the failed sweep: the first point's folder is gone, its blob stays,
      // and the next retention prunes in full (no full prune on record).
      expect(await keysUnder(target, `snapshots/${firstId}/`)).toEqual([]);
      expect(await keysUnder(target, 'blobs/')).toContain(oldBlob);
      expect(await repository.readStatus('prune', { signal })).toEqual({ lastFullAt: null });
      expect(await fullPruneDue(repository, new Date(), { signal })).toBe(true);

      // By hand: the interrupted run's folder goes, then the denied blob stops the prune.
      await target.put('snapshots/20261205T000000Z-dead/run.json', Readable.from([Buffer.from('{}')]), {
        signal,
        size: 2,
      });
      const run = await cli(['prune', '--config', config, '--json']);
      expect(run.code).toBe(1);
      const report = JSON.parse(run.out) as PruneReport;
      expect(report).toMatchObject({
        scope: 'all',
        removedKeys: 1,
        removedBlobs: 0,
        interrupted: ['20261205T000000Z-dead'],
        freedBytes: 2,
      });
      // No abort was tried after the failure, and no full prune is recorded: the next is due too.
      expect(report.abortedUploads).toBeUndefined();
      expect(report.removeError).toContain('AccessDenied');
      expect(run.err).toBe(`deis-backup: prune: ${report.removeError ?? ''}`);
      expect(await repository.readStatus('prune', { signal })).toEqual({ lastFullAt: null });
      expect(await keysUnder(target, 'blobs/')).toContain(oldBlob);
      expect(await keysUnder(target, 'snapshots/20261205T000000Z-dead/')).toEqual([]);
    } finally {
      // The target's keys go with the deny bucket (afterAll), once its policy is lifted.
      for await (const o of gateway.listObjects(source, { signal, listVersion: 2 }))
        await gateway.deleteObject(source, o.key, { signal });
      await gateway.deleteBucket(source, { signal }).catch(() => undefined);
      gateway.close();
    }
  });
});

/** The keys under `prefix` in the target, sorted. */
async function keysUnder(target: Target, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const key of target.listKeys(prefix, { signal })) keys.push(key);
  return keys.sort();
}
