#!/usr/bin/env bash
# Packaging check (issue 12, class 14): build, `npm pack`, install the tarball in an empty temp
# project (offline from the npm cache, or --prefer-offline when TESSERA_PACK_ONLINE=1) and run the
# INSTALLED CLI: `tessera info`, `tessera verify` on the golden vectors and `tessera bench dense
# --T 64` (no TensorFlow.js baseline and no plots: those optional packages are devDependencies).
# Usage: bash scripts/pack-check.sh [golden-dir]   (default ../shared/golden)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
golden=$(cd "${1:-../shared/golden}" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tessera-pack.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

npm run --silent build
tarball=$(npm pack --silent --pack-destination "$tmp" | tail -1)
echo "pack-check: packed $tarball"
# the package must hold what its scripts name
tar -tzf "$tmp/$tarball" > "$tmp/contents.txt"
grep -qx 'package/scripts/embed-wgsl.mjs' "$tmp/contents.txt" || { echo "pack-check: scripts/embed-wgsl.mjs is not in the package" >&2; exit 1; }

mkdir "$tmp/app"
cd "$tmp/app"
echo '{ "name": "tessera-pack-check", "version": "1.0.0", "private": true, "type": "module" }' > package.json
mode=--offline
[ "${TESSERA_PACK_ONLINE:-0}" = 1 ] && mode=--prefer-offline
npm install "$mode" --no-audit --no-fund --loglevel=error "$tmp/$tarball"

run() { echo "pack-check: tessera $*"; npx --no-install tessera "$@"; }
run info
run verify --golden "$golden"
run bench dense --T 64 --runs 2 --baseline none --no-write
# the library itself, imported by name from the installed package
node --input-type=module -e "import { attention, TesseraError } from 'tessera'; if (typeof attention !== 'function' || typeof TesseraError !== 'function') process.exit(1); console.log('pack-check: import ok')"
# the API tiers (package.json exports), one name from each
node --input-type=module -e "
  const checks = { 'tessera/advanced': 'getPipeline', 'tessera/testing': 'compare', 'tessera/reference': 'attentionReference' };
  for (const [entry, name] of Object.entries(checks)) {
    const m = await import(entry);
    if (typeof m[name] !== 'function') { console.error('pack-check: ' + entry + ' has no ' + name); process.exit(1); }
  }
  const main = await import('tessera');
  if ('getPipeline' in main || 'compare' in main) { console.error('pack-check: an internal is exported from tessera'); process.exit(1); }
  console.log('pack-check: entry points ok');
"
echo "pack-check: OK"
