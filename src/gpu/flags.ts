/**
 * WebGPU's flag constants as plain numbers (the values the spec fixes). The library uses these,
 * never the globals `GPUBufferUsage`, `GPUMapMode` and `GPUShaderStage`: a device made from the
 * `webgpu` package without installing its globals (or any other embedding) has no such globals.
 */

/** GPUBufferUsage values. */
export const GPUBufferUsageFlags = {
  MAP_READ: 0x0001,
  MAP_WRITE: 0x0002,
  COPY_SRC: 0x0004,
  COPY_DST: 0x0008,
  INDEX: 0x0010,
  VERTEX: 0x0020,
  UNIFORM: 0x0040,
  STORAGE: 0x0080,
  INDIRECT: 0x0100,
  QUERY_RESOLVE: 0x0200,
} as const;

/** GPUMapMode values. */
export const GPUMapModeFlags = { READ: 0x0001, WRITE: 0x0002 } as const;

/** GPUShaderStage values. */
export const GPUShaderStageFlags = { VERTEX: 0x1, FRAGMENT: 0x2, COMPUTE: 0x4 } as const;
