/**
 * Buffer tracking: WebGPU cannot tell whether a `GPUBuffer` was destroyed or which device made it,
 * and binding such a buffer only fails later, at `submit`, as a GPU validation error. So Tessera
 * records buffers itself (see {@link BufferTracking}): the buffer's device in a module-level
 * `WeakMap`, and, through an instance-own `destroy` wrapper, that it was destroyed (a `WeakSet`).
 * Nothing is retained: both are keyed weakly by the buffer, so a buffer the caller drops is
 * collected as before. `checkBuffer()` turns what is known into an `E_BUFFER` naming the argument
 * before anything is encoded.
 *
 * Patching the caller's objects is opt-in: only {@link instrumentDevice} wraps a device instance's
 * `createBuffer` (never `GPUDevice.prototype`), and only `requestDevice({ trackBuffers: true })` or
 * `wrapDevice(device, { trackBuffers: true })` call it. Without it (the default) only the buffers
 * Tessera creates itself are registered (their own `destroy` wrapped, so `memory()` forgets a
 * buffer destroyed directly).
 */
import { TesseraError } from '../errors.js';

/**
 * Which buffers a {@link TesseraDevice} knows (to reject destroyed buffers and buffers of another
 * device before encoding):
 * - `all`: every buffer of this device since its creation (`requestDevice({ trackBuffers: true })`):
 *   a buffer the device did not create belongs to another device.
 * - `new`: Tessera's own buffers and every buffer created on the device since
 *   `wrapDevice(device, { trackBuffers: true })`; older buffers are unknown and pass unchecked.
 * - `own`: only the buffers Tessera created (`createBuffer`, `upload`, plan workspaces); the
 *   default of `requestDevice` and `wrapDevice`. Unknown buffers pass unchecked (a misuse still
 *   fails at submit, as `E_BUFFER` where the GPU's message names the buffer).
 * Only a buffer made by `GPUDevice.prototype.createBuffer.call(device, ...)` bypasses the wrapper:
 * it is unknown, which under `all` reads as another device's buffer.
 */
export type BufferTracking = 'all' | 'new' | 'own';

/** What the buffer checks need of a device context (a `TesseraDevice`). */
export interface BufferOwner {
  readonly device: GPUDevice;
  readonly bufferTracking: BufferTracking;
}

/** Buffer -> the GPUDevice that created it, for every buffer Tessera saw being created. */
const bufferDevices = new WeakMap<GPUBuffer, GPUDevice>();
/** Registered buffers whose `destroy()` ran. */
const destroyedBuffers = new WeakSet<GPUBuffer>();
/** Device -> what its context does when one of its registered buffers is destroyed. */
const destroyHooks = new WeakMap<GPUDevice, (b: GPUBuffer) => void>();
/** Marks the `createBuffer` wrappers installed on device instances. */
const INSTRUMENTED = Symbol('tessera.createBuffer');

/** @internal Sets what runs when a registered buffer of `device` is destroyed (its context forgets the bytes). */
export function onBufferDestroyed(device: GPUDevice, hook: (b: GPUBuffer) => void): void {
  destroyHooks.set(device, hook);
}

/**
 * Records `b` as created by `device` and wraps its `destroy` (an own property of this buffer, the
 * prototype is left alone) so that Tessera learns when it is destroyed. Idempotent.
 */
export function registerBuffer(b: GPUBuffer, device: GPUDevice): void {
  if (bufferDevices.has(b)) return;
  bufferDevices.set(b, device);
  const destroy = b.destroy;
  if (typeof destroy !== 'function') return;
  try {
    Object.defineProperty(b, 'destroy', {
      value: function destroyTracked(this: GPUBuffer): undefined {
        destroyedBuffers.add(this);
        const dev = bufferDevices.get(this);
        if (dev) destroyHooks.get(dev)?.(this);
        return destroy.call(this);
      },
      writable: true,
      configurable: true,
      enumerable: false,
    });
  } catch {
    // a frozen buffer object: its device is still known, its destruction is not
  }
}

/**
 * Wraps `device.createBuffer` on this device INSTANCE so every buffer made on it is registered.
 * Returns false where the device object does not accept an own property.
 */
export function instrumentDevice(device: GPUDevice): boolean {
  const cur = device.createBuffer as GPUDevice['createBuffer'] & { [INSTRUMENTED]?: true };
  if (cur[INSTRUMENTED]) return true;
  const createBuffer = Object.assign(
    function createBuffer(this: GPUDevice, desc: GPUBufferDescriptor): GPUBuffer {
      const b = cur.call(this, desc);
      registerBuffer(b, this);
      return b;
    },
    { [INSTRUMENTED]: true as const },
  );
  try {
    Object.defineProperty(device, 'createBuffer', {
      value: createBuffer,
      writable: true,
      configurable: true,
      enumerable: false,
    });
  } catch {
    return false;
  }
  return device.createBuffer === createBuffer;
}

function isGpuBuffer(b: unknown): b is GPUBuffer {
  return (
    b !== null &&
    typeof b === 'object' &&
    typeof (b as GPUBuffer).size === 'number' &&
    typeof (b as GPUBuffer).usage === 'number' &&
    typeof (b as GPUBuffer).mapAsync === 'function'
  );
}

function describeBuffer(b: GPUBuffer): string {
  return b.label ? `buffer "${b.label}"` : 'an unlabelled buffer';
}

/**
 * What Tessera knows to be wrong with binding `b` on `ctx`: `destroyed`, `foreign` (created on
 * another device), or `null` (nothing known against it; unknown buffers pass unless `ctx` tracks
 * all of its buffers). Without `ctx`, only destruction is checked. One `WeakSet` and one `WeakMap`
 * lookup.
 */
export function bufferProblem(b: unknown, ctx?: BufferOwner): 'destroyed' | 'foreign' | null {
  if (b === null || typeof b !== 'object') return null;
  const buf = b as GPUBuffer;
  if (destroyedBuffers.has(buf)) return 'destroyed';
  if (!ctx) return null;
  const owner = bufferDevices.get(buf);
  if (owner !== undefined) return owner === ctx.device ? null : 'foreign';
  return ctx.bufferTracking === 'all' && isGpuBuffer(buf) ? 'foreign' : null;
}

/**
 * Throws `E_BUFFER` naming `argument` when `b` is known to be destroyed, or (with `ctx`) to belong
 * to another device than `ctx`: the cases WebGPU only reports at `submit`. Anything else passes
 * (the caller's other checks run as before).
 *
 * @example
 * checkBuffer(ctx, t.q.buffer, 'q.buffer'); // before encoding anything that binds it
 */
export function checkBuffer(ctx: BufferOwner | undefined, b: unknown, argument: string): void {
  const p = bufferProblem(b, ctx);
  if (p === null) return;
  const buf = b as GPUBuffer;
  if (p === 'destroyed') {
    throw new TesseraError(
      'E_BUFFER',
      `${argument}: is destroyed (${describeBuffer(buf)}); a destroyed buffer cannot be bound`,
      { argument, expected: 'a live GPUBuffer' },
    );
  }
  const owner = bufferDevices.get(buf);
  const mine = ctx!.device.label ? `device "${ctx!.device.label}"` : 'this device';
  const where = owner
    ? `was created on ${owner.label ? `device "${owner.label}"` : 'another device'}; this call runs on ${mine}`
    : `was not created on ${mine}, which records every buffer made on it`;
  throw new TesseraError('E_BUFFER', `${argument}: belongs to another device (${describeBuffer(buf)} ${where})`, {
    argument,
    expected: 'a GPUBuffer created on the same GPUDevice as the plan',
  });
}

/**
 * Maps a captured validation message that names a destroyed buffer or a buffer of another device
 * (Dawn's wording: `[Buffer "x"] used in submit while destroyed`, `[Buffer "x"] is associated with
 * [Device "a"], and cannot be used with [Device "b"]`) to `E_BUFFER`; `null` for other messages.
 */
export function bufferErrorFromValidation(what: string, message: string): TesseraError | null {
  const line = message.split('\n')[0] ?? '';
  if (!/\bbuffer\b/i.test(line)) return null;
  if (/\bdestroyed\b/i.test(line))
    return new TesseraError('E_BUFFER', `${what}: a destroyed buffer was used: ${message.trim()}`);
  if (/associated with \[Device.*cannot be used with \[Device|different device|device mismatch/i.test(line)) {
    return new TesseraError('E_BUFFER', `${what}: a buffer of another device was used: ${message.trim()}`);
  }
  return null;
}
