#!/usr/bin/env bash
# One-time set-up on a fresh Debian/Ubuntu machine with Node 20: installs the software WebGPU
# adapter where no GPU driver is present (SwiftShader from Debian's `chromium`, plus the system
# Vulkan loader `libvulkan1` that Dawn needs; the browser tests use the same chromium), Mesa's
# llvmpipe for the compatibility-mode run (`npm run test:compat`: Dawn's OpenGL ES backend loads
# libEGL.so from libegl-dev, Mesa's EGL from libegl-mesa0 and swrast_dri.so from libgl1-mesa-dri),
# then the npm dependencies from the lockfile. Idempotent: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
if [ "$(uname -s)" = "Linux" ]; then
  [ -e /usr/lib/chromium/vk_swiftshader_icd.json ] || need_apt+=(chromium)
  ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1' || [ -e /usr/lib/x86_64-linux-gnu/libvulkan.so.1 ] || need_apt+=(libvulkan1)
  if command -v dpkg >/dev/null 2>&1; then
    for p in libegl-dev libegl-mesa0 libgl1-mesa-dri; do
      dpkg -s "$p" >/dev/null 2>&1 || need_apt+=("$p")
    done
  fi
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" = "0" ] || SUDO="sudo"
    echo "setup: installing ${need_apt[*]} (software WebGPU adapter and browser for tests)" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "setup: please install: ${need_apt[*]} (no apt-get here)" >&2
  fi
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
node scripts/embed-wgsl.mjs
