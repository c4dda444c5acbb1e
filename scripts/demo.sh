#!/usr/bin/env bash
# The main job on this machine (`npm run demo`): starts the real test stack, fills it with sample
# Deis data, and takes two restore points into a local directory, the second one incremental.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/stack/install.sh >&2
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund >&2
fi
npm run --silent build
bash scripts/stack/start.sh >/dev/null

demo=${DEIS_BACKUP_DEMO_DIR:-/tmp/deis-backup-demo}
config=$(npx tsx scripts/demo-seed.ts "$demo")
echo
echo "== config: $config (gateway, buckets and database host come from etcd)"
echo "== deis-backup backup"
node dist/bin.js backup --config "$config"
echo
echo "== deis-backup backup (again: unchanged objects are not read)"
node dist/bin.js backup --config "$config"
echo
echo "== deis-backup snapshots"
node dist/bin.js snapshots --config "$config"
echo
echo "== deis-backup verify latest --read-data (every stored byte hashed again; WAL-E continuity)"
node dist/bin.js verify latest --read-data --config "$config"
echo
echo "== deis-backup forget --dry-run (what the retention policy would keep and drop)"
node dist/bin.js forget --dry-run --config "$config"
echo
echo "restore points are in $demo/backups; the stack keeps running (stop it with npm run stack:stop)"
