// Blob keys mapped to numbers in flat typed arrays, for the checks that hold one value per stored
// blob (the restore's preflight, verify). A blob's name is already a sha256, so its first 128 bits
// are the slot's key and its first 32 the hash: about 50 bytes per blob at most, where a Map of the
// key strings took about 130 on V8's heap, and V8 lets a heap grow to a few times its live data.
import type { Target } from '../targets/target.js';
import { BLOBS } from './layout.js';

/** Words of a blob name kept per slot (4 × 32 bits). */
const WORDS = 4;
const FIRST_SLOTS = 1024;
/** Where the hex name starts in `blobs/xx/<64 hex>`. */
const NAME_AT = BLOBS.length + 3;
const KEY_LENGTH = NAME_AT + 64;

/** True for a key shaped as blobKey makes it: `blobs/`, the name's first two hex digits, `/`, the name. */
export function isBlobKey(key: string): boolean {
  return (
    key.length === KEY_LENGTH &&
    key.startsWith(BLOBS) &&
    key[BLOBS.length + 2] === '/' &&
    key.startsWith(key.slice(NAME_AT, NAME_AT + 2), BLOBS.length) &&
    /^[0-9a-f]{64}$/.test(key.slice(NAME_AT))
  );
}

/** An open-addressing hash table from blob keys to numbers. Keys that are not blob keys are never held. */
export class BlobMap {
  private names = new Uint32Array(FIRST_SLOTS * WORDS);
  private values = new Float64Array(FIRST_SLOTS);
  private taken = new Uint8Array(FIRST_SLOTS);
  private count = 0;
  /** The name being looked up, decoded once per call. */
  private readonly name = new Uint32Array(WORDS);

  /** Every blob the target holds, with its size. */
  static async sizesIn(target: Target, opts: { signal: AbortSignal }): Promise<BlobMap> {
    const sizes = new BlobMap();
    for await (const info of target.list(BLOBS, opts)) sizes.set(info.key, info.size);
    return sizes;
  }

  get size(): number {
    return this.count;
  }

  /** Sets key's value; false (nothing stored) when key is not a blob key. */
  set(key: string, value: number): boolean {
    if (!this.decode(key)) return false;
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

  /** Key's value, or undefined when it was never set (or is not a blob key). */
  get(key: string): number | undefined {
    if (!this.decode(key)) return undefined;
    const slot = this.find();
    return this.taken[slot] === 1 ? this.values[slot] : undefined;
  }

  /** Decodes key's first 128 bits of name into this.name; false for a key that is not a blob key. */
  private decode(key: string): boolean {
    if (!isBlobKey(key)) return false;
    for (let word = 0; word < WORDS; word++) {
      const at = NAME_AT + 8 * word;
      this.name[word] = Number.parseInt(key.slice(at, at + 8), 16);
    }
    return true;
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
