// The calls a copy makes into a local volume: refused once it stops, and on record while any waits.
import { describe, expect, it } from 'vitest';
import { MountCalls, strand, strandedSince } from '../../../src/sources/mount-calls.js';

/** A call that returns only when told to, as one blocked on a hung mount does. */
function blocked(): { call: Promise<string>; answer: () => void } {
  let answer: () => void = () => undefined;
  const call = new Promise<string>((resolve) => {
    answer = () => {
      resolve('answered');
    };
  });
  return { call, answer };
}

describe('MountCalls', () => {
  it('starts calls while the copy runs and counts those that have not returned', async () => {
    const calls = new MountCalls(new AbortController().signal);
    const first = blocked();
    const started = calls.start(() => first.call);
    expect(calls.waiting).toBe(1);
    first.answer();
    expect(await started).toBe('answered');
    expect(calls.waiting).toBe(0);
  });

  it('refuses a new call once the copy has stopped, but keeps a close in sight', async () => {
    const stop = new AbortController();
    const calls = new MountCalls(stop.signal);
    stop.abort(new Error('cut off'));
    let ran = false;
    expect(() =>
      calls.start(() => {
        ran = true;
        return Promise.resolve();
      }),
    ).toThrow('cut off');
    expect(ran).toBe(false);
    const close = blocked();
    const watched = calls.watch(close.call);
    expect(calls.waiting).toBe(1);
    close.answer();
    await watched;
    expect(calls.waiting).toBe(0);
  });

  it('settles once every call has returned, a close watched after the first wait included', async () => {
    const calls = new MountCalls(new AbortController().signal);
    const read = blocked();
    const close = blocked();
    void calls.start(() => read.call);
    let settled = false;
    const settling = calls.settled().then(() => {
      settled = true;
    });
    void read.call.then(() => calls.watch(close.call));
    read.answer();
    await read.call;
    await Promise.resolve();
    expect(settled).toBe(false);
    close.answer();
    await settling;
    expect(settled).toBe(true);
  });
});

describe('strand', () => {
  it('keeps a cut-off copy on record until its last waiting call returns', async () => {
    const path = '/var/lib/deis/store-strand-test';
    const calls = new MountCalls(new AbortController().signal);
    const read = blocked();
    void calls.start(() => read.call);
    const since = new Date('2026-12-08T01:00:00Z');
    strand(path, calls, since);
    expect(strandedSince(path)).toEqual(since);
    expect(strandedSince('/another/volume')).toBeUndefined();
    read.answer();
    await calls.settled();
    await Promise.resolve();
    expect(strandedSince(path)).toBeUndefined();
  });

  it('records nothing for a copy cut off with no call in flight', () => {
    const path = '/var/lib/deis/store-strand-idle';
    strand(path, new MountCalls(new AbortController().signal), new Date());
    expect(strandedSince(path)).toBeUndefined();
  });

  it('keeps the newer record when a later copy is cut off before the earlier one returns', async () => {
    const path = '/var/lib/deis/store-strand-twice';
    const first = new MountCalls(new AbortController().signal);
    const firstRead = blocked();
    void first.start(() => firstRead.call);
    strand(path, first, new Date('2026-12-08T01:00:00Z'));
    const second = new MountCalls(new AbortController().signal);
    const secondRead = blocked();
    void second.start(() => secondRead.call);
    const later = new Date('2026-12-08T02:00:00Z');
    strand(path, second, later);
    firstRead.answer();
    await first.settled();
    await Promise.resolve();
    expect(strandedSince(path)).toEqual(later);
    secondRead.answer();
    await second.settled();
    await Promise.resolve();
    expect(strandedSince(path)).toBeUndefined();
  });
});
