// The index entries a restore plans with, kept as JSON text in one growing buffer instead of one
// object per entry. At 50,000 objects the objects took about 30 MB of V8's heap, and V8 lets a heap
// with that much live data grow to three times it before collecting: the restore peaked at 227 MiB.
// As text they are about 12 MB outside the heap, and an entry is parsed again when its turn comes.
import type { IndexEntry } from '../repository/manifest.js';

const FIRST_BYTES = 64 * 1024;
const FIRST_COUNT = 1024;

/** An append-only list of index entries, read back by position. */
export class EntryList {
  private text = Buffer.allocUnsafe(FIRST_BYTES);
  private used = 0;
  /** ends[i] is where entry i's text ends; it starts where entry i - 1's ends. */
  private ends = new Float64Array(FIRST_COUNT);
  private count = 0;

  get length(): number {
    return this.count;
  }

  push(entry: IndexEntry): void {
    const json = JSON.stringify(entry);
    const needed = this.used + Buffer.byteLength(json);
    if (needed > this.text.length) {
      const grown = Buffer.allocUnsafe(Math.max(needed, this.text.length * 2));
      this.text.copy(grown, 0, 0, this.used);
      this.text = grown;
    }
    this.used += this.text.write(json, this.used);
    if (this.count === this.ends.length) {
      const grown = new Float64Array(this.ends.length * 2);
      grown.set(this.ends);
      this.ends = grown;
    }
    this.ends[this.count++] = this.used;
  }

  /** Entry `index` (0 ≤ index < length), parsed anew on each call. */
  at(index: number): IndexEntry {
    if (index < 0 || index >= this.count) throw new RangeError(`no entry ${index} of ${this.count}`);
    const start = index === 0 ? 0 : (this.ends[index - 1] ?? 0);
    return JSON.parse(this.text.toString('utf8', start, this.ends[index])) as IndexEntry;
  }

  *[Symbol.iterator](): IterableIterator<IndexEntry> {
    for (let i = 0; i < this.count; i++) yield this.at(i);
  }
}
