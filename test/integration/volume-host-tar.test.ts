// GNU tar on the volume's host, for real: its warnings are read in the C locale whatever the host's
// locale translates, and a restore counts only when tar read the whole archive.
import { execFileSync } from 'node:child_process';
import { chmod, chown, lstat, mkdir, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { once } from 'node:events';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import type { Manifest } from '../../src/repository/manifest.js';
import { artifactKey } from '../../src/repository/layout.js';
import type { RestoreReport } from '../../src/restore.js';
import { VOLUME_ARTIFACT } from '../../src/sources/volume.js';
import { runRemote } from '../../src/ssh.js';
import { startPrivateSshd, type PrivateSshd } from '../fixtures/private-sshd.js';
import { stackSsh } from '../fixtures/stack.js';
import {
  cli,
  describeTree,
  describeWithStack,
  gnuTarExtract,
  restoreVolume,
  tempDir,
  writeConfig,
} from './helpers.js';

const signal = AbortSignal.timeout(300_000);

/** Shell lines that print GNU tar's "file changed" warning 2,000 times (96 KB) to stderr. */
const WARN_2000_TIMES =
  'i=0\nwhile [ $i -lt 2000 ]; do printf "tar: ./logs/app-%04d.log: file changed as we read it\\n" $i >&2; i=$((i+1)); done\n';
/** Then the real tar, exiting 1 as GNU tar does after "file changed as we read it". */
const THEN_TAR_EXITS_1 = '/usr/bin/tar "$@" || exit\nexit 1\n';

/** A translated locale without localedef: gettext honours LANGUAGE in C.UTF-8 (not in C). */
const GERMAN = { LANG: 'C.UTF-8', LANGUAGE: 'de' };

describeWithStack('GNU tar on the volume host', (stack) => {
  const sshds: PrivateSshd[] = [];
  const target = tempDir('target');

  /** A volume-only config; `ssh` reaches the stack's sshd unless another is given. */
  const config = (
    path: string,
    host: string | undefined,
    ssh: Record<string, unknown> = stackSsh(stack),
    exclude: string[] = [],
    timeoutMs?: number,
  ) =>
    writeConfig({
      etcd: { endpoints: [stack.etcdEndpoint] },
      ssh,
      sources: {
        buckets: { enabled: false },
        volume: { path, exclude, ...(host ? { host } : {}), ...(timeoutMs ? { timeoutMs } : {}) },
        database: { enabled: false },
      },
      target: { type: 'dir', path: target },
    });
  const backup = async (file: string) => {
    const run = await cli(['backup', '--config', file, '--only', 'volume', '--json']);
    expect(run.code, run.err).toBe(0);
    return JSON.parse(run.out) as { id: string; sources: Manifest['sources'] };
  };
  const restore = async (id: string, into: string, file: string) => {
    const run = await restoreVolume(id, file, into, ['--json']);
    return { ...run, report: run.out ? (JSON.parse(run.out) as RestoreReport) : undefined };
  };

  /**
   * An sshd whose PATH finds `programs` (name → shell script body) first; `bin` is their folder,
   * for a local run to put first on its own PATH.
   */
  const sshdWith = async (programs: Record<string, string>) => {
    const bin = tempDir('bin');
    for (const [name, body] of Object.entries(programs)) {
      await writeFile(join(bin, name), `#!/bin/sh\n${body}`);
      await chmod(join(bin, name), 0o755);
    }
    const sshd = await startPrivateSshd(stack, { PATH: `${bin}:/usr/local/bin:/usr/bin:/bin` });
    sshds.push(sshd);
    return { sshd, bin };
  };

  afterAll(async () => {
    for (const sshd of sshds) await sshd.stop();
  });

  it('keeps the volume over SSH whole when the host locale translates tar, with the warnings in English', async () => {
    // As in backup.test.ts, a checkpoint action changes the tree at a fixed point of tar's read:
    // a shrinks by one byte, b is removed before it is read, c changes while read. TAR_OPTIONS
    // puts the action into the tar deis-backup itself runs; sshd's SetEnv sets it and the locale.
    const live = tempDir('live');
    await writeFile(join(live, 'a'), Buffer.alloc(1024 * 1024, 1));
    await writeFile(join(live, 'b'), 'b');
    await writeFile(join(live, 'c'), Buffer.alloc(1024 * 1024, 2));
    const action = join(tempDir('action'), 'change.sh');
    await writeFile(
      action,
      `#!/bin/sh\ntruncate -s ${String(1024 * 1024 - 1)} ${live}/a; rm -f ${live}/b; touch ${live}/c\n`,
    );
    await chmod(action, 0o755);
    const sshd = await startPrivateSshd(stack, {
      ...GERMAN,
      TAR_OPTIONS: `--sort=name --checkpoint=1 --checkpoint-action=exec=${action}`,
    });
    sshds.push(sshd);
    // The premise: a tar started there without the C locale speaks German (and without the
    // checkpoint action, which would change the tree before the backup).
    const probe = await runRemote(
      { ...sshd.ssh, host: stack.sshHost, timeoutMs: 10_000 },
      'TAR_OPTIONS= tar -cf /dev/null /nonexistent-deis-backup',
      { signal },
    );
    probe.stdin.end();
    probe.stdout.resume();
    const { stderr } = await probe.finished;
    expect(stderr).toContain('/nonexistent-deis-backup');
    expect(
      stderr,
      'tar prints English without LC_ALL=C: is /usr/share/locale/de/LC_MESSAGES/tar.mo there?',
    ).not.toContain('Cannot stat');

    const summary = await backup(config(live, stack.sshHost, sshd.ssh));
    const volume = summary.sources.find((s) => s.kind === 'volume');
    expect(volume).toMatchObject({
      status: 'success',
      warnings: [
        'tar: ./a: File shrank by 1 byte; padding with zeros',
        'tar: ./b: File removed before we read it',
        'tar: ./c: file changed as we read it',
        'tar: .: file changed as we read it',
      ],
    });
    const extracted = tempDir('extracted');
    gnuTarExtract(join(target, ...artifactKey(summary.id, VOLUME_ARTIFACT).split('/')), extracted);
    expect((await readdir(extracted)).sort()).toEqual(['a', 'c']);
    expect((await stat(join(extracted, 'a'))).size).toBe(1024 * 1024);
  });

  it('backs up and restores the volume over SSH as a user other than root through sudo, in English', async () => {
    // CoreOS logs in as core, which reads the store only through sudo: here a folder only root may
    // enter and log files of uid 1000, which only root can give back to 1000 on restore.
    const volume = tempDir('volume');
    await mkdir(join(volume, 'logs'));
    const log = join(volume, 'logs', 'deis-router.log');
    await writeFile(log, 'router\n');
    await chown(log, 1000, 1000);
    await chmod(log, 0o640);
    await mkdir(join(volume, 'private'), { mode: 0o700 });
    await writeFile(join(volume, 'private', 'state'), randomBytes(4096), { mode: 0o600 });
    // tar skips a socket with a warning, which the host's locale would translate.
    const socket = net.createServer();
    socket.listen(join(volume, 'logs', 'syslog.sock'));
    await once(socket, 'listening');
    // FIFOs and device nodes are skipped with a warning, as the local reader skips them, matched by
    // their literal names: `app*.log` as a pattern would take app-1.log with it. A FIFO whose path
    // holds a newline cannot be one line of tar's exclude list: it is archived, and restored.
    const specials = ['app*.log', 'null', 'odd\nfifo'].map((name) => join(volume, 'logs', name));
    execFileSync('mkfifo', [specials[0] as string, specials[2] as string]);
    execFileSync('mknod', [specials[1] as string, 'c', '1', '3']);
    await writeFile(join(volume, 'logs', 'app-1.log'), 'kept\n');
    const sshd = await startPrivateSshd(stack, GERMAN);
    sshds.push(sshd);
    const ssh = { ...sshd.ssh, user: stack.sshSudoUser };
    const probe = async (command: string) => {
      const run = await runRemote({ ...ssh, host: stack.sshHost, timeoutMs: 10_000 }, command, { signal });
      run.stdin.end();
      run.stdout.resume();
      return run.finished;
    };
    // The premises: without sudo this user cannot read the volume, and its sudo (see the stack's
    // start.sh) keeps the session's language but drops an LC_ALL exported before it.
    expect((await probe(`tar -cf /dev/null -C ${volume} .`)).code).not.toBe(0);
    const translated = await probe(`LC_ALL=C; export LC_ALL; sudo -n tar -cf /dev/null -C ${volume} .`);
    expect(translated.code).toBe(0);
    expect(translated.stderr).toContain('syslog.sock');
    expect(translated.stderr, 'sudo kept LC_ALL: is /etc/sudoers.d/deis-backup-core there?').not.toContain(
      'socket ignored',
    );

    let summary;
    try {
      summary = await backup(config(volume, stack.sshHost, ssh));
    } finally {
      // Closing the server removes the socket, which a restore does not bring back; the folder
      // gets back the time the archive holds.
      const logs = await stat(join(volume, 'logs'));
      socket.close();
      await once(socket, 'close');
      for (const special of specials) await rm(special);
      await utimes(join(volume, 'logs'), logs.atime, logs.mtime);
    }
    const source = summary.sources.find((s) => s.kind === 'volume');
    expect(source?.status).toBe('success');
    // Counted from the archive as it came: ., logs, private, the three files and the odd FIFO.
    expect(source?.counts).toMatchObject({
      objects: 7,
      bytesRead: 'router\n'.length + 4096 + 'kept\n'.length,
    });
    expect([...(source?.warnings ?? [])].sort()).toEqual([
      './logs/app*.log: not a file, directory or symlink; skipped',
      './logs/null: not a file, directory or symlink; skipped',
      'tar: ./logs/syslog.sock: socket ignored',
    ]);
    const into = join(tempDir('restored'), 'store');
    const run = await restore(summary.id, into, config(volume, stack.sshHost, ssh));
    expect(run.code, `${run.out} ${run.err}`).toBe(0);
    const fifo = join(into, 'logs', 'odd\nfifo');
    expect((await lstat(fifo)).isFIFO()).toBe(true);
    await rm(fifo);
    const logs = await stat(join(volume, 'logs'));
    await utimes(join(into, 'logs'), logs.atime, logs.mtime);
    expect(await describeTree(into)).toEqual(await describeTree(volume));

    // Restored again, into itself: it now has the volume's root, root's and 0700, which this user
    // cannot enter without sudo. A file changed since must be seen, reported and kept.
    expect((await stat(into)).mode & 0o777).toBe(0o700);
    await writeFile(join(into, 'logs', 'deis-router.log'), 'changed\n');
    const again = await restore(summary.id, into, config(volume, stack.sshHost, ssh));
    expect(again.code, `${again.out} ${again.err}`).toBe(0);
    expect(again.report?.hazards).toContain(
      `1 volume entr(ies) in ${into} differ from the restore point and stay as they are (logs/deis-router.log); pass --overwrite to replace them`,
    );
    expect(await readFile(join(into, 'logs', 'deis-router.log'), 'utf8')).toBe('changed\n');
  });

  it('keeps a volume whose tar over SSH warned more than the 64 KiB of stderr that is kept', async () => {
    const volume = tempDir('volume');
    await writeFile(join(volume, 'app.log'), 'line\n');
    // A tar found first on PATH that warns 2,000 times (96 KB), as a live volume's can, then
    // archives for real and exits 1, as GNU tar does after "file changed as we read it". And a
    // find that meets a log rotated away between its listing and its look at it: its complaint is
    // no reason to fail a read that tar finished.
    const { sshd } = await sshdWith({
      tar: `${WARN_2000_TIMES}${THEN_TAR_EXITS_1}`,
      find: `echo "find: './logs/app.log.1': No such file or directory" >&2\nexec /usr/bin/find "$@"\n`,
    });
    const summary = await backup(config(volume, stack.sshHost, sshd.ssh));
    const source = summary.sources.find((s) => s.kind === 'volume');
    expect(source?.status).toBe('success');
    expect(source?.warnings[0]).toMatch(/^tar: \.\/logs\/app-\d{4}\.log: file changed as we read it$/);
    // Each one counted, not only those in the end of stderr that is kept.
    expect(source?.counts.warnings).toBe(2000);
    const extracted = tempDir('extracted');
    gnuTarExtract(join(target, ...artifactKey(summary.id, VOLUME_ARTIFACT).split('/')), extracted);
    expect(await describeTree(extracted)).toEqual(await describeTree(volume));
  });

  it('fails a volume over SSH whose tar complained before thousands of warnings, and one that is not there', async () => {
    const volume = tempDir('volume');
    await writeFile(join(volume, 'app.log'), 'line\n');
    // As above, but the first line is an error that leaves a file out of the archive: the 2,000
    // warnings after it push it out of the end of stderr that is kept, and it still counts.
    const { sshd } = await sshdWith({
      tar: `echo "tar: ./logs/secret.log: Cannot open: Permission denied" >&2\n${WARN_2000_TIMES}${THEN_TAR_EXITS_1}`,
    });
    const failed = await cli([
      'backup',
      '--config',
      config(volume, stack.sshHost, sshd.ssh),
      '--only',
      'volume',
    ]);
    expect(failed.code).toBe(1);
    expect(failed.err).toContain(
      `error: volume ${stack.sshHost}:${volume}: archiving on the host exited 1: tar: ./logs/secret.log: Cannot open: Permission denied\n`,
    );

    const missing = join(volume, 'nothing-here');
    const absent = await cli(['backup', '--config', config(missing, stack.sshHost), '--only', 'volume']);
    expect(absent.code).toBe(1);
    expect(absent.err).toContain(
      `error: volume ${stack.sshHost}:${missing}: not a directory on the host; check sources.volume.path\n`,
    );
  });

  it('cuts off a volume over SSH whose tar stops sending, as on a hung CephFS', async () => {
    const volume = tempDir('volume');
    await writeFile(join(volume, 'app.log'), 'line\n');
    // The start of an archive, then nothing: tar waiting on the store's mount.
    const { sshd } = await sshdWith({ tar: 'printf "\\037\\213"\nexec sleep 30\n' });
    const started = Date.now();
    const run = await cli([
      'backup',
      '--config',
      config(volume, stack.sshHost, sshd.ssh, [], 1000),
      '--only',
      'volume',
    ]);
    expect(Date.now() - started).toBeLessThan(20_000);
    expect(run.code).toBe(1);
    expect(run.err).toContain(
      `error: volume ${stack.sshHost}:${volume}: nothing read for 1 s, so the copy was cut off; check that the store volume's mount answers (ls on the host; a hung CephFS blocks every read of it), or raise sources.volume.timeoutMs\n`,
    );
  });

  it('fails a volume restore whose tar exits 0 without reading the archive, here and over SSH; GNU tar reads all', async () => {
    // Incompressible and about 4 MiB: more than a pipe buffer and sshd's 2 MiB channel window, which
    // take bytes that a command that exits unread cannot be told from one that read them.
    const volume = tempDir('volume');
    await mkdir(join(volume, 'logs'));
    await writeFile(join(volume, 'logs', 'big.log'), randomBytes(4 * 1024 * 1024));
    await writeFile(join(volume, 'logs', 'small.log'), 'line\n');
    // Both kinds of archive: written here with tar-stream (1024 zero bytes end it), and GNU tar's on
    // the host (its last record padded to 10240 bytes); the restore must find each read whole.
    const snapshots = [
      (await backup(config(volume, undefined))).id,
      (await backup(config(volume, stack.sshHost))).id,
    ];
    for (const id of snapshots) {
      for (const host of [undefined, stack.sshHost]) {
        const into = join(tempDir('restored'), 'store');
        const run = await restore(id, into, config(volume, host));
        expect(run.code, `${id} ${host ?? 'local'}: ${run.out} ${run.err}`).toBe(0);
        expect(await describeTree(into)).toEqual(await describeTree(volume));
      }
    }

    // A `tar` found first on PATH that exits 0 at once, as a wrapper that does nothing would.
    const { sshd, bin } = await sshdWith({ tar: 'exit 0\n' });
    const cases = [
      { host: undefined, ssh: stackSsh(stack), where: '' },
      { host: stack.sshHost, ssh: sshd.ssh, where: ` on ${stack.sshHost}` },
    ];
    for (const { host, ssh, where } of cases) {
      const into = join(tempDir('restored'), 'store');
      const path = process.env['PATH'];
      // The local restore runs in this process: its commands take this PATH.
      if (!host) process.env['PATH'] = `${bin}:${path ?? ''}`;
      let run;
      try {
        run = await restore(snapshots[0] ?? '', into, config(volume, host, ssh));
      } finally {
        process.env['PATH'] = path;
      }
      expect(run.code, run.out).toBe(1);
      expect(run.report?.steps[0]).toMatchObject({
        step: 'volume',
        status: 'failed',
        errors: [
          `volume: tar -x into ${into}${where} exited before reading the whole archive, so the volume may be only partly restored; check that tar there is GNU tar and reads the archive on stdin, then restore again`,
        ],
      });
    }
  });

  it('leaves out the same entries of sources.volume.exclude here and with GNU find and tar on the host', async () => {
    const tree = tempDir('awkward');
    const files = [
      'logs/a.log',
      'logs/a.log.1',
      'logs/.hidden.log',
      'logs/x+y(1){2}.log',
      'logs/$^|.log',
      'logs/space name.log',
      'logs/ü.log',
      'logs/star*.log',
      'logs/new\nline.txt',
      'logs/sub/b.log',
      'data/keep.txt',
      'data/old/inside.txt',
      'data/old2',
      'deep/a/old/x',
      'deep/a/keep',
    ];
    for (const file of files) {
      await mkdir(join(tree, file, '..'), { recursive: true });
      await writeFile(join(tree, file), `${file}\n`);
    }
    // A name that is not UTF-8 fails a volume read here (it cannot be archived as it is), unless a
    // pattern leaves it out, as one does on the host: every case below leaves out junk/*.log.
    await mkdir(join(tree, 'junk'));
    await writeFile(Buffer.from(`${tree}/junk/\xff.log`, 'latin1'), 'not UTF-8\n');
    await writeFile(join(tree, 'junk', 'kept.txt'), 'kept\n');
    execFileSync('mkfifo', [join(tree, 'logs', 'pipe.log'), join(tree, 'data', 'old', 'pipe')]);
    const names = (id: string) =>
      execFileSync('tar', ['-tzf', join(target, ...artifactKey(id, VOLUME_ARTIFACT).split('/'))], {
        encoding: 'latin1',
      })
        .split('\n')
        .filter((line) => line !== '')
        .map((line) => line.replace(/\/$/, ''))
        .sort();
    // Each case: the patterns, names they leave out, and names they leave in.
    const cases: [string[], string[], string[]][] = [
      [
        ['logs/*.log', 'junk/*.log'],
        ['./logs/a.log', './logs/.hidden.log', './logs/x+y(1){2}.log', './logs/$^|.log', './logs/star*.log'],
        ['./logs/a.log.1', './logs/sub/b.log', './logs/new\\nline.txt'],
      ],
      [
        ['logs/x+y(1){2}.log', 'logs/$^|.log', 'logs/space name.log', 'data/old', 'junk/*.log'],
        ['./logs/x+y(1){2}.log', './logs/$^|.log', './logs/space name.log', './data/old/inside.txt'],
        ['./logs/a.log', './data/old2'],
      ],
      [
        ['*/old', 'junk/*.log'],
        ['./data/old', './data/old/inside.txt'],
        ['./deep/a/old/x', './data/old2'],
      ],
      [
        ['deep/*/old', 'logs/sub', 'logs/*', 'junk/*.log'],
        ['./deep/a/old/x', './logs/sub/b.log', './logs/a.log.1'],
        ['./logs', './deep/a/keep'],
      ],
      [['l*s', 'junk/*.log'], ['./logs', './logs/a.log.1'], ['./deep/a/old/x']],
    ];
    for (const [exclude, gone, stays] of cases) {
      const here = await backup(config(tree, undefined, undefined, exclude));
      const there = await backup(config(tree, stack.sshHost, undefined, exclude));
      const [local, remote] = [here, there].map((s) => s.sources[0]);
      expect(local?.excluded).toEqual(exclude);
      expect(remote?.excluded).toEqual(exclude);
      // The FIFOs not left out are skipped, with the same words both ways.
      expect(remote?.warnings, exclude.join(' ')).toEqual(local?.warnings);
      const kept = names(here.id);
      expect(names(there.id), exclude.join(' ')).toEqual(kept);
      for (const name of gone) expect(kept, name).not.toContain(name);
      expect(kept, exclude.join(' ')).toEqual(
        expect.arrayContaining([...stays, './data/keep.txt', './junk/kept.txt']),
      );
    }
  });
});
