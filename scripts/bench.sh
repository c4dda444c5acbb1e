#!/usr/bin/env bash
# npm run bench: deis-backup against rclone, s3cmd, GNU tar and pg_dumpall | gzip on the real test
# stack. BENCH_SCALE=small (default, about 17 minutes with the 1 GiB and 50,000-object buckets) or full.
# BENCH_ONLY=extras runs only those two buckets and prints their table; BENCH_ONLY=tuning only the
# first backup of the buckets at each concurrency and S3 part size. Otherwise writes bench/results.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

missing=()
command -v rclone >/dev/null || missing+=(rclone)
[[ -x /usr/bin/time ]] || missing+=(time)
if ((${#missing[@]} > 0)); then
  apt-get update >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
fi
bash scripts/stack/install.sh >&2
if [[ ! -d node_modules ]]; then
  npm ci --no-audit --no-fund >&2
fi
npm run --silent build
bash scripts/stack/start.sh >/dev/null
npx tsx scripts/bench/driver.ts
# The table is written unpadded; let prettier align it so the repo's format check passes.
npx prettier --write --log-level warn bench/results.md
