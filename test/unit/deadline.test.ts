// withDeadline: its time limit fires even when garbage collection runs while it waits.
import { setTimeout as delay } from 'node:timers/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { withDeadline } from '../../src/deadline.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

describe('withDeadline', () => {
  it('aborts with a TimeoutError once the time has passed, though only it refers to the timer', async () => {
    const never = new AbortController();
    const { signal, dispose } = withDeadline(never.signal, 100);
    gc();
    await delay(50);
    gc();
    await delay(250);
    expect(signal.aborted).toBe(true);
    expect(signal.reason).toMatchObject({ name: 'TimeoutError', message: 'no answer within 0.1 s' });
    dispose();
  });

  it('aborts with the outer signal first, and not later once disposed', async () => {
    const outer = new AbortController();
    const { signal, dispose } = withDeadline(outer.signal, 100);
    outer.abort(new Error('stop'));
    expect(signal.reason).toMatchObject({ message: 'stop' });
    dispose();
    const quiet = withDeadline(new AbortController().signal, 50);
    quiet.dispose();
    const alone = withDeadline(undefined, 50);
    alone.dispose();
    await delay(150);
    expect(quiet.signal.aborted).toBe(false);
    expect(alone.signal.aborted).toBe(false);
    const timed = withDeadline(undefined, 20);
    gc();
    await delay(100);
    expect(timed.signal.reason).toMatchObject({ name: 'TimeoutError' });
  });
});
