#!/usr/bin/env bash
# The test command (`npm test`), the same on a fresh Debian 12 machine, a developer's and CI:
# installs what is missing, starts the real servers, runs lint, types, format, unit and
# integration tests, and stops the servers it started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/stack/install.sh >&2
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund
fi
npm run --silent build

stack_dir=${DEIS_BACKUP_STACK_DIR:-/tmp/deis-backup-stack}
if [[ ! -f $stack_dir/stack.json ]]; then
  trap 'bash scripts/stack/stop.sh >&2' EXIT
fi
bash scripts/stack/start.sh >/dev/null
# The stack is up: from here on a test that cannot find its server fails instead of skipping.
export DEIS_BACKUP_STACK_REQUIRED=1

npm run --silent lint
npm run --silent typecheck
npm run --silent format:check
npx vitest run
