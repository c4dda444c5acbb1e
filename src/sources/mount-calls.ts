// File-system calls into a local volume, kept in sight. A call blocked on a hung mount (CephFS,
// FUSE) holds one of libuv's four threads until the mount answers, and nothing can take it back:
// each copy that met the hung mount would block one more, and after four every file call of the
// process waits. So a copy that is stopped leaves its waiting calls on record, and no new copy of
// that volume starts in this process while one of them still waits.

/** The file-system calls of one copy: started only while the copy runs, each kept until it returns. */
export class MountCalls {
  private readonly signal: AbortSignal;
  private readonly pending = new Set<Promise<unknown>>();

  constructor(signal: AbortSignal) {
    this.signal = signal;
  }

  /** Starts `call` unless the copy has stopped (then throws its reason); resolves as the call does. */
  start<T>(call: () => Promise<T>): Promise<T> {
    this.signal.throwIfAborted();
    return this.watch(call());
  }

  /** Keeps a call that must run even after a stop (a close) in sight until it returns. */
  watch<T>(call: Promise<T>): Promise<T> {
    this.pending.add(call);
    const done = (): void => {
      this.pending.delete(call);
    };
    call.then(done, done);
    return call;
  }

  /** How many calls have not returned. */
  get waiting(): number {
    return this.pending.size;
  }

  /**
   * Resolves once no call is in flight, waiting again for any call watched before the last one
   * returned. A close started later still goes on after; it runs on a mount that has just answered.
   */
  async settled(): Promise<void> {
    while (this.pending.size > 0) await Promise.allSettled([...this.pending]);
  }
}

/** The volumes a cut-off copy left calls waiting in, by path, with when that copy was cut off. */
const stranded = new Map<string, { since: Date; calls: MountCalls }>();

/**
 * Records that the copy of `path` was cut off with `calls` in flight; the record goes once the last
 * of them returns. A copy cut off with nothing in flight (waiting on something else) leaves none.
 */
export function strand(path: string, calls: MountCalls, since: Date): void {
  if (calls.waiting === 0) return;
  const record = { since, calls };
  stranded.set(path, record);
  void calls.settled().then(() => {
    if (stranded.get(path) === record) stranded.delete(path);
  });
}

/** When the copy of `path` whose calls still wait was cut off, or undefined when none waits. */
export function strandedSince(path: string): Date | undefined {
  return stranded.get(path)?.since;
}
