// What a source is: one part of the Deis platform state that a run captures into a restore point.
import type { Logger } from '../log.js';
import type { Manifest, SourceCounts, SourceRecord } from '../repository/manifest.js';
import type { Repository, SnapshotWriter } from '../repository/repository.js';

/** What a source needs during one run. */
export interface SourceRunContext {
  writer: SnapshotWriter;
  repository: Repository;
  /** The newest committed restore point, for incremental work; undefined on the first run. */
  previous: Manifest | undefined;
  /** An earlier run was interrupted: bodies it stored may be reused instead of read again. */
  resume: boolean;
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

/** Cap on messages kept per source; the counts hold the totals. */
export const MAX_MESSAGES = 20;

/** Warnings and errors of one source: the first MAX_MESSAGES of each kept, all of them counted. */
export class Findings {
  readonly warnings: string[] = [];
  readonly errors: string[] = [];
  private readonly counts: SourceCounts;

  constructor(counts: SourceCounts) {
    this.counts = counts;
  }

  /** Degraded but complete (a file that grew while read). */
  warn(message: string): void {
    this.counts.warnings++;
    if (this.warnings.length < MAX_MESSAGES) this.warnings.push(message);
  }

  /** One object or entry not captured: the source becomes partial. */
  fail(message: string): void {
    this.counts.failed++;
    if (this.errors.length < MAX_MESSAGES) this.errors.push(message);
  }
}

/** The line of a command's stderr that says what went wrong: the first naming an error, else the last. */
export function errorLine(stderr: string): string {
  const lines = stderr
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
  return (
    lines.find((l) => /\b(error|fatal|denied|cannot|not found)\b/i.test(l)) ?? lines.at(-1) ?? 'no message'
  );
}
