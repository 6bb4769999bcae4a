import type { TesseraDevice } from '../gpu/device.js';
import { DEFAULT_LIMITS } from '../gpu/device.js';

export function deviceInfo(dev: TesseraDevice) {
  return {
    adapter: dev.adapterName,
    adapterClass: dev.adapterClass,
    description: dev.adapter,
    features: dev.features,
    limits: dev.limits,
    webgpuDefaults: DEFAULT_LIMITS,
  };
}

export function printInfo(dev: TesseraDevice): string {
  const i = deviceInfo(dev);
  const lines = [
    `adapter        ${i.adapter} (${i.adapterClass}) ${i.description.description} [${i.description.vendor}/${i.description.architecture}]`,
    `features       shader-f16=${i.features.shaderF16} subgroups=${i.features.subgroups}${i.description.subgroupMinSize ? ` (size ${i.description.subgroupMinSize}-${i.description.subgroupMaxSize})` : ''} timestamp-query=${i.features.timestampQuery}`,
    'limits Tessera uses (WebGPU default in brackets):',
  ];
  for (const [k, v] of Object.entries(i.limits)) {
    lines.push(
      `  ${k.padEnd(36)} ${String(v).padStart(12)}  [${(DEFAULT_LIMITS as unknown as Record<string, number>)[k]}]`,
    );
  }
  return lines.join('\n');
}
