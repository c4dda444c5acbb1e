// Config parsing: defaults, every problem listed with its path and fix, secrets from env and files, never printed.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { ConfigError, DEFAULT_DUMP_COMMAND, loadConfig, redactedView } from '../../src/config.js';
import { BackupError } from '../../src/errors.js';
import { requireBackupSources } from '../../src/wiring.js';
import { tempDir } from '../temp-dirs.js';

const dir = tempDir('deis-backup-config-');
let n = 0;
function file(value: unknown): string {
  const path = join(dir, `config-${n++}.json`);
  writeFileSync(path, typeof value === 'string' ? value : JSON.stringify(value));
  return path;
}
function problems(value: unknown, env: NodeJS.ProcessEnv = {}): readonly string[] {
  try {
    loadConfig({ file: file(value), env });
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error('config was accepted');
}

describe('loadConfig', () => {
  it('fills every default from an empty object', () => {
    const config = loadConfig({ file: file({}), env: {} });
    expect(config.etcd.endpoints).toEqual(['http://127.0.0.1:4001']);
    expect(config.gateway.signatureVersion).toBe('v2');
    expect(config.gateway.listVersion).toBe(1);
    expect(config.sources.volume.path).toBe('/var/lib/deis/store');
    expect(config.sources.database.command).toBe(DEFAULT_DUMP_COMMAND);
    expect(config.sources.buckets.concurrency).toBe(4);
    expect(config.target).toEqual({ type: 'dir', path: '/var/lib/deis-backup' });
  });

  it('lists every problem with its path and a fix', () => {
    const found = problems({
      gateway: { signatureVersion: 'v3', endpoint: 'deis-store:8888' },
      sources: { buckets: { concurrency: 0 }, volume: { path: 'relative' } },
      target: { type: 's3', bucket: 'Bad_Bucket', endpoint: 'http://x' },
      surprise: true,
    });
    expect(found).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^gateway\.signatureVersion: must be "v2" \(Deis v1, Ceph hammer\) or "v4"/),
        expect.stringMatching(/^gateway\.endpoint: must be an http\(s\) URL/),
        expect.stringMatching(/^sources\.buckets\.concurrency: /),
        expect.stringMatching(/^sources\.volume\.path: must be an absolute path/),
        expect.stringMatching(/^target\.bucket: must be a DNS-style bucket name/),
        expect.stringMatching(/^target\.accessKey: is required; add it/),
        expect.stringMatching(/^unknown key\(s\) "surprise"; remove them or check the spelling/),
      ]),
    );
    expect(found.length).toBeGreaterThanOrEqual(8);
  });

  it('takes volume exclude patterns and names the one that breaks a rule by its place in the list', () => {
    const config = loadConfig({
      file: file({ sources: { volume: { exclude: ['logs/deis-store-metadata.log', 'logs/*.log.1'] } } }),
      env: {},
    });
    expect(config.sources.volume.exclude).toEqual(['logs/deis-store-metadata.log', 'logs/*.log.1']);
    expect(loadConfig({ file: file({}), env: {} }).sources.volume.exclude).toEqual([]);
    expect(
      problems({ sources: { volume: { exclude: ['logs/*.log', '/var/lib/deis/store/logs'] } } }),
    ).toEqual([
      expect.stringMatching(
        /^sources\.volume\.exclude\.1: must be a path under sources\.volume\.path without a leading or trailing "\/"/,
      ),
    ]);
    expect(problems({ sources: { volume: { exclude: ['logs/?.log'] } } })).toEqual([
      expect.stringMatching(/^sources\.volume\.exclude\.0: may use "\*" as its only wildcard/),
    ]);
    expect(problems({ sources: { volume: { exclude: ['logs', 'logs'] } } })).toEqual([
      expect.stringMatching(/^sources\.volume\.exclude: names a pattern twice/),
    ]);
  });

  it.each([
    [
      'target.endpoint',
      {
        target: {
          type: 's3',
          bucket: 'backups',
          accessKey: 'a',
          secretKey: 'b',
          endpoint: 'http://minio:99999',
        },
      },
    ],
    [
      'target.endpoint',
      { target: { type: 's3', bucket: 'backups', accessKey: 'a', secretKey: 'b', endpoint: 'http://[::1' } },
    ],
    ['etcd.endpoints.1', { etcd: { endpoints: ['http://127.0.0.1:4001', 'http://127.0.0.1:-1'] } }],
    ['gateway.endpoint', { gateway: { endpoint: 'http://10.21.1.44:88888' } }],
    ['webhook.url', { webhook: { url: 'https://[fe80::1/hook' } }],
  ])('refuses a %s that new URL() would not take, in one line', (path, config) => {
    const found = problems(config);
    expect(found).toHaveLength(1);
    expect(found[0]).toMatch(
      new RegExp(`^${path.replace(/\./g, '\\.')}: is not a valid URL \\(.*\\); use one such as "`),
    );
  });

  it('takes http(s) URLs with a port, an IPv6 address or a path', () => {
    const config = loadConfig({
      file: file({
        etcd: { endpoints: ['http://[::1]:4001', 'https://etcd.example.com'] },
        gateway: { endpoint: 'http://10.21.1.44:8888' },
        webhook: { url: 'https://hooks.example.com:8443/deis-backup?x=1' },
        target: {
          type: 's3',
          bucket: 'backups',
          accessKey: 'a',
          secretKey: 'b',
          endpoint: 'http://127.0.0.1:7480/',
        },
      }),
      env: {},
    });
    expect(config.etcd.endpoints).toEqual(['http://[::1]:4001', 'https://etcd.example.com']);
  });

  it('takes a config with every source disabled, which only a backup of everything refuses', () => {
    const off = { enabled: false };
    const none = loadConfig({
      file: file({ sources: { buckets: off, volume: off, database: off } }),
      env: {},
    });
    expect(() => {
      requireBackupSources(none, undefined);
    }).toThrow(
      'sources: every source has enabled false, so a backup would store nothing; set sources.buckets.enabled, sources.volume.enabled or sources.database.enabled to true',
    );
    expect(() => {
      requireBackupSources(none, ['volume']);
    }).not.toThrow();
    const config = loadConfig({ file: file({ sources: { buckets: off, volume: off } }), env: {} });
    expect(config.sources.database.enabled).toBe(true);
    expect(() => {
      requireBackupSources(config, undefined);
    }).not.toThrow();
  });

  it('names a missing file and how to fix it', () => {
    expect(() => loadConfig({ file: join(dir, 'nope.json'), env: {} })).toThrow(
      /config .*nope\.json: not found; pass --config FILE or copy config\.example\.json/,
    );
  });

  it('rejects broken JSON with the parser position', () => {
    expect(() => loadConfig({ file: file('{"etcd": '), env: {} })).toThrow(BackupError);
    expect(() => loadConfig({ file: file('{"etcd": '), env: {} })).toThrow(
      /not valid JSON \(line 1, column 10: the text ends early\); fix the syntax$/,
    );
  });

  it('reports broken JSON by line and column, never quoting the text around it', () => {
    const secret = 'wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY';
    const path = file(`{\n  "target": {\n    "type": "s3",\n    "secretKey": '${secret}'\n  }\n}\n`);
    let message = '';
    try {
      loadConfig({ file: path, env: {} });
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toBe(
      `config ${path}: not valid JSON (line 4, column 18: expected a value (strings take double quotes, not single)); fix the syntax`,
    );
    // Not even a few characters of it: Node 20's JSON.parse message quoted nine.
    for (let i = 0; i + 4 <= secret.length; i++) expect(message).not.toContain(secret.slice(i, i + 4));
  });

  it('takes secrets from the environment and from _FILE variables', () => {
    const secretFile = join(dir, 'secret');
    writeFileSync(secretFile, 'from-file-secret\n');
    const config = loadConfig({
      file: file({
        target: {
          type: 's3',
          endpoint: 'http://127.0.0.1:7480',
          bucket: 'backups',
          accessKey: 'a',
          secretKey: 'b',
        },
      }),
      env: {
        DEIS_BACKUP_GATEWAY_ACCESS_KEY: 'GWACCESS',
        DEIS_BACKUP_GATEWAY_SECRET_KEY_FILE: secretFile,
        DEIS_BACKUP_TARGET_SECRET_KEY: 'env-target-secret',
      },
    });
    expect(config.gateway.accessKey?.reveal()).toBe('GWACCESS');
    expect(config.gateway.secretKey?.reveal()).toBe('from-file-secret');
    expect(config.target.type === 's3' && config.target.secretKey.reveal()).toBe('env-target-secret');
  });

  it('refuses a secret given both directly and as a file, and an unreadable file', () => {
    expect(
      problems({}, { DEIS_BACKUP_GATEWAY_SECRET_KEY: 'x', DEIS_BACKUP_GATEWAY_SECRET_KEY_FILE: '/x' }),
    ).toEqual([
      'DEIS_BACKUP_GATEWAY_SECRET_KEY and DEIS_BACKUP_GATEWAY_SECRET_KEY_FILE are both set: keep one',
    ]);
    expect(problems({}, { DEIS_BACKUP_TARGET_ACCESS_KEY_FILE: join(dir, 'missing') })[0]).toMatch(
      /^DEIS_BACKUP_TARGET_ACCESS_KEY_FILE: cannot read .*missing \(ENOENT\)/,
    );
  });

  it('never shows a secret in JSON, strings or inspect output', () => {
    const config = loadConfig({
      file: file({ gateway: { accessKey: 'VISIBLEACCESSKEY0000', secretKey: 'supersecretvalue' } }),
      env: {},
    });
    const shown = [
      JSON.stringify(redactedView(config)),
      inspect(config, { depth: 10 }),
      String(config.gateway.secretKey),
    ].join('\n');
    expect(shown).not.toContain('supersecretvalue');
    expect(shown).not.toContain('VISIBLEACCESSKEY0000');
    expect(shown).toContain('**redacted**');
  });
});

describe('secret overrides and the target kind', () => {
  it('ignores target keys from the environment when the target is a directory', () => {
    const config = loadConfig({
      file: file({ target: { type: 'dir', path: '/backups' } }),
      env: { DEIS_BACKUP_TARGET_ACCESS_KEY: 'x', DEIS_BACKUP_TARGET_SECRET_KEY: 'y' },
    });
    expect(config.target).toEqual({ type: 'dir', path: '/backups' });
    expect(loadConfig({ file: file({}), env: { DEIS_BACKUP_TARGET_SECRET_KEY: 'y' } }).target.type).toBe(
      'dir',
    );
  });
});

describe('ETCD from the Deis unit', () => {
  it('uses ETCD=host:port when the config names no etcd endpoints, and never over the config', () => {
    expect(loadConfig({ file: file({}), env: { ETCD: '10.21.1.44:4001' } }).etcd.endpoints).toEqual([
      'http://10.21.1.44:4001',
    ]);
    expect(
      loadConfig({
        file: file({ etcd: { endpoints: ['http://127.0.0.1:24001'] } }),
        env: { ETCD: '10.21.1.44:4001' },
      }).etcd.endpoints,
    ).toEqual(['http://127.0.0.1:24001']);
  });
  it('names the ETCD variable, not the config path it filled, when it makes no URL', () => {
    const load = (): unknown => loadConfig({ file: file({}), env: { ETCD: 'bad host:x' } });
    expect(load).toThrow(/: environment variable ETCD: is not a valid URL .*; set it to host:port/);
    expect(load).not.toThrow(/etcd\.endpoints/);
  });
});
