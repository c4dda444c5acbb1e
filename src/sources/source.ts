// What a source is: one part of the Deis platform state that a run captures into a restore point.
import type { Logger } from '../log.js';
import type { Manifest, SourceRecord } from '../repository/manifest.js';
import type { Repository, SnapshotWriter } from '../repository/repository.js';

/** What a source needs during one run. */
export interface SourceRunContext {
  writer: SnapshotWriter;
  repository: Repository;
  /** The newest committed restore point, for incremental work; undefined on the first run. */
  previous: Manifest | undefined;
  signal: AbortSignal;
  log: Logger;
}

/** A part of the platform state. */
export interface Source {
  /** "bucket:<name>", "volume" or "database"; used in the manifest, logs and messages. */
  readonly id: string;
  readonly kind: SourceRecord['kind'];
  /**
   * Captures the source into ctx.writer and returns its record with status success or partial.
   * Throws (BackupError) when nothing usable was captured: the source failed.
   */
  backup(ctx: SourceRunContext): Promise<SourceRecord>;
}

/** Cap on error messages kept per source; the counts hold the totals. */
export const MAX_MESSAGES = 20;

/** Appends a message unless the cap is reached. */
export function note(list: string[], message: string): void {
  if (list.length < MAX_MESSAGES) list.push(message);
}

/** The line of a command's stderr that says what went wrong: the first naming an error, else the last. */
export function errorLine(stderr: string): string {
  const lines = stderr.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  return lines.find((l) => /\b(error|fatal|denied|cannot|not found)\b/i.test(l)) ?? lines.at(-1) ?? 'no message';
}
