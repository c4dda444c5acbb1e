// The entries of a .tar.gz stream, one at a time: each a readable body with its header. tar-stream is
// imported here, so a module that needs it only for some runs can import this one lazily.
import type { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { extract, type Header } from 'tar-stream';
import { chain } from './streams.js';

/** One entry: its body (resume() it to skip it), with its header. */
export type TarEntry = Readable & { header: Header };

/**
 * Gunzips and parses `archive`; each entry must be read or resumed before the next comes. A damaged
 * gzip or tar stream, or a failing source, rejects the iteration.
 */
export function tarGzEntries(archive: Readable): AsyncIterable<TarEntry> {
  // tar-stream's streamx Extract is no node:stream Duplex to the compiler, though pipeline takes it.
  return chain(archive, createGunzip(), extract() as never);
}
