// Human-readable summaries for the CLI: sizes, run results and restore point tables.
import type { BackupResult } from './backup.js';
import type { Manifest, SourceRecord } from './repository/manifest.js';
import type { RestoreReport } from './restore.js';
import type { StepCounts } from './restore/report.js';
import type { RetentionOutcome } from './jobs.js';
import type { ForgetReport } from './repository/forget.js';
import { pruneFailure, type PruneReport } from './repository/prune.js';
import type { VerifyReport } from './repository/verify.js';
import type { DrillReport } from './drill.js';
import { compareText } from './compare.js';

/** 1536 → "1.5 KiB". */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit] ?? 'B'}`;
}

/** One line per source, then its warnings and errors indented. */
export function formatSources(sources: readonly SourceRecord[]): string[] {
  const width = Math.max(8, ...sources.map((s) => s.id.length));
  const lines: string[] = [];
  for (const s of sources) {
    const c = s.counts;
    const parts = [
      `${c.objects} ${s.kind === 'bucket' ? 'objects' : s.kind === 'volume' ? 'entries' : 'dump'}`,
    ];
    if (s.kind === 'bucket') parts.push(`${c.unchanged} unchanged`, `${c.vanished} vanished`);
    // Quoted: a pattern may hold spaces and commas.
    if (Array.isArray(s.excluded) && s.excluded.length > 0)
      parts.push(`excluding ${s.excluded.map((p) => JSON.stringify(p)).join(' ')}`);
    if ((c.resumed ?? 0) > 0) parts.push(`${c.resumed ?? 0} reused from an interrupted run`);
    if (c.failed > 0) parts.push(`${c.failed} failed`);
    parts.push(`${formatBytes(c.bytesRead)} read`, `${formatBytes(c.bytesStored)} stored`);
    if (c.warnings > 0) parts.push(`${c.warnings} warning(s)`);
    lines.push(
      `${s.id.padEnd(width)}  ${s.status.padEnd(7)}  ${s.status === 'failed' ? '' : parts.join(', ')}`.trimEnd(),
    );
    for (const w of s.warnings) lines.push(`  warning: ${w}`);
    for (const e of s.errors) lines.push(`  error: ${e}`);
  }
  return lines;
}

/** The closing line of a backup run. */
export function formatOutcome(result: BackupResult, targetName: string): string {
  switch (result.status) {
    case 'success':
    case 'partial':
      return `restore point ${result.id ?? ''} committed to ${targetName} (${result.status})`;
    case 'failed':
      return 'backup failed: no restore point written';
    case 'aborted':
      return 'backup aborted: no restore point written';
  }
}

/** Table of restore points, oldest first. */
export function formatSnapshots(manifests: readonly Manifest[]): string[] {
  if (manifests.length === 0) return ['no restore points'];
  const sourcesOf = (m: Manifest): string => m.sources.map((s) => s.id).join(',');
  // As wide as the longest list (bucket ids make it long), so STORED stays one column.
  const width = Math.max('SOURCES'.length, ...manifests.map((m) => sourcesOf(m).length));
  const lines = [
    `${'ID'.padEnd(22)}  ${'FINISHED'.padEnd(20)}  ${'STATUS'.padEnd(7)}  ${'SOURCES'.padEnd(width)}  STORED`,
  ];
  for (const m of manifests) {
    const stored = m.sources.reduce((sum, s) => sum + s.counts.bytesStored, 0);
    lines.push(
      `${m.id.padEnd(22)}  ${m.finishedAt.replace(/\.\d{3}Z$/, 'Z').padEnd(20)}  ${m.status.padEnd(7)}  ${sourcesOf(m).padEnd(width)}  ${formatBytes(stored)}`,
    );
  }
  return lines;
}

function countsText(c: StepCounts): string {
  const parts = [
    `${c.objects} ${c.objects === 1 ? 'item' : 'items'}`,
    formatBytes(c.bytes),
    `${c.create} to create`,
    `${c.skip} identical`,
  ];
  if (c.overwrite > 0) parts.push(`${c.overwrite} to overwrite`);
  if (c.conflict > 0) parts.push(`${c.conflict} differing (kept)`);
  if (c.failed > 0) parts.push(`${c.failed} failed`);
  parts.push(`${formatBytes(c.transferBytes)} to send`);
  return parts.join(', ');
}

/** The plan (dry run) or result of a restore, a few lines per step, then hazards and next steps. */
export function formatRestore(report: RestoreReport): string[] {
  const lines = [
    `${report.dryRun ? 'plan for' : 'restore of'} ${report.snapshot}${report.dryRun ? ' (dry run: nothing written)' : `: ${report.status}`}`,
  ];
  for (const step of report.steps) {
    lines.push(`${step.step}: ${step.status}  ${step.detail}`);
    if (step.buckets) {
      for (const b of step.buckets) {
        const name = b.source === b.destination ? b.source : `${b.source} -> ${b.destination}`;
        const reorder =
          b.counts.reorder > 0 ? `, ${b.counts.reorder} sentinel(s) re-sent to keep WAL-E's order` : '';
        const aborted = b.abortedUploads
          ? `, ${b.abortedUploads} unfinished upload(s) an earlier restore left aborted`
          : '';
        lines.push(
          `  ${name}${b.createBucket ? ' (new bucket)' : ''}: ${countsText(b.counts)}${reorder}${aborted}`,
        );
      }
    } else {
      lines.push(`  ${countsText(step.counts)}`);
    }
    for (const e of step.errors) lines.push(`  error: ${e}`);
  }
  for (const h of report.hazards) lines.push(`hazard: ${h}`);
  for (const n of report.next) lines.push(`next: ${n}`);
  return lines;
}

/** What `snapshots --json` and GET /snapshots show of a restore point. */
export function snapshotSummary(m: Manifest) {
  return {
    id: m.id,
    startedAt: m.startedAt,
    finishedAt: m.finishedAt,
    status: m.status,
    bytesStored: m.sources.reduce((sum, s) => sum + s.counts.bytesStored, 0),
    sources: m.sources.map((s) => ({ id: s.id, status: s.status, counts: s.counts })),
  };
}

/**
 * The forget decision: every restore point kept or dropped, with its reasons, and what it holds
 * when restore points hold different sources (the policy applies to each such scope on its own).
 */
export function formatForget(report: ForgetReport): string[] {
  const lines = [`policy: ${report.policy}`];
  const scoped = new Set([...report.keep, ...report.drop].map((e) => e.scope)).size > 1;
  const line = (verb: string, e: ForgetReport['keep'][number]): string =>
    `${verb} ${e.id}  ${e.startedAt.replace(/\.\d+Z$/, 'Z')}  ${e.status.padEnd(7)}  ${e.reasons.join(', ')}` +
    (scoped ? `  [${e.scope}]` : '');
  const rows = [
    ...report.keep.map((e) => ({ e, verb: 'keep' })),
    ...report.drop.map((e) => ({ e, verb: report.dryRun ? 'would drop' : 'drop' })),
  ].sort((a, b) => compareText(a.e.startedAt, b.e.startedAt) || compareText(a.e.id, b.e.id));
  for (const { e, verb } of rows) lines.push(line(verb.padEnd(10), e));
  lines.push(
    `${report.keep.length} kept, ${report.drop.length} ${report.dryRun ? 'to drop (dry run)' : 'dropped'}`,
  );
  return lines;
}

/** What prune removed or would remove. */
export function formatPrune(report: PruneReport): string {
  const verb = report.dryRun ? 'would remove' : 'removed';
  const interrupted =
    report.interrupted.length > 0 ? ` (incl. ${report.interrupted.length} interrupted run(s))` : '';
  if (report.scope === 'forgotten') {
    return `prune: removed ${report.removedBlobs} blob(s) only the forgotten restore point(s) held, ${formatBytes(report.freedBytes)}`;
  }
  // Sizes of unfinished uploads are not known (a ListParts each), so they are only counted.
  const recent =
    (report.recentUploads ?? 0) > 0
      ? `, left ${report.recentUploads ?? 0} begun since the lock was taken`
      : '';
  const uploads =
    report.abortedUploads === undefined
      ? ''
      : `; ${report.dryRun ? 'would abort' : 'aborted'} ${report.abortedUploads} unfinished upload(s)${recent}`;
  return `prune: ${verb} ${report.removedBlobs} blob(s) and ${report.removedKeys} other key(s)${interrupted}, ${formatBytes(report.freedBytes)}; ${report.referencedBlobs ?? 0} blob(s) of ${report.snapshots} restore point(s) kept, ${formatBytes(report.keptBytes ?? 0)}${uploads}`;
}

/**
 * Retention after a backup: what forget dropped and what prune removed, a line each. A prune that
 * failed part way (see pruneFailure) keeps both, then the failure; any other failure is one line.
 */
export function formatRetention(outcome: RetentionOutcome): string[] {
  const failed = `retention failed (the restore point stands): ${outcome.error ?? ''}`;
  const pruneFailed = outcome.prune !== undefined && pruneFailure(outcome.prune) !== undefined;
  if (outcome.error !== undefined && !pruneFailed) return [failed];
  const lines: string[] = [];
  if (outcome.forget && outcome.forget.drop.length > 0) {
    const dropped = outcome.forget.drop.map((e) => e.id);
    lines.push(
      `retention (${outcome.forget.policy}): ${outcome.forget.keep.length} kept${dropped.length > 0 ? `, dropped ${dropped.join(', ')}` : ''}`,
    );
  }
  if (outcome.prune) lines.push(formatPrune(outcome.prune));
  if (outcome.error !== undefined) lines.push(failed);
  return lines;
}

/** One line per restore point verified, then its findings. */
export function formatVerify(report: VerifyReport): string[] {
  const lines: string[] = [];
  for (const bad of report.unreadable) lines.push(`${bad.id}  damaged  ${bad.error}`);
  for (const s of report.snapshots) {
    const walE = s.walE
      ? `; WAL-E in ${s.walE.bucket}: ${s.walE.baseBackups} base backup(s), ${s.walE.segments} WAL segment(s)`
      : '';
    const read = s.checkedBytes > 0 ? `, ${formatBytes(s.checkedBytes)} re-hashed` : '';
    lines.push(`${s.id}  ${s.status.padEnd(7)}  ${s.checkedObjects} object(s) checked${read}${walE}`);
    for (const e of s.errors) lines.push(`  error: ${e}`);
    for (const w of s.warnings) lines.push(`  warning: ${w}`);
  }
  lines.push(
    report.status === 'ok'
      ? `verify: ${report.snapshots.length} restore point(s) ok`
      : 'verify: damage found; see the errors above',
  );
  return lines;
}

/** One line on a drill's outcome, for logs, webhooks and the recorded status. */
export function drillSummary(report: DrillReport): string {
  return `${report.snapshot}: ${report.checks.map((c) => `${c.step} ${c.status}`).join(', ')}${
    report.cleanup.length > 0 ? `, ${report.cleanup.length} cleanup problem(s)` : ''
  }`;
}

/** The drill's checks and cleanup. */
export function formatDrill(report: DrillReport): string[] {
  const lines = [`drill of ${report.snapshot}: ${report.status}`];
  for (const c of report.checks) {
    lines.push(`  ${c.step.padEnd(8)}  ${c.status.padEnd(7)}  ${c.detail}`);
    for (const e of c.errors) lines.push(`    error: ${e}`);
  }
  for (const c of report.cleanup) lines.push(`  cleanup: ${c}`);
  return lines;
}
