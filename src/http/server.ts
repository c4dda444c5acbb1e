// The daemon's HTTP API (fastify). buildServer never listens: the daemon does, and tests inject.
// Mutating routes need `Authorization: Bearer <token>`; without a configured token they are off.
import { createHash, timingSafeEqual } from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import * as v from 'valibot';
import { BUCKET_NAME } from '../config-schema.js';
import { isSnapshotId } from '../repository/layout.js';
import { withDeadline } from '../deadline.js';
import { BackupError } from '../errors.js';
import { snapshotSummary } from '../format.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { Operations, OperationView } from '../operations.js';
import type { Manifest } from '../repository/manifest.js';
import type { RestoreRequest } from '../restore.js';
import type { Secret } from '../secret.js';
import { type Problem, strictObject, validate } from '../validation.js';
import { RESTORE_STEPS, SOURCE_KINDS, type SourceKind } from '../wiring.js';
import { parseJsonBody, RequestError, RouteTable } from './requests.js';

/** What /readyz answers. */
export interface Readiness {
  ready: boolean;
  reason?: string;
  targetUp: boolean;
  lastSuccess: string | null;
  maxAgeSeconds: number;
  sources: Record<string, { lastSuccess: string | null }>;
}

/** What the routes need from the daemon. */
export interface ServerDeps {
  operations: Operations;
  metrics: Metrics;
  token: Secret | undefined;
  log: Logger;
  /** The target as messages name it ("s3://bucket/prefix"). */
  targetName: string;
  snapshots(signal: AbortSignal): Promise<Manifest[]>;
  readiness(signal: AbortSignal): Promise<Readiness>;
  startBackup(
    trigger: string,
    only: readonly SourceKind[] | undefined,
  ): { started: OperationView } | { busy: OperationView };
  startRestore(
    trigger: string,
    request: RestoreRequest,
  ): { started: OperationView } | { busy: OperationView };
  startVerify(trigger: string): { started: OperationView } | { busy: OperationView };
  startDrill(trigger: string): { started: OperationView } | { busy: OperationView };
}

const sources = v.optional(v.pipe(v.array(v.picklist(SOURCE_KINDS)), v.minLength(1)));
const steps = v.optional(v.pipe(v.array(v.picklist(RESTORE_STEPS)), v.minLength(1)));

const emptyBody = strictObject({});

/** How long GET /snapshots waits for the target's listing. */
const SNAPSHOTS_LIMIT_MS = 30_000;

const backupBody = strictObject({ only: sources });

const restoreBody = strictObject({
  snapshot: v.pipe(
    v.string(),
    v.check(
      (value) => value === 'latest' || isSnapshotId(value),
      'must be "latest" or a restore point id such as 20261206T030000Z-1a2b (GET /snapshots lists them)',
    ),
  ),
  only: steps,
  buckets: v.optional(
    v.pipe(
      v.unknown(),
      v.check(
        (value) => typeof value === 'object' && value !== null && !Array.isArray(value),
        'must be an object from source to destination bucket, such as {"registry": "registry-new"}',
      ),
      v.record(
        v.pipe(v.string(), v.regex(BUCKET_NAME, 'is not a bucket name')),
        v.pipe(v.string(), v.regex(BUCKET_NAME, 'is not a bucket name')),
      ),
    ),
  ),
  volumeTo: v.optional(v.pipe(v.string(), v.startsWith('/', 'must be an absolute path'))),
  dryRun: v.optional(v.boolean()),
  overwrite: v.optional(v.boolean()),
  yes: v.optional(v.boolean()),
});

/** Builds the API on a new fastify instance. */
export function buildServer(deps: ServerDeps): FastifyInstance {
  // Fastify's own request logging stays off: the daemon logs what matters with its own logger.
  const app = Fastify({
    logger: false,
    bodyLimit: 64 * 1024,
    // A client that never finishes its request is cut off, and a stop closes every connection, so
    // neither can hold the daemon past SIGTERM.
    requestTimeout: 30_000,
    forceCloseConnections: true,
    // Errors in the URL itself (bad percent-encoding) answer in the API's own shape.
    frameworkErrors: badUrl,
  });

  // The API speaks JSON only: a text/plain body gets 415 like a form does, not a confusing 400.
  app.removeContentTypeParser(['text/plain', 'application/json']);
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, text, done) => {
    try {
      done(null, parseJsonBody(text as string));
    } catch (err) {
      done(err as RequestError, undefined);
    }
  });
  // fastify ignores Content-Encoding and would parse a gzip body as JSON; the API takes none.
  app.addHook('preParsing', async (request, reply) => {
    const coding = request.headers['content-encoding'];
    if (coding === undefined || coding.toLowerCase() === 'identity') return;
    await reply
      .code(415)
      .header('accept-encoding', 'identity')
      .send({ error: `content-encoding ${coding} is not accepted; send the JSON body uncompressed` });
  });
  // Routes are recorded as they are added, so a known path asked with another method gets 405.
  const routes = new RouteTable();
  app.addHook('onRoute', (route) => {
    for (const method of [route.method].flat()) routes.add(method, route.url);
  });
  app.setErrorHandler((err: { statusCode?: number; message: string; code?: string }, request, reply) => {
    const status = err.statusCode && err.statusCode >= 400 && err.statusCode <= 503 ? err.statusCode : 500;
    if (status === 500) deps.log.error({ err }, 'request failed');
    const message =
      err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE'
        ? `content-type ${request.headers['content-type'] ?? '(none)'} is not accepted; send JSON with Content-Type: application/json`
        : err.code === 'FST_ERR_CTP_BODY_TOO_LARGE'
          ? 'request body is larger than 64 KiB'
          : err.message;
    void reply.code(status).send({ error: status === 500 ? 'internal error' : message });
  });
  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?')[0] ?? '';
    const allowed = routes.allowed(path);
    if (allowed.length === 0) return reply.code(404).send({ error: `no route ${request.method} ${path}` });
    return reply
      .code(405)
      .header('allow', allowed.join(', '))
      .send({ error: `${path} does not take ${request.method}; it takes ${allowed.join(', ')}` });
  });

  // Checked before the body is read (onRequest), so a caller without the token learns nothing else.
  const authorize = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    if (!deps.token) {
      await reply.code(403).send({
        error:
          'this route is disabled: set http.token (or DEIS_BACKUP_HTTP_TOKEN) to enable backups and restores over HTTP',
      });
      return;
    }
    // The scheme is case-insensitive (RFC 9110).
    const given = /^Bearer (.+)$/i.exec(request.headers.authorization ?? '')?.[1];
    if (given === undefined || !sameSecret(given, deps.token.reveal())) {
      // The route without its query string, where a token may have been put.
      const route = request.url.split('?')[0];
      deps.log.warn({ route, method: request.method }, 'request refused: bad or missing token');
      await reply
        .code(401)
        .header('www-authenticate', 'Bearer')
        .send({ error: 'missing or wrong bearer token' });
    }
  };
  const guarded = { onRequest: authorize };
  const parse = <S extends v.GenericSchema>(
    schema: S,
    body: unknown,
    reply: FastifyReply,
  ): v.InferOutput<S> | undefined => {
    // No body means `{}`; a JSON `null` is a body, and not an object.
    const result = validate(schema, body === undefined ? {} : body);
    if (result.ok) return result.value;
    void reply.code(400).send({ error: [...new Set(result.problems.map(describeProblem))].join('; ') });
    return undefined;
  };
  const started = (
    reply: FastifyReply,
    kind: string,
    outcome: { started: OperationView } | { busy: OperationView },
    what = kind,
  ) => {
    if ('busy' in outcome) {
      deps.log.warn({ running: outcome.busy.id }, `${what} refused: another operation is running`);
      return reply.code(409).send({
        error: `a ${outcome.busy.kind} is running (${outcome.busy.id}); try again when it has finished`,
        running: outcome.busy,
      });
    }
    return reply.code(202).header('location', `/${kind}s/${outcome.started.id}`).send(outcome.started);
  };
  const find = (kind: string, id: string, reply: FastifyReply) => {
    const op = deps.operations.get(id);
    if (op?.kind !== kind) return reply.code(404).send({ error: `no ${kind} ${id}` });
    return reply.send(op);
  };

  app.get('/healthz', () => ({ status: 'ok' }));
  app.get('/readyz', async (_request, reply) => {
    const limit = withDeadline(undefined, 10_000);
    try {
      const readiness = await deps.readiness(limit.signal);
      return await reply.code(readiness.ready ? 200 : 503).send(readiness);
    } finally {
      limit.dispose();
    }
  });
  app.get('/metrics', async (_request, reply) => {
    return reply
      .header('content-type', deps.metrics.registry.contentType)
      .send(await deps.metrics.registry.metrics());
  });
  app.get('/snapshots', async (_request, reply) => {
    const limit = withDeadline(undefined, SNAPSHOTS_LIMIT_MS);
    try {
      const manifests = await deps.snapshots(limit.signal);
      return manifests.map(snapshotSummary);
    } catch (err) {
      // An expected failure (the target down or refusing, or slow) says which and what to do: the
      // target's failure, not the daemon's (502, or 504 when it took too long).
      const timedOut = !(err instanceof BackupError) && limit.signal.aborted;
      const message =
        err instanceof BackupError
          ? err.message
          : timedOut
            ? `target ${deps.targetName} did not list its restore points within ${SNAPSHOTS_LIMIT_MS / 1000} s; check target.endpoint and the target's health`
            : undefined;
      if (message === undefined) throw err;
      deps.log.warn({ error: message }, 'listing restore points failed');
      return await reply.code(timedOut ? 504 : 502).send({ error: message });
    } finally {
      limit.dispose();
    }
  });
  app.post('/backups', guarded, (request, reply) => {
    const body = parse(backupBody, request.body, reply);
    if (!body) return reply;
    return started(reply, 'backup', deps.startBackup('http', body.only));
  });
  app.get<{ Params: { id: string } }>('/backups/:id', (request, reply) =>
    find('backup', request.params.id, reply),
  );
  app.post('/restores', guarded, (request, reply) => {
    const body = parse(restoreBody, request.body, reply);
    if (!body) return reply;
    // As the CLI refuses --bucket and --volume-to for a step its --only leaves out.
    const unused = unusedFields(body);
    if (unused) return reply.code(400).send({ error: unused });
    return started(
      reply,
      'restore',
      deps.startRestore('http', {
        snapshot: body.snapshot,
        only: body.only,
        bucketMap: new Map(Object.entries(body.buckets ?? {})),
        volumeTo: body.volumeTo,
        dryRun: body.dryRun ?? false,
        overwrite: body.overwrite ?? false,
        yes: body.yes ?? false,
      }),
    );
  });
  app.get<{ Params: { id: string } }>('/restores/:id', (request, reply) =>
    find('restore', request.params.id, reply),
  );
  for (const kind of ['verify', 'drill'] as const) {
    const path = kind === 'verify' ? '/verifications' : '/drills';
    const start = (trigger: string) =>
      kind === 'verify' ? deps.startVerify(trigger) : deps.startDrill(trigger);
    app.post(path, guarded, (request, reply) => {
      if (!parse(emptyBody, request.body, reply)) return reply;
      return started(reply, path.slice(1, -1), start('http'), kind);
    });
    app.get<{ Params: { id: string } }>(`${path}/:id`, (request, reply) =>
      find(kind, request.params.id, reply),
    );
  }
  app.delete<{ Params: { id: string } }>('/restores/:id', guarded, (request, reply) => {
    const op = deps.operations.get(request.params.id);
    if (op?.kind !== 'restore') return reply.code(404).send({ error: `no restore ${request.params.id}` });
    if (!deps.operations.cancel(op.id))
      return reply.code(409).send({ error: `restore ${op.id} has already ended (${op.status})` });
    return reply.code(202).send({ id: op.id, status: 'cancelling' });
  });
  return app;
}

/** fastify's answer to a URL it cannot route (bad percent-encoding), in the API's shape. */
function badUrl(err: Error, _request: FastifyRequest, reply: FastifyReply): void {
  void reply.code(400).send({ error: `bad URL: ${err.message}` });
}

/** A restore request's `buckets` or `volumeTo` for a step its `only` leaves out, or undefined. */
function unusedFields(body: {
  only?: readonly string[] | undefined;
  buckets?: object | undefined;
  volumeTo?: string | undefined;
}): string | undefined {
  if (body.only === undefined) return undefined;
  if (body.buckets !== undefined && !body.only.includes('buckets'))
    return 'body.buckets: the restore has no buckets step; add "buckets" to only, or leave buckets out';
  if (body.volumeTo !== undefined && !body.only.includes('volume'))
    return 'body.volumeTo: the restore has no volume step; add "volume" to only, or leave volumeTo out';
  return undefined;
}

/** Compares two secrets in constant time, whatever their lengths. */
function sameSecret(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

/** One line per problem in a request body, its path under "body". */
function describeProblem(problem: Problem): string {
  const field = ['body', ...(problem.path === '' ? [] : [problem.path])].join('.');
  switch (problem.kind) {
    case 'unknown':
      return `${field}: unknown key(s) ${problem.keys.map((k) => `"${k}"`).join(', ')}`;
    case 'missing':
      return `${field}: is required`;
    case 'invalid':
      return `${field}: ${problem.message}`;
  }
}
