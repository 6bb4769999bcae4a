import { adapterFromEnv, requestDevice, type TesseraDevice } from '../gpu/device.js';

export interface DeviceCliOptions {
  adapter?: string;
  dawnFlag?: string[];
}

/** The device for a CLI command: `--adapter`, else `TESSERA_ADAPTER`, else auto. */
export async function cliDevice(opts: DeviceCliOptions): Promise<TesseraDevice> {
  const env = adapterFromEnv();
  const adapter = (opts.adapter ?? env.adapter) as 'auto' | 'swiftshader' | 'llvmpipe';
  return requestDevice({ adapter, dawnFlags: [...(env.dawnFlags ?? []), ...(opts.dawnFlag ?? [])], label: 'tessera-cli' });
}

/** Parses `512,1024,2048`. */
export function intList(s: string): number[] {
  return s.split(',').map((x) => {
    const n = Number(x.trim());
    if (!Number.isInteger(n) || n <= 0) throw new Error(`not a positive integer list: ${s}`);
    return n;
  });
}
