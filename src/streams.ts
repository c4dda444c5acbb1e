// Stream plumbing shared by sources and restore: chains whose errors reach the reader.
import type { Duplex, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

/**
 * Pipes source through transforms and returns the last one for reading. Unlike `.pipe()`, an error
 * anywhere destroys the whole chain, so the reader sees it instead of waiting for an end.
 */
export function chain(source: Readable, ...transforms: [Duplex, ...Duplex[]]): Readable {
  const last = transforms[transforms.length - 1] as Duplex;
  pipeline(source, ...transforms).catch((err: unknown) => {
    last.destroy(err as Error);
  });
  return last;
}
