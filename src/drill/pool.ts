// A problem list for the restore drill: it keeps the first lines and counts the rest, so a bad
// bucket cannot flood a report.

/** Problems of one check: the first `max` lines kept, the rest counted. */
export class ProblemList {
  private readonly kept: string[] = [];
  private dropped = 0;
  private readonly max: number;

  constructor(max = 50) {
    this.max = max;
  }

  /** Adds one line; it names the thing (bucket/key or path) and says what differs. */
  add(line: string): void {
    if (this.kept.length < this.max) this.kept.push(line);
    else this.dropped++;
  }

  /** Number of problems added, kept or not. */
  get count(): number {
    return this.kept.length + this.dropped;
  }

  /** The kept lines, plus one line counting the dropped ones. */
  lines(): string[] {
    return this.dropped > 0 ? [...this.kept, `… and ${this.dropped} more`] : [...this.kept];
  }
}
