// feedCommand against real local commands: a command that stops reading must end the feed with its
// exit status, whenever its input closes relative to the writes.
import { Readable } from 'node:stream';
import { describe, expect, it, vi } from 'vitest';
import { asRoot, feedCommand, runCommand, shownCommand } from '../../src/command.js';
import { keepTail, StderrCollector } from '../../src/ssh.js';

const signal = AbortSignal.timeout(30_000);

/** Chunks of 64 KiB, each after a pause long enough for a dead reader's pipe to be closed. */
function slowBody(chunks: number, pauseMs: number): Readable {
  return Readable.from(
    (async function* () {
      for (let i = 0; i < chunks; i++) {
        await new Promise((resolve) => setTimeout(resolve, pauseMs));
        yield Buffer.alloc(64 * 1024, i);
      }
    })(),
  );
}

describe('feedCommand', () => {
  it('returns the exit status of a command that exits without reading, between two writes', async () => {
    const running = await runCommand('echo gave up >&2; exit 5', {}, { signal });
    const fed = await feedCommand(running, slowBody(20, 20));
    expect(fed).toMatchObject({ code: 5, stderr: 'gave up\n' });
  });

  it('returns the exit status of a command that stops reading part way', async () => {
    const running = await runCommand('head -c 1000 > /dev/null; exit 4', {}, { signal });
    const fed = await feedCommand(running, slowBody(50, 5));
    expect(fed.code).toBe(4);
  });

  it('says a command that exits 0 without reading all its input did not take the whole body', async () => {
    for (const command of ['true', 'head -c 1000 > /dev/null']) {
      const running = await runCommand(command, {}, { signal });
      const fed = await feedCommand(running, slowBody(50, 5));
      expect(fed).toMatchObject({ code: 0, complete: false });
    }
  });

  it('feeds every byte to a command that reads them all', async () => {
    const running = await runCommand('wc -c', {}, { signal });
    let out = '';
    running.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    const fed = await feedCommand(running, slowBody(8, 1));
    expect(fed).toMatchObject({ code: 0, complete: true });
    expect(out.trim()).toBe(String(8 * 64 * 1024));
  });
});

describe('runCommand in the C locale', () => {
  /** GNU tar's complaint about a missing path, started with this process's locale set as given. */
  async function tarMessage(cLocale: boolean): Promise<string> {
    // A translated locale without localedef: gettext honours LANGUAGE in C.UTF-8 (not in C).
    vi.stubEnv('LANG', 'C.UTF-8');
    vi.stubEnv('LANGUAGE', 'de');
    vi.stubEnv('LC_ALL', undefined);
    try {
      const running = await runCommand('tar -cf /dev/null /nonexistent-deis-backup', {}, { signal, cLocale });
      running.stdin.end();
      running.stdout.resume();
      return (await running.finished).stderr;
    } finally {
      vi.unstubAllEnvs();
    }
  }

  it('runs a local command untranslated whatever LANG and LANGUAGE say', async () => {
    // The premise: tar's translations are installed, so without the C locale it speaks German.
    expect(
      await tarMessage(false),
      'tar prints English without LC_ALL=C: is /usr/share/locale/de/LC_MESSAGES/tar.mo there?',
    ).not.toContain('Cannot stat');
    expect(await tarMessage(true)).toContain(
      'tar: /nonexistent-deis-backup: Cannot stat: No such file or directory',
    );
  });

  it("names LC_ALL on sudo's command line, so env_reset cannot drop it unseen", () => {
    const ssh = { host: 'h', port: 22, privateKeyFile: 'k', knownHostsFile: 'n', timeoutMs: 1 };
    expect(asRoot({ ...ssh, user: 'core' })).toBe('sudo -n LC_ALL=C ');
    expect(asRoot({ ...ssh, user: 'root' })).toBe('');
    expect(asRoot(undefined)).toBe('');
  });
});

describe('runCommand stderr', () => {
  it('keeps the last 64 KiB of stderr from the start of a line', async () => {
    // 2,000 lines of 48 bytes: 96,000 bytes, more than is kept.
    const line = (i: number) =>
      `tar: ./logs/app-${String(i).padStart(4, '0')}.log: file changed as we read it`;
    const running = await runCommand(
      'i=0; while [ $i -lt 2000 ]; do printf "tar: ./logs/app-%04d.log: file changed as we read it\\n" $i >&2; i=$((i+1)); done',
      {},
      { signal: AbortSignal.timeout(10_000) },
    );
    running.stdin.end();
    running.stdout.resume();
    const { code, stderr } = await running.finished;
    expect(code).toBe(0);
    expect(stderr.length).toBeLessThanOrEqual(64 * 1024);
    const lines = stderr.trimEnd().split('\n');
    expect(lines.at(-1)).toBe(line(1999));
    expect(lines.every((l, i) => l === line(2000 - lines.length + i))).toBe(true);
  });

  it('hands on every line of stderr as it comes, whatever the chunks cut', () => {
    const lines: string[] = [];
    const collector = new StderrCollector((line) => lines.push(line));
    // "ü" is two bytes in UTF-8, cut between two chunks; the last line has no newline.
    const text = Buffer.from('one\ntwo ü\n\nthree');
    collector.push(text.subarray(0, 9));
    collector.push(text.subarray(9, 11));
    collector.push(text.subarray(11));
    expect(lines).toEqual(['one', 'two ü', '']);
    expect(collector.end()).toBe('one\ntwo ü\n\nthree');
    expect(lines).toEqual(['one', 'two ü', '', 'three']);
    // Ending twice hands on nothing more.
    collector.end();
    expect(lines).toHaveLength(4);
  });

  it('hands on a line longer than all that is kept in pieces, not held whole', () => {
    const lines: string[] = [];
    const collector = new StderrCollector((line) => lines.push(line));
    for (let i = 0; i < 100; i++) collector.push(Buffer.from('x'.repeat(1024)));
    collector.end();
    expect(lines.every((line) => line.length <= 65 * 1024)).toBe(true);
    expect(lines.join('')).toBe('x'.repeat(100 * 1024));
  });

  it('keeps the end of one line longer than all that is kept', () => {
    const long = `${'x'.repeat(70 * 1024)}\n`;
    expect(keepTail(long)).toBe(long.slice(-64 * 1024));
  });
});

describe('shownCommand', () => {
  it('hides the values of secret-named assignments and URL passwords, and nothing else', () => {
    expect(shownCommand('PGPASSWORD=s3cret pg_dumpall -h db -U deis')).toBe(
      'PGPASSWORD=*** pg_dumpall -h db -U deis',
    );
    expect(shownCommand('env MYSQL_PWD=\'two words\' API_TOKEN="x y" run; PGUSER=deis psql')).toBe(
      'env MYSQL_PWD=*** API_TOKEN=*** run; PGUSER=deis psql',
    );
    expect(shownCommand('psql postgres://deis:hunter2@db:5432/deis')).toBe(
      'psql postgres://deis:***@db:5432/deis',
    );
    const plain = 'docker exec -i deis-database sudo -u postgres psql -X -q -d postgres';
    expect(shownCommand(plain)).toBe(plain);
  });
});
