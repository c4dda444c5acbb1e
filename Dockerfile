# deis-backup image: the daemon (default command) and the one-shot CLI commands.
#   docker build -t deis-backup .
#   docker run -v /etc/deis-backup:/etc/deis-backup:ro -v /var/lib/deis/store:/var/lib/deis/store:ro \
#     -p 9480:9480 deis-backup            # daemon: schedule, /healthz, /readyz, /metrics on 9480
#   docker run ... deis-backup --help     # any other command of the CLI

# Stage 1: compile TypeScript, then drop dev dependencies.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: the prepare script (tsc) needs src/, copied below; ssh2's optional native
# crypto addon is skipped too (ssh2 falls back to pure JavaScript; the slim image has no compiler).
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src/ src/
# --omit=optional as well: typescript is an optional peer of valibot, so --omit=dev alone keeps its
# 23 MB, and the other optional packages are ssh2's native addon, which --ignore-scripts never built.
RUN npm run build && npm prune --omit=dev --omit=optional --ignore-scripts --no-audit --no-fund

# Stage 2: runtime. GNU tar, gzip and find are what a volume backup and restore run locally, and
# coreutils `sync -f` flushes a directory target once per run;
# ssh/psql clients help when debugging the database and SSH sources from inside the container.
FROM node:20-bookworm-slim
RUN apt-get update \
  && apt-get install -y --no-install-recommends \
    coreutils tar gzip openssh-client findutils postgresql-client ca-certificates \
  && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json config.example.json ./
ENV NODE_ENV=production DEIS_BACKUP_CONFIG=/etc/deis-backup/config.json
# Two malloc arenas instead of glibc's up to eight per core (one for each thread that allocates at
# once: libuv's pool, V8's helpers), each keeping pages it has freed. The daemon's first backup of
# 2.6 GB into a directory peaked at 127-140 MiB against 134-147 MiB without it, no slower
# (bench/results.md, round 22); into an S3 target the shift was within the runs' spread.
ENV MALLOC_ARENA_MAX=2

# Runs as root on purpose. Backing up /var/lib/deis/store must read every file in it, and restoring
# it must recreate owners (tar --same-owner; the controller's files are 1000:1000, the rest root),
# which only root can do. `USER node` (uid 1000) is possible for an S3-only setup that never
# restores the volume here: buckets and database only, or a read-only volume mount whose files
# node can read.
USER root

EXPOSE 9480
# Node's own fetch, so the image needs no curl. Assumes the default http.port (9480).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9480/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# Heap flags for the daemon (why: src/bin.ts): it loads pino, fastify and prom-client, and with
# V8's defaults it ran a full mark-compact every few MB of bucket data. A larger first old space
# stops that; a 4 MB semi-space keeps the young generation from growing to 16 MB per semi-space.
# The old space's first size also sets how much dead data waits for a collection. Round 10 of
# bench/results.md chose 32 over 40 and 48; round 24 measured 16 against 32, interleaved, peak RSS:
# first backups of 2.6 GB into a directory 122-125 against 130-140 MiB, into S3 136-148 against
# 150-159, and restores of 50,000 small objects 117-118 against 127-144, for about 1 s more CPU.
ENTRYPOINT ["node", "--initial-old-space-size=16", "--max-semi-space-size=4", "/app/dist/bin.js"]
CMD ["daemon"]
