// Keys mapped to numbers in flat typed arrays, for the checks that hold one value per object or blob
// (the restore's plan and preflight, verify). Each key is held as a 128-bit digest: a blob's name is
// already a sha256, so its first 128 bits serve; any other key is hashed with md5. About 50 bytes
// per key at most, where a Map of the key strings took 130 or more on V8's heap, and V8 lets a heap
// grow to a few times its live data.
import { createHash } from 'node:crypto';
import type { Target } from '../targets/target.js';
import { BLOBS } from './layout.js';

/** Words of a digest kept per slot (4 × 32 bits). */
const WORDS = 4;
const FIRST_SLOTS = 1024;
/** Where the hex name starts in `blobs/xx/<64 hex>`. */
const NAME_AT = BLOBS.length + 3;
const BLOB_KEY_LENGTH = NAME_AT + 64;

/** True for a key shaped as blobKey makes it: `blobs/`, the name's first two hex digits, `/`, the name. */
export function isBlobKey(key: string): boolean {
  return (
    key.length === BLOB_KEY_LENGTH &&
    key.startsWith(BLOBS) &&
    key[BLOBS.length + 2] === '/' &&
    key.startsWith(key.slice(NAME_AT, NAME_AT + 2), BLOBS.length) &&
    /^[0-9a-f]{64}$/.test(key.slice(NAME_AT))
  );
}

/** The first 52 bits of a hex digest, as an exact number. */
export function hexPrefix(hex: string): number {
  return Number.parseInt(hex.slice(0, 13), 16);
}

/** Writes key's 128-bit digest into `into`; false when the key cannot be held. */
type Digest = (key: string, into: Uint32Array) => boolean;

/** An open-addressing hash table from keys, held as digests, to numbers. */
export class DigestMap {
  private names = new Uint32Array(FIRST_SLOTS * WORDS);
  private values = new Float64Array(FIRST_SLOTS);
  private taken = new Uint8Array(FIRST_SLOTS);
  private count = 0;
  /** The digest being looked up, computed once per call. */
  private readonly name = new Uint32Array(WORDS);
  private readonly digest: Digest;

  private constructor(digest: Digest) {
    this.digest = digest;
  }

  /** A map of blob keys; any other key is never held nor found. */
  static forBlobs(): DigestMap {
    return new DigestMap((key, into) => {
      if (!isBlobKey(key)) return false;
      for (let word = 0; word < WORDS; word++) {
        const at = NAME_AT + 8 * word;
        into[word] = Number.parseInt(key.slice(at, at + 8), 16);
      }
      return true;
    });
  }

  /** A map of any keys (object keys of a bucket), each held as its md5. */
  static forKeys(): DigestMap {
    return new DigestMap((key, into) => {
      const md5 = createHash('md5').update(key).digest();
      for (let word = 0; word < WORDS; word++) into[word] = md5.readUInt32LE(4 * word);
      return true;
    });
  }

  /** Every blob the target holds, with its size. */
  static async blobSizesIn(target: Target, opts: { signal: AbortSignal }): Promise<DigestMap> {
    const sizes = DigestMap.forBlobs();
    for await (const info of target.list(BLOBS, opts)) sizes.set(info.key, info.size);
    return sizes;
  }

  get size(): number {
    return this.count;
  }

  /** Sets key's value; false (nothing stored) when this map cannot hold such a key. */
  set(key: string, value: number): boolean {
    if (!this.digest(key, this.name)) return false;
    if (2 * (this.count + 1) > this.taken.length) this.grow();
    const slot = this.find();
    if (this.taken[slot] === 0) {
      this.taken[slot] = 1;
      this.names.set(this.name, slot * WORDS);
      this.count++;
    }
    this.values[slot] = value;
    return true;
  }

  /** Key's value, or undefined when it was never set. */
  get(key: string): number | undefined {
    if (!this.digest(key, this.name)) return undefined;
    const slot = this.find();
    return this.taken[slot] === 1 ? this.values[slot] : undefined;
  }

  /** The slot holding this.name, or the empty slot where it would go (linear probing). */
  private find(): number {
    const mask = this.taken.length - 1;
    for (let slot = (this.name[0] ?? 0) & mask; ; slot = (slot + 1) & mask) {
      if (this.taken[slot] === 0 || this.holdsName(slot)) return slot;
    }
  }

  private holdsName(slot: number): boolean {
    const at = slot * WORDS;
    for (let word = 0; word < WORDS; word++) if (this.names[at + word] !== this.name[word]) return false;
    return true;
  }

  private grow(): void {
    const { names, values, taken } = this;
    const slots = taken.length * 2;
    this.names = new Uint32Array(slots * WORDS);
    this.values = new Float64Array(slots);
    this.taken = new Uint8Array(slots);
    const held = new Uint32Array(this.name);
    for (let old = 0; old < taken.length; old++) {
      if (taken[old] === 0) continue;
      this.name.set(names.subarray(old * WORDS, old * WORDS + WORDS));
      const slot = this.find();
      this.taken[slot] = 1;
      this.names.set(this.name, slot * WORDS);
      this.values[slot] = values[old] ?? 0;
    }
    this.name.set(held);
  }
}
