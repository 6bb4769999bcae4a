#!/usr/bin/env bash
# Builds a self-contained folder (default ./gpu-bundle, git-ignored, at most 60 MiB) that runs the
# Tessera CLI on a bare x86-64 Linux machine with an NVIDIA driver and no Node:
#   node.xz            the Node binary that built it (xz)
#   tessera.tar.xz     `npm pack` of this package + its production dependencies for linux-x64 only,
#                      plus the bench-only ones the suites need (benchmark, vega, vega-lite), and
#                      the Vulkan loader unpacked from Debian's libvulkan1 (vulkan/)
#   debs/              the Debian packages themselves (libvulkan1), as downloaded
#   golden/            the golden vectors of ../shared/golden (cases up to $TESSERA_BUNDLE_CASE_MIB
#                      each; a filtered manifest.json lists what is in, `omitted` what is not)
#   torch_sdpa.py      times torch.nn.functional.scaled_dot_product_attention where torch is there
#   run.sh             unpacks, finds the NVIDIA Vulkan ICD, runs info, verify and every suite
#   MANIFEST.txt       versions, sizes, what was left out
# Usage: bash scripts/gpu-bundle.sh [OUT_DIR]
# Env: TESSERA_GOLDEN (default ../shared/golden), TESSERA_BUNDLE_CASE_MIB (default 4),
#      TESSERA_BUNDLE_ORT=1 to add onnxruntime-node (linux-x64 binaries only; about 12 MiB more).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT_DIR=${1:-gpu-bundle}
GOLDEN=${TESSERA_GOLDEN:-../shared/golden}
CASE_MIB=${TESSERA_BUNDLE_CASE_MIB:-4}
WITH_ORT=${TESSERA_BUNDLE_ORT:-0}
MAX_BYTES=$((60 * 1024 * 1024))
[ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ] || { echo "gpu-bundle: build on x86-64 Linux (the bundle carries this machine's node)" >&2; exit 1; }
[ -f "$GOLDEN/manifest.json" ] || { echo "gpu-bundle: no golden vectors at $GOLDEN (set TESSERA_GOLDEN to the folder with manifest.json)" >&2; exit 1; }
NODE_BIN=$(readlink -f "$(command -v node)")
STAGE=$(mktemp -d /tmp/tessera-bundle.XXXXXX)
trap 'rm -rf "$STAGE"' EXIT
log() { echo "gpu-bundle: $*" >&2; }

log "building dist/ (tsc)"
npm run --silent build >/dev/null
log "npm pack"
TGZ=$(npm pack --silent --pack-destination "$STAGE" | tail -1)
mkdir -p "$STAGE/app"
tar xzf "$STAGE/$TGZ" -C "$STAGE/app" --strip-components=1

# The bench suites import benchmark (CPU timings) and vega/vega-lite (plots) from devDependencies:
# pin them at the versions this checkout runs with, as dependencies of the bundled copy.
ver() { node -p "require('./node_modules/$1/package.json').version"; }
EXTRAS="benchmark vega vega-lite"
[ "$WITH_ORT" = 1 ] && EXTRAS="$EXTRAS onnxruntime-node"
PINS=$(for p in $EXTRAS; do printf '%s=%s ' "$p" "$(ver "$p")"; done)
node -e '
const fs = require("fs"); const f = process.argv[1]; const p = JSON.parse(fs.readFileSync(f, "utf8"));
for (const kv of process.argv.slice(2)) { const [n, v] = kv.split("="); p.dependencies[n] = v; }
delete p.devDependencies; delete p.scripts;
fs.writeFileSync(f, JSON.stringify(p, null, 2) + "\n");' "$STAGE/app/package.json" $PINS
log "production dependencies for linux-x64 (+ $EXTRAS)"
(cd "$STAGE/app" && ONNXRUNTIME_NODE_INSTALL=skip npm install --omit=dev --ignore-scripts --no-audit --no-fund --no-package-lock --os=linux --cpu=x64 --loglevel=error >/dev/null)

log "pruning other platforms' binaries, source maps and type declarations"
NM="$STAGE/app/node_modules"
if [ -d "$NM/webgpu/dist" ]; then
  find "$NM/webgpu/dist" -mindepth 1 -maxdepth 1 ! -name linux-x64 -exec rm -rf {} +
fi
if [ -d "$NM/onnxruntime-node/bin/napi-v6" ]; then
  find "$NM/onnxruntime-node/bin/napi-v6" -mindepth 1 -maxdepth 1 ! -name linux -exec rm -rf {} +
  find "$NM/onnxruntime-node/bin/napi-v6/linux" -mindepth 1 -maxdepth 1 ! -name x64 -exec rm -rf {} +
fi
find "$STAGE/app" \( -name '*.map' -o -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' \) -type f -delete
find "$NM" -type d \( -name test -o -name tests -o -name docs -o -name example -o -name examples \) -prune -exec rm -rf {} +
# vega-lite and vega ship several builds; Node imports the ESM build (build/ or build/src).
for b in "$NM/vega-lite/build/vega-lite.js" "$NM/vega-lite/build/vega-lite.min.js" "$NM/vega/build/vega.js" "$NM/vega/build/vega.min.js" "$NM/vega/build/vega-core.js" "$NM/vega/build/vega-core.min.js"; do rm -f "$b"; done

log "Vulkan loader (Debian libvulkan1)"
rm -rf "$OUT_DIR.tmp" && mkdir -p "$OUT_DIR.tmp/debs"
if (cd "$OUT_DIR.tmp/debs" && apt-get download libvulkan1 >/dev/null 2>&1); then
  for d in "$OUT_DIR.tmp"/debs/*.deb; do dpkg-deb -x "$d" "$STAGE/app/vulkan"; done
  rm -rf "$STAGE/app/vulkan/usr/share"
else
  log "apt-get download libvulkan1 failed: copying this machine's libvulkan.so.1 instead"
  mkdir -p "$STAGE/app/vulkan/usr/lib/x86_64-linux-gnu"
  cp -L /usr/lib/x86_64-linux-gnu/libvulkan.so.1 "$STAGE/app/vulkan/usr/lib/x86_64-linux-gnu/"
fi

log "compressing the package tree and node ($(node --version))"
tar -C "$STAGE" -cf - app | xz -T0 -6 > "$OUT_DIR.tmp/tessera.tar.xz"
xz -T0 -6 -c "$NODE_BIN" > "$OUT_DIR.tmp/node.xz"

log "golden vectors from $GOLDEN (cases up to $CASE_MIB MiB)"
mkdir -p "$OUT_DIR.tmp/golden"
node -e '
const fs = require("fs"), path = require("path");
const [src, dst, mib] = process.argv.slice(1);
const m = JSON.parse(fs.readFileSync(path.join(src, "manifest.json"), "utf8"));
const size = (d) => fs.readdirSync(d).reduce((s, f) => s + fs.statSync(path.join(d, f)).size, 0);
const keep = [], omitted = [];
for (const c of m.cases) {
  const dir = path.join(src, c.name);
  const bytes = size(dir);
  if (bytes > Number(mib) * 1048576) { omitted.push({ name: c.name, bytes }); continue; }
  fs.cpSync(dir, path.join(dst, c.name), { recursive: true });
  keep.push(c);
}
m.cases = keep;
m.omitted = omitted.map((o) => `${o.name} (${(o.bytes / 1048576).toFixed(1)} MiB: over the bundle budget)`);
fs.writeFileSync(path.join(dst, "manifest.json"), JSON.stringify(m, null, 1) + "\n");
for (const f of fs.readdirSync(src)) if (f.endsWith(".md")) fs.copyFileSync(path.join(src, f), path.join(dst, f));
console.error(`gpu-bundle: golden: ${keep.length} cases in, ${omitted.length} left out: ${omitted.map((o) => o.name).join(", ") || "none"}`);
' "$GOLDEN" "$OUT_DIR.tmp/golden" "$CASE_MIB"

cp scripts/gpu-bundle/run.sh scripts/gpu-bundle/torch_sdpa.py "$OUT_DIR.tmp/"
chmod +x "$OUT_DIR.tmp/run.sh"
{
  echo "Tessera GPU bundle, built $(date -u +%Y-%m-%dT%H:%MZ) from $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "node $(node --version) ($NODE_BIN), npm $(npm --version)"
  echo "package $TGZ; extras: $PINS"
  echo "vulkan: $(ls "$OUT_DIR.tmp/debs" 2>/dev/null | tr '\n' ' ')"
  echo "golden omitted: $(node -p "require(require('path').resolve(process.argv[1])).omitted.join('; ') || 'none'" "$OUT_DIR.tmp/golden/manifest.json")"
  echo "run: bash run.sh [--quick]   (OUT=dir for the results, default ./gpu-results)"
} > "$OUT_DIR.tmp/MANIFEST.txt"

rm -rf "$OUT_DIR" && mv "$OUT_DIR.tmp" "$OUT_DIR"
BYTES=$(du -sb "$OUT_DIR" | cut -f1)
(cd "$OUT_DIR" && du -sh -- * | sed 's/^/  /') >&2
echo "size $BYTES bytes ($((BYTES / 1048576)) MiB)" >> "$OUT_DIR/MANIFEST.txt"
if [ "$BYTES" -gt "$MAX_BYTES" ]; then
  log "bundle is $((BYTES / 1048576)) MiB, over the 60 MiB limit (lower TESSERA_BUNDLE_CASE_MIB or drop TESSERA_BUNDLE_ORT)"
  exit 1
fi
log "wrote $OUT_DIR ($((BYTES / 1048576)) MiB). Run it with: bash $OUT_DIR/run.sh [--quick]"
