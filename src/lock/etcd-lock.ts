// The cluster lock as one etcd v2 key with a TTL, in the spirit of Deis' own masterLock keys: created
// with prevExist=false, kept by compare-and-swap on our value, removed by compare-and-delete.
import { BackupError } from '../errors.js';
import type { Etcd, EtcdNode } from '../etcd.js';
import {
  describeHolder,
  holdLock,
  newHolder,
  parseHolder,
  type ClusterLock,
  type HeldLock,
  type LockHolder,
} from './lock.js';

/** Settings of an etcd lock. */
export interface EtcdLockOptions {
  /** The lock key, e.g. "/deis/backup/lock". */
  key: string;
  ttlSeconds: number;
}

/** How long the removal after a failed create may take; past it the key expires by its TTL. */
const RELEASE_AFTER_FAILED_CREATE_MS = 10_000;

/**
 * ClusterLock on an etcd key whose value is the holder's LockHolder JSON. The value is written once
 * and never changes while held (refresh re-sends it), so its expiresAt is the first one; a busy answer
 * takes expiresAt from the key's TTL, by etcd's clock.
 */
export class EtcdLock implements ClusterLock {
  readonly where: string;
  private readonly etcd: Etcd;
  private readonly key: string;
  private readonly ttlSeconds: number;

  constructor(etcd: Etcd, options: EtcdLockOptions) {
    this.etcd = etcd;
    this.key = options.key;
    this.ttlSeconds = options.ttlSeconds;
    this.where = `etcd ${options.key}`;
  }

  async tryAcquire(
    operation: string,
    opts: { signal: AbortSignal },
  ): Promise<{ held: HeldLock } | { busy: LockHolder | undefined }> {
    const acquiredAt = Date.now();
    const holder = newHolder(operation, this.ttlSeconds, new Date(acquiredAt));
    const value = JSON.stringify(holder);
    const ttl = { ttlSeconds: this.ttlSeconds, signal: opts.signal };
    let created: boolean;
    try {
      created = await this.etcd.create(this.key, value, ttl);
    } catch (err) {
      // A create stopped by an abort (or whose answer was lost) may have made the key: it holds our
      // value only, so removing it by that value cannot take another holder's lock.
      await this.etcd
        .remove(this.key, value, { signal: AbortSignal.timeout(RELEASE_AFTER_FAILED_CREATE_MS) })
        .catch(() => undefined);
      throw err;
    }
    const node = created ? undefined : await this.etcd.getNode(this.key, opts);
    if (node?.dir) {
      throw new BackupError(
        'ERR_CONFIG',
        `lock.key ${this.key} is a directory in etcd; set lock.key to a key of its own, such as /deis/backup/lock`,
      );
    }
    // A create retried on another endpoint after a lost answer finds our own value.
    if (node?.value === value) created = true;
    if (created) {
      const lease = {
        refresh: async (o: { signal: AbortSignal }) =>
          (await this.etcd.refresh(this.key, value, { ttlSeconds: this.ttlSeconds, signal: o.signal }))
            ? ('ok' as const)
            : { lost: await this.whyLost(o.signal) },
        remove: async (o: { signal: AbortSignal }) => {
          await this.etcd.remove(this.key, value, o);
        },
      };
      return { held: holdLock(this.where, holder, lease, { ttlSeconds: this.ttlSeconds, acquiredAt }) };
    }
    // The holder may have released between our create and read: busy with an unknown holder, and the
    // caller's next attempt can take it.
    return { busy: node === undefined ? undefined : holderOf(node) };
  }

  /** Names who holds the key now that our compare failed. */
  private async whyLost(signal: AbortSignal): Promise<string> {
    let node;
    try {
      node = await this.etcd.getNode(this.key, { signal });
    } catch {
      return 'the key no longer holds our value';
    }
    if (node === undefined) return 'the key was removed (or expired)';
    if (node.dir) return 'the key is now a directory';
    const other = holderOf(node);
    return `the key now holds ${other === undefined ? 'another value' : describeHolder(other)}`;
  }
}

/** The holder a key names, its expiry taken from the key's TTL. */
function holderOf(node: EtcdNode): LockHolder | undefined {
  const holder = parseHolder(node.value);
  const expiresAt = node.expiration === undefined ? NaN : Date.parse(node.expiration);
  if (holder === undefined || Number.isNaN(expiresAt)) return holder;
  return { ...holder, expiresAt: new Date(expiresAt).toISOString() };
}
