// The last step of a Deis restore: before Deis 1.11 the controller did not republish keys, apps,
// domains, certificates and configs to etcd by itself, so a snippet runs in deis-controller's Django
// shell; then the apps must be scaled down and up again, because a fresh cluster runs none of the
// containers the database lists.

/** `v1.10.1` or `1.10.1` → [1, 10, 1]; undefined when it is not a version. */
export function parseVersion(value: string): number[] | undefined {
  const match = /^v?(\d+)\.(\d+)(?:\.(\d+))?/.exec(value.trim());
  if (!match) return undefined;
  return [Number(match[1]), Number(match[2]), Number(match[3] ?? 0)];
}

/** True when the controller of this Deis version needs the republish snippet (before 1.11). */
export function needsRepublish(version: readonly number[]): boolean {
  const [major = 0, minor = 0] = version;
  return major < 1 || (major === 1 && minor < 11);
}

/** The minor version of a 1.x release; 0 for anything before 1.0. */
function minorOf(version: readonly number[]): number {
  return version[0] === 1 ? (version[1] ?? 0) : 0;
}

/** What the snippet publishes for this Deis version, for the report: "keys, apps, domains and …". */
export function republishedState(version: readonly number[]): string {
  const minor = minorOf(version);
  const parts = ['keys', 'apps', 'domains'];
  if (minor >= 5) parts.push('certificates');
  if (minor >= 9) parts.push("each app's latest config");
  return `${parts.slice(0, -1).join(', ')} and ${parts.at(-1) ?? ''}`;
}

/** The message of the snippet's first line when api.models found no etcd (no receivers connected). */
const NO_ETCD =
  'deis-controller cannot reach etcd: api.models._etcd_client is None; check the ETCD host:port in restore.controllerCommand';

/**
 * The Django shell input that publishes the controller's database state to etcd, per Deis version.
 *
 * Deis 1.0–1.10 connect their etcd writers to post_save, and most of them act only when
 * `created` is true (App always; Domain and Certificate from 1.5; Config from 1.9, whose writer
 * even deletes /deis/config/<app> first), so the docs' `[x.save() for x in …]` published little
 * more than the keys (deis/deis#4398). The snippet therefore calls those writers of `api.models`
 * directly with `created=True` and changes no row: no save, no `updated` timestamp, and none of the
 * log receivers on the same signal (a Domain's writes "domain … added" to the app's log). Names and
 * guards as in deis/deis v1.0–v1.10: `_etcd_publish_key`, `_etcd_create_app`,
 * `_etcd_publish_domains`, `_etcd_publish_cert` (Certificate, from 1.5), `_etcd_publish_config`
 * (from 1.9); a writer missing under that name raises, which the caller reports.
 *
 * Only the latest Config of each app is published (as v1.13.3's `load_db_state_to_etcd` does):
 * each write replaces /deis/config/<app>, so publishing every release's config would leave the
 * oldest one. `_etcd_create_app` before 1.11 raises KeyError when /deis/services/<app> exists
 * already (python-etcd 0.3 maps etcd's "Not a file" to KeyError), as on a second run or once the
 * app's containers were published, so apps whose directory is there are skipped (`key in client`
 * is python-etcd's existence test). One statement a line and no blocks: the plain Django shell reads
 * its input like an interactive console, and the printed form joins the lines with "; ".
 */
export function republishSnippet(version: readonly number[]): string {
  const minor = minorOf(version);
  const models = ['Key', 'App', 'Domain'];
  if (minor >= 5) models.push('Certificate');
  if (minor >= 9) models.push('Config');
  const lines = [
    'import sys',
    'import api.models as deis',
    `from api.models import ${models.join(', ')}`,
    `deis._etcd_client or sys.exit(${JSON.stringify(NO_ETCD)})`,
    '[deis._etcd_publish_key(sender=Key, instance=k, created=True) for k in Key.objects.all()]',
    "[deis._etcd_create_app(sender=App, instance=a, created=True) for a in App.objects.all() if '/deis/services/{}'.format(a) not in deis._etcd_client]",
    '[deis._etcd_publish_domains(sender=Domain, instance=d, created=True) for d in Domain.objects.all()]',
  ];
  if (minor >= 5)
    lines.push(
      '[deis._etcd_publish_cert(sender=Certificate, instance=c, created=True) for c in Certificate.objects.all()]',
    );
  if (minor >= 9)
    lines.push(
      '[deis._etcd_publish_config(sender=Config, instance=a.config_set.latest(), created=True) for a in App.objects.all() if a.config_set.exists()]',
    );
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

const TRACEBACK = 'Traceback (most recent call last):';

/**
 * What the republish snippet raised, from the Django shell's stderr (it exits 0 after a statement
 * raised: each Traceback is the only sign), or undefined when nothing did. Each statement runs on
 * after one that raised, so a first failure is often followed by NameErrors it caused: the first
 * exception is named, with the count when there were more.
 */
export function snippetRaised(stderr: string): string | undefined {
  const raised = stderr
    .split(TRACEBACK)
    .slice(1)
    .map(
      (after) =>
        after
          .split('\n')
          .find((line) => /^\S/.test(line))
          ?.trim() ?? 'an exception',
    );
  const [first] = raised;
  if (first === undefined) return undefined;
  return raised.length === 1
    ? `the snippet raised ${first}`
    : `the snippet raised ${raised.length} times, first ${first}`;
}
