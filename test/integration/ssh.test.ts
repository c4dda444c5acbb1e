// SSH to the real sshd: key auth, strict known_hosts (plain and hashed), and clear refusals.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { knownHostKeys, runRemote, type SshTarget } from '../../src/ssh.js';
import { describeWithStack, tempDir } from './helpers.js';
import { stackSsh } from '../fixtures/stack.js';

const signal = AbortSignal.timeout(60_000);

async function output(target: SshTarget, command: string): Promise<{ stdout: string; code: number | null }> {
  const remote = await runRemote(target, command, { signal });
  let stdout = '';
  for await (const chunk of remote.stdout) stdout += (chunk as Buffer).toString('utf8');
  return { stdout, code: (await remote.finished).code };
}

describeWithStack('ssh', (stack) => {
  const base: SshTarget = { ...stackSsh(stack), host: stack.sshHost, timeoutMs: 10_000 };

  it('runs a command and reports its exit status', async () => {
    expect(await output(base, 'echo hello; exit 3')).toEqual({ stdout: 'hello\n', code: 3 });
  });

  it('accepts a hashed known_hosts entry as ssh-keygen -H writes it', async () => {
    const file = join(tempDir('known'), 'known_hosts');
    writeFileSync(file, readFileSync(stack.sshKnownHosts));
    execFileSync('ssh-keygen', ['-H', '-f', file], { stdio: 'ignore' });
    expect(readFileSync(file, 'utf8')).toMatch(/^\|1\|/);
    expect(knownHostKeys(readFileSync(file, 'utf8'), stack.sshHost, stack.sshPort)).toHaveLength(1);
    expect(await output({ ...base, knownHostsFile: file }, 'true')).toEqual({ stdout: '', code: 0 });
  });

  it('refuses a host that is not listed, or whose key differs', async () => {
    const dir = tempDir('known');
    const empty = join(dir, 'empty');
    writeFileSync(empty, '');
    await expect(runRemote({ ...base, knownHostsFile: empty }, 'true', { signal })).rejects.toThrow(
      `ssh root@[127.0.0.1]:${stack.sshPort}: host not listed in ${empty}; add its key with ssh-keyscan -p ${stack.sshPort} 127.0.0.1 >> ${empty}`,
    );
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'other')]);
    const wrong = join(dir, 'wrong');
    writeFileSync(wrong, `[127.0.0.1]:${stack.sshPort} ${readFileSync(join(dir, 'other.pub'), 'utf8')}`);
    await expect(runRemote({ ...base, knownHostsFile: wrong }, 'true', { signal })).rejects.toThrow(
      `ssh root@[127.0.0.1]:${stack.sshPort}: host key does not match ${wrong}; if the host was rebuilt, replace its line there`,
    );
  });

  it('explains a refused key, a missing key file and a closed port', async () => {
    const dir = tempDir('key');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'stranger')]);
    await expect(
      runRemote({ ...base, privateKeyFile: join(dir, 'stranger') }, 'true', { signal }),
    ).rejects.toThrow(
      /key authentication refused; add the public half of ssh\.privateKeyFile to the user's authorized_keys$/,
    );
    await expect(
      runRemote({ ...base, privateKeyFile: join(dir, 'none') }, 'true', { signal }),
    ).rejects.toThrow(/cannot read ssh\.privateKeyFile .*none; point it at the private key/);
    // A port nothing listens on is reported as such, listed in known_hosts or not.
    await expect(runRemote({ ...base, port: 24998 }, 'true', { signal })).rejects.toThrow(
      'ssh root@[127.0.0.1]:24998: cannot connect (ECONNREFUSED); check the host and ssh.port',
    );
    // Keys ssh2 cannot use: one with a passphrase, a public half, anything else.
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', 'secret-phrase', '-f', join(dir, 'locked')]);
    writeFileSync(join(dir, 'garbage'), 'garbage\n');
    for (const [file, what] of [
      ['locked', 'is encrypted'],
      ['stranger.pub', 'is not a private key ssh can use'],
      ['garbage', 'is not a private key ssh can use'],
    ] as const) {
      await expect(
        runRemote({ ...base, privateKeyFile: join(dir, file) }, 'true', { signal }),
      ).rejects.toThrow(
        `ssh root@[127.0.0.1]:${stack.sshPort}: ssh.privateKeyFile ${join(dir, file)} ${what}; point it at a private key without a passphrase (ssh-keygen -t ed25519 -N '')`,
      );
    }
    writeFileSync(join(dir, 'known'), `[127.0.0.1]:24998 ${readFileSync(join(dir, 'stranger.pub'), 'utf8')}`);
    await expect(
      runRemote({ ...base, port: 24998, knownHostsFile: join(dir, 'known') }, 'true', { signal }),
    ).rejects.toThrow(
      'ssh root@[127.0.0.1]:24998: cannot connect (ECONNREFUSED); check the host and ssh.port',
    );
  });

  it('settles a command it was told to stop, quiet or mid-output, with the reason it was stopped', async () => {
    // Also with its output stream destroyed, as a pipeline does with its source when the writer
    // fails: ssh2 then never closes the channel, only the connection.
    for (const [command, destroy] of [
      ['sleep 5; echo late', false],
      ['echo early; sleep 5', false],
      ['sleep 5; echo late', true],
    ] as const) {
      const stop = new AbortController();
      const remote = await runRemote(base, command, { signal: stop.signal });
      remote.stdout.resume();
      setTimeout(() => {
        stop.abort(new Error('told to stop'));
        if (destroy) remote.stdout.destroy();
      }, 300);
      const started = Date.now();
      await expect(remote.finished, command).rejects.toThrow('told to stop');
      expect(Date.now() - started, command).toBeLessThan(3000);
    }
  });
});
