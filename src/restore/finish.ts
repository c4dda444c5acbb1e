// The last step of a Deis restore: before Deis 1.11 the controller did not republish keys, apps and
// domains to etcd by itself, so the docs' re-save snippet runs in deis-controller; then the apps
// must be scaled down and up again, because a fresh cluster runs none of the containers the
// database lists.

/** `v1.10.1` or `1.10.1` → [1, 10, 1]; undefined when it is not a version. */
export function parseVersion(value: string): number[] | undefined {
  const match = /^v?(\d+)\.(\d+)(?:\.(\d+))?/.exec(value.trim());
  if (!match) return undefined;
  return [Number(match[1]), Number(match[2]), Number(match[3] ?? 0)];
}

/** True when the controller of this Deis version needs the re-save snippet (before 1.11). */
export function needsRepublish(version: readonly number[]): boolean {
  const [major = 0, minor = 0] = version;
  return major < 1 || (major === 1 && minor < 11);
}

/** The Django shell input that re-saves what the controller publishes to etcd, per Deis version. */
export function republishSnippet(version: readonly number[]): string {
  const minor = version[0] === 1 ? (version[1] ?? 0) : 0;
  const lines = [
    'from api.models import *',
    '[k.save() for k in Key.objects.all()]',
    '[a.save() for a in App.objects.all()]',
    '[d.save() for d in Domain.objects.all()]',
  ];
  if (minor >= 7) lines.push('[c.save() for c in Certificate.objects.all()]');
  if (minor >= 9) lines.push('[c.save() for c in Config.objects.all()]');
  return `${lines.join('\n')}\n`;
}

/** The app a registry repository key belongs to (registry/repositories/library/<app>/...), if any. */
export function appOf(key: string): string | undefined {
  return /^registry\/repositories\/library\/([^/]+)\//.exec(key)?.[1];
}

/** App names known from the registry's repositories, sorted. */
export function appNames(keys: Iterable<string>): string[] {
  const names = new Set<string>();
  for (const key of keys) {
    const app = appOf(key);
    if (app !== undefined) names.add(app);
  }
  return [...names].sort();
}

/** The manual step after a restore, with the app names when known. */
export function scaleAdvice(apps: readonly string[]): string {
  const which = apps.length > 0 ? ` for each app (${apps.join(', ')})` : ' for each app';
  return `after deisctl start platform: run deis scale <type>=0 -a <app> and then deis scale <type>=<count> -a <app>${which}, so the fresh cluster starts the containers the database lists`;
}
