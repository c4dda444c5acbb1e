// The installed `deis-backup` executable end to end: exit codes, what goes to stdout and stderr,
// `config check` with etcd discovery and redaction, and restore points that cannot be read.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { Repository } from '../../src/repository/repository.js';
import { DirTarget } from '../../src/targets/dir.js';
import { describeWithStack, readmeParagraph, runBin, tempDir, writeConfig } from './helpers.js';

describeWithStack('deis-backup executable', (stack) => {
  const volume = tempDir('volume');

  it('prints only the new id on stdout and exits 0', async () => {
    const dir = tempDir('target');
    const file = writeConfig({
      etcd: { endpoints: [stack.etcdEndpoint] },
      sources: { buckets: { enabled: false }, volume: { path: volume }, database: { enabled: false } },
      target: { type: 'dir', path: dir },
    });
    const result = await runBin(['backup', '--config', file]);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^\d{8}T\d{6}Z-[0-9a-f]{4}\n$/);
    expect(result.stderr).toMatch(
      /^volume +success +1 entries, 0 B read, .* stored\nrestore point \S+ committed to dir:\S+ \(success\)\n$/,
    );
    const listed = await runBin(['snapshots'], { DEIS_BACKUP_CONFIG: file });
    expect(listed.code).toBe(0);
    expect(listed.stdout.split('\n')[1]).toMatch(
      new RegExp(`^${result.stdout.trim()} +\\S+ +success +volume +`),
    );
  });

  it('names DEIS_BACKUP_CONFIG when the file it names is missing, and refuses an empty --config', async () => {
    const missing = join(tempDir('config'), 'missing.json');
    const viaEnv = await runBin(['snapshots'], { DEIS_BACKUP_CONFIG: missing });
    expect(viaEnv.code).toBe(2);
    expect(viaEnv.stderr).toBe(
      `deis-backup: config ${missing}: not found; DEIS_BACKUP_CONFIG names it: point the variable at the config file, or pass --config FILE\n`,
    );
    const empty = await runBin(['snapshots', '--config', '']);
    expect(empty.code).toBe(2);
    expect(empty.stderr).toBe('deis-backup: --config: name the config file; see deis-backup --help\n');
  });

  it('records no verify outcome in the target, as the README says', async () => {
    const dir = tempDir('target');
    const file = writeConfig({
      etcd: { endpoints: [stack.etcdEndpoint] },
      sources: { buckets: { enabled: false }, volume: { path: volume }, database: { enabled: false } },
      target: { type: 'dir', path: dir },
    });
    // Nothing to verify is not "all ok": the target may be the wrong one.
    expect(await runBin(['verify', '--all', '--config', file])).toMatchObject({
      code: 1,
      stdout: '',
      stderr: `deis-backup: no restore point in dir:${dir}; run deis-backup backup first\n`,
    });
    expect((await runBin(['backup', '--config', file])).code).toBe(0);
    expect((await runBin(['verify', '--all', '--config', file])).code).toBe(0);
    expect((await runBin(['verify', 'latest', '--config', file])).code).toBe(0);
    const repository = new Repository(new DirTarget(dir));
    expect(await repository.readStatus('verify', { signal: AbortSignal.timeout(10_000) })).toBeUndefined();
    const status = readmeParagraph('records each outcome in the target');
    expect(status).toContain('`deis-backup verify` (of one restore point or `--all`) does not');
    expect(status).not.toMatch(/verify --all` records?/);
  });

  it('checks a config, shows what etcd supplied, and never prints a secret', async () => {
    const file = writeConfig({
      etcd: { endpoints: [stack.etcdEndpoint] },
      target: {
        type: 's3',
        endpoint: stack.rgwEndpoint,
        bucket: stack.targetBucket,
        accessKey: 'TARGETACCESS',
        secretKey: 'target-secret-value',
      },
    });
    const result = await runBin(['config', 'check', '--config', file], {
      DEIS_BACKUP_TARGET_SECRET_KEY: 'env-secret-value',
    });
    expect(result.code).toBe(0);
    expect(result.stderr).toBe(`config ${file}: ok\n`);
    const view = JSON.parse(result.stdout) as {
      config: { target: Record<string, string> };
      resolved: Record<string, unknown>;
    };
    expect(view.config.target['secretKey']).toBe('**redacted**');
    expect(view.resolved).toEqual({
      gateway: {
        endpoint: stack.rgwEndpoint,
        accessKey: '**redacted**',
        secretKey: '**redacted**',
        signatureVersion: 'v2',
        region: 'us-east-1',
        listVersion: 1,
        from: { endpoint: 'etcd', accessKey: 'etcd', secretKey: 'etcd' },
      },
      buckets: ['db_wal', 'registry'],
      databaseHost: '127.0.0.1',
    });
    for (const secret of [
      'target-secret-value',
      'env-secret-value',
      'TARGETACCESS',
      stack.gatewaySecretKey,
      stack.gatewayAccessKey,
    ]) {
      expect(result.stdout + result.stderr).not.toContain(secret);
    }
  });

  it('exits 2 naming etcd when what the config leaves out cannot be found', async () => {
    const file = writeConfig({
      etcd: { endpoints: ['http://127.0.0.1:24999'], timeoutMs: 2000 },
      target: { type: 'dir', path: '/tmp/x' },
    });
    const result = await runBin(['config', 'check', '--config', file]);
    expect(result.code).toBe(2);
    // The cause once, and what else etcd would have told.
    expect(result.stderr).toBe(
      [
        `deis-backup: config ${file}: 2 problem(s)`,
        '  - etcd: cannot read /deis/store/gateway/host from http://127.0.0.1:24999 (ECONNREFUSED); check etcd.endpoints (Deis v1 serves the v2 API on port 4001)',
        '  - the bucket names and the database host: not checked, as etcd did not answer',
        '',
      ].join('\n'),
    );
    const backup = await runBin(['backup', '--config', file, '--only', 'buckets']);
    expect(backup.code).toBe(1);
    // The cluster lock lives in that etcd too: the run stops before reading anything.
    expect(backup.stderr).toMatch(
      /^deis-backup: backup: cannot take the cluster lock in etcd \/deis-backup-test\/\S+ \(and dir:\/tmp\/x\/locks\/\): etcd: cannot create \S+ at http:\/\/127\.0\.0\.1:24999 \(ECONNREFUSED\)/,
    );
  });

  it("takes a 404 that is not etcd's as an endpoint that did not answer, not as a missing key", async () => {
    const notEtcd = { etcd: { endpoints: [stack.rgwEndpoint] }, target: { type: 'dir', path: '/tmp/x' } };
    const result = await runBin(['config', 'check', '--config', writeConfig(notEtcd)]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(
      `etcd: cannot read /deis/store/gateway/host from ${stack.rgwEndpoint} (HTTP 404, not an etcd answer); check etcd.endpoints (Deis v1 serves the v2 API on port 4001)`,
    );
    // The next endpoint, a real etcd, answers for it.
    const both = {
      ...notEtcd,
      etcd: { endpoints: [stack.rgwEndpoint, stack.etcdEndpoint] },
      sources: { buckets: { names: ['db_wal'] }, volume: { enabled: false }, database: { enabled: false } },
    };
    const checked = await runBin(['config', 'check', '--config', writeConfig(both)]);
    expect(checked.code).toBe(0);
    expect(JSON.parse(checked.stdout)).toMatchObject({
      resolved: { gateway: { endpoint: stack.rgwEndpoint, from: { endpoint: 'etcd' } } },
    });
  });

  it('answers usage errors with exit 2 and one line', async () => {
    expect(await runBin(['frobnicate', '--config', '/dev/null'])).toMatchObject({
      code: 2,
      stderr: 'deis-backup: unknown command "frobnicate"; see deis-backup --help\n',
    });
    expect(await runBin(['backup', '--bogus'])).toMatchObject({
      code: 2,
      stderr: expect.stringMatching(
        /^deis-backup: Unknown option '--bogus'.*; see deis-backup --help\n$/,
      ) as unknown,
    });
    expect(await runBin(['snapshots', '--config', '/nonexistent/config.json'])).toMatchObject({
      code: 2,
      stderr:
        'deis-backup: config /nonexistent/config.json: not found; pass --config FILE or copy config.example.json to /etc/deis-backup/config.json\n',
    });
    const help = await runBin(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('usage: deis-backup');
  });

  it('lists readable restore points and reports a damaged manifest instead of failing', async () => {
    const dir = tempDir('target');
    const file = writeConfig({
      sources: { buckets: { enabled: false }, volume: { path: volume }, database: { enabled: false } },
      target: { type: 'dir', path: dir },
    });
    const good = (await runBin(['backup', '--config', file])).stdout.trim();
    const badId = '20200101T000000Z-dead';
    await mkdir(join(dir, 'snapshots', badId), { recursive: true });
    await writeFile(join(dir, 'snapshots', badId, 'manifest.json'), '{"formatVersion": 99, "id": "x"}');
    const listed = await runBin(['snapshots', '--json', '--config', file]);
    expect(listed.code).toBe(0);
    expect((JSON.parse(listed.stdout) as { id: string }[]).map((s) => s.id)).toEqual([good]);
    expect(listed.stderr).toBe(
      `warning: restore point ${badId} is not usable: manifest snapshots/${badId}/manifest.json has format version 99; this deis-backup reads version 1\n`,
    );
    // A later backup still works and takes the readable one as its base.
    expect((await runBin(['backup', '--config', file])).code).toBe(0);
  });
});
