/**
 * Node-only: a WebGPU entry point through Dawn (`webgpu` npm package), with the software adapter
 * found automatically on a Linux machine without a GPU.
 */
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { TesseraError } from '../errors.js';

/** Where Debian's `chromium` package puts SwiftShader's Vulkan ICD (the software adapter). */
export const SWIFTSHADER_ICD_PATHS = [
  '/usr/lib/chromium/vk_swiftshader_icd.json',
  '/usr/lib/chromium-browser/vk_swiftshader_icd.json',
  '/usr/lib64/chromium-browser/vk_swiftshader_icd.json',
];

const VULKAN_LOADER_PATHS = [
  '/usr/lib/x86_64-linux-gnu/libvulkan.so.1',
  '/usr/lib/aarch64-linux-gnu/libvulkan.so.1',
  '/usr/lib64/libvulkan.so.1',
  '/usr/lib/libvulkan.so.1',
];

export const INSTALL_HINT =
  'On Debian/Ubuntu install the software adapter with `apt-get install -y chromium libvulkan1` ' +
  '(SwiftShader ships in chromium; Dawn needs the system Vulkan loader libvulkan1), or run on a machine with a GPU driver.';

export interface NodeGpuOptions {
  /** Dawn toggles/flags passed to `create()`, e.g. `['enable-dawn-features=...']`. */
  dawnFlags?: string[];
  /** Backend to ask Dawn for: `vulkan` (default on Linux) or `opengles` (Mesa llvmpipe, compatibility mode). */
  backend?: 'vulkan' | 'opengles' | 'default';
  /** Use SwiftShader even where a GPU driver is present (sets VK_ICD_FILENAMES). */
  forceSwiftShader?: boolean;
}

// The Dawn instance must stay reachable as long as any device made from it lives: when the
// object `create()` returns is collected, Dawn tears down and the process crashes.
const liveInstances = new Set<GPU>();

/** Prepares the environment for Dawn on Linux (SwiftShader discovery) and returns a `GPU`. */
export async function createNodeGpu(
  opts: NodeGpuOptions = {},
): Promise<{ gpu: GPU; release: () => void; notes: string[] }> {
  const notes: string[] = [];
  if (process.platform === 'linux') {
    if (!process.env.XDG_RUNTIME_DIR) {
      const dir = `/tmp/tessera-xdg-${process.getuid?.() ?? 0}`;
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      process.env.XDG_RUNTIME_DIR = dir;
      notes.push(`XDG_RUNTIME_DIR=${dir}`);
    }
    if (opts.backend === 'opengles') {
      if (!process.env.EGL_PLATFORM) process.env.EGL_PLATFORM = 'surfaceless';
    } else if (
      opts.forceSwiftShader ||
      (!process.env.VK_ICD_FILENAMES && !process.env.VK_DRIVER_FILES && !hasSystemVulkanIcd())
    ) {
      const icd = SWIFTSHADER_ICD_PATHS.find((p) => existsSync(p));
      if (icd) {
        process.env.VK_ICD_FILENAMES = icd;
        notes.push(`VK_ICD_FILENAMES=${icd} (SwiftShader)`);
      }
    }
  }
  let mod: typeof import('webgpu');
  try {
    mod = await import('webgpu');
  } catch (e) {
    throw new TesseraError(
      'E_NO_ADAPTER',
      'the `webgpu` package (Dawn for Node) could not be loaded; run `npm install`.',
      { cause: e },
    );
  }
  const flags = [...(opts.dawnFlags ?? [])];
  if (opts.backend === 'opengles') flags.push('backend=opengles');
  else if (opts.backend === 'vulkan') flags.push('backend=vulkan');
  // Dawn's node bindings expose the WebGPU globals (GPUBufferUsage, ...) separately.
  Object.assign(globalThis, mod.globals);
  const gpu = mod.create(flags);
  liveInstances.add(gpu);
  return { gpu, release: () => liveInstances.delete(gpu), notes };
}

function hasSystemVulkanIcd(): boolean {
  // An ICD file alone proves nothing (Mesa installs Intel and AMD ICDs everywhere): look for a
  // GPU device node that a real Vulkan driver would open.
  try {
    if (existsSync('/dev/nvidia0') || existsSync('/dev/nvidiactl')) return true;
    if (existsSync('/dev/dri') && readdirSync('/dev/dri').some((f) => f.startsWith('renderD'))) return true;
  } catch {
    return false;
  }
  return false;
}

/** Whether the Vulkan loader is installed (Dawn's Vulkan backend needs it). */
export function hasVulkanLoader(): boolean {
  return VULKAN_LOADER_PATHS.some((p) => existsSync(p));
}
