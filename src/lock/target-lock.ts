// The cluster lock on a target without etcd or conditional writes (plain S3, a directory): each holder
// writes locks/<holder>.json, waits a moment, lists locks/, and the earliest unexpired (since, holder)
// wins; the others remove their file and report busy.
//
// Clock-skew caveat: expiry is judged with the reader's clock. A reader whose clock runs ahead of a
// holder's by more than the TTL sees a live lock as expired and removes it (the holder then loses the
// lock at its next refresh, within ttl/3, so two runs may overlap for that long). Two runners racing
// for a free lock are kept apart only if each put is visible to a list within settleMs.
import { Readable } from 'node:stream';
import { BackupError } from '../errors.js';
import type { Target } from '../targets/target.js';
import {
  describeHolder,
  holdLock,
  newHolder,
  parseHolder,
  sleep,
  type ClusterLock,
  type HeldLock,
  type LockHolder,
} from './lock.js';

/** Where lock files live in the target. */
export const LOCKS = 'locks/';

/** Settings of a target lock. */
export interface TargetLockOptions {
  ttlSeconds: number;
  /** How long a new holder waits after writing its file before looking for rivals; default 1000. */
  settleMs?: number;
  /**
   * The lock this one is taken beside, once that one is held (PairedLock): recorded in our file. A
   * file that records the same one belongs to an earlier holder of it, which no longer holds it
   * (it could not remove its file: the target was down, or it was killed), and is removed. A function
   * is called when the lock is taken and refreshed, so it may name what only the held lock knows.
   */
  pairedWith?: string | (() => string);
}

/** ClusterLock as one file per holder under locks/ in a target. */
export class TargetLock implements ClusterLock {
  readonly where: string;
  private readonly target: Target;
  private readonly ttlSeconds: number;
  private readonly settleMs: number;
  private readonly pairing: string | (() => string) | undefined;

  constructor(target: Target, options: TargetLockOptions) {
    this.target = target;
    this.ttlSeconds = options.ttlSeconds;
    this.settleMs = options.settleMs ?? 1000;
    this.pairing = options.pairedWith;
    this.where = `${target.name}/${LOCKS}`;
  }

  /** What our file records as the lock this one is paired with. */
  private get pairedWith(): string | undefined {
    return typeof this.pairing === 'function' ? this.pairing() : this.pairing;
  }

  async tryAcquire(
    operation: string,
    opts: { signal: AbortSignal },
  ): Promise<{ held: HeldLock } | { busy: LockHolder | undefined }> {
    // Back off before writing, so a lock that is plainly held sees no rival file come and go.
    const first = earliest(await this.readLocks(opts.signal, { takeOver: true }));
    if (first !== undefined) return { busy: first };

    const acquiredAt = Date.now();
    const holder: LockHolder = {
      ...newHolder(operation, this.ttlSeconds, new Date(acquiredAt)),
      ...(this.pairedWith === undefined ? {} : { pairedWith: this.pairedWith }),
    };
    const key = lockKey(holder.holder);
    let rival: LockHolder | undefined;
    try {
      // A put stopped by an abort may still land: removed below, it does not outlive us by a TTL.
      await this.write(key, holder, opts.signal);
      // A rival that listed before our put landed wrote its file too; give its put time to show.
      await sleep(this.settleMs, opts.signal);
      rival = earliest(
        (await this.readLocks(opts.signal, { takeOver: true, own: holder.holder })).filter((h) =>
          this.yieldsTo(h, holder),
        ),
      );
    } catch (err) {
      await this.removeQuietly(key);
      throw err;
    }
    if (rival !== undefined) {
      await this.removeQuietly(key);
      return { busy: rival };
    }

    let record = holder;
    const lease = {
      refresh: async (o: { signal: AbortSignal }) => {
        // Never write back a file someone removed: they judged it expired and may hold the lock now.
        if ((await this.target.stat(key, o)) === undefined) return { lost: `${key} was removed` };
        const startedAt = Date.now();
        record = { ...record, expiresAt: new Date(startedAt + this.ttlSeconds * 1000).toISOString() };
        await this.write(key, record, o.signal);
        const other = earliest(
          (await this.readLocks(o.signal, { own: holder.holder })).filter((h) =>
            this.yieldsTo(h, holder, true),
          ),
        );
        if (other !== undefined) return { lost: `${describeHolder(other)} holds it too` };
        return 'ok' as const;
      },
      remove: async (o: { signal: AbortSignal }) => {
        await this.target.remove(key, o);
      },
    };
    return { held: holdLock(this.where, holder, lease, { ttlSeconds: this.ttlSeconds, acquiredAt }) };
  }

  /**
   * Whether `holder` must give way to the lock file `other`. Between two target-backend runners the
   * earlier one wins. A paired runner (it holds the etcd key, and writes its file without settling)
   * gives way to any other file, and a target-backend runner to any paired file: a target runner
   * still in its settling second may not have seen the paired file yet, but will, and yields then.
   */
  private yieldsTo(other: LockHolder, holder: LockHolder, refreshing = false): boolean {
    if (other.holder === holder.holder) return false;
    // Left by an earlier holder of the lock ours is paired with, which we hold now: never a rival.
    if (this.pairedWith !== undefined && other.pairedWith === this.pairedWith) return false;
    // Once held, a paired lock ignores a target runner's file that shows up: that runner wrote it
    // without seeing ours and, listing after its settling second, sees ours and withdraws.
    if (this.pairedWith !== undefined) return !refreshing || other.pairedWith !== undefined;
    if (other.pairedWith !== undefined) return true;
    return sortsBefore(other, holder);
  }

  /**
   * Every unexpired lock under locks/; expired ones are removed on the way (best effort). With
   * `takeOver` (only while acquiring: we hold the lock ours is paired with, so no one else does),
   * so are those an earlier holder of that lock left, other than `own`, ours.
   */
  private async readLocks(
    signal: AbortSignal,
    { takeOver = false, own }: { takeOver?: boolean; own?: string } = {},
  ): Promise<LockHolder[]> {
    const keys: string[] = [];
    for await (const info of this.target.list(LOCKS, { signal })) {
      if (info.key.endsWith('.json')) keys.push(info.key);
    }
    const now = Date.now();
    const holders = await Promise.all(
      keys.map(async (key) => {
        const holder = await this.read(key, signal);
        if (holder === undefined) return undefined;
        const expiresAt = Date.parse(holder.expiresAt);
        const stale =
          takeOver &&
          this.pairedWith !== undefined &&
          holder.pairedWith === this.pairedWith &&
          holder.holder !== own;
        if (Number.isNaN(expiresAt) || expiresAt <= now || stale) {
          // Its holder stopped refreshing (or our clocks disagree; see the header).
          await this.removeQuietly(key);
          return undefined;
        }
        return holder;
      }),
    );
    return holders.filter((h) => h !== undefined);
  }

  /** A lock file's holder; undefined when it vanished meanwhile or is not a lock record. */
  private async read(key: string, signal: AbortSignal): Promise<LockHolder | undefined> {
    let body: Readable;
    try {
      body = await this.target.get(key, { signal });
    } catch (err) {
      if (err instanceof BackupError && err.code === 'ERR_NOT_FOUND') return undefined;
      throw err;
    }
    const chunks: Buffer[] = [];
    for await (const chunk of body) chunks.push(chunk as Buffer);
    return parseHolder(Buffer.concat(chunks).toString('utf8'));
  }

  private async write(key: string, holder: LockHolder, signal: AbortSignal): Promise<void> {
    const body = Buffer.from(JSON.stringify(holder));
    // A lock matters only while its holder lives: a crash that loses the file frees it, as the TTL would.
    await this.target.put(key, Readable.from([body]), { signal, size: body.length, volatile: true });
  }

  private async removeQuietly(key: string): Promise<void> {
    try {
      await this.target.remove(key, { signal: AbortSignal.timeout(10_000) });
    } catch {
      // Best effort: a file left behind expires after the TTL and is removed by the next reader.
    }
  }
}

/** The lock file of a holder id, kept to characters every target accepts in a key. */
function lockKey(holder: string): string {
  return `${LOCKS}${holder.replace(/[^A-Za-z0-9._-]/g, '_')}.json`;
}

/** True when a was taken before b: earlier since, then the smaller holder id. */
function sortsBefore(a: LockHolder, b: LockHolder): boolean {
  const sa = Date.parse(a.since);
  const sb = Date.parse(b.since);
  if (sa !== sb) return sa < sb;
  return a.holder < b.holder;
}

/** The holder that wins among these, or undefined for none. */
function earliest(holders: readonly LockHolder[]): LockHolder | undefined {
  let first: LockHolder | undefined;
  for (const h of holders) if (first === undefined || sortsBefore(h, first)) first = h;
  return first;
}
