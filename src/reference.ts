/**
 * Float64 CPU references: the definition of every kernel's math (`tessera/reference`).
 */
export { mergeReference } from '../kernels/merge/reference.js';
export { topKReference } from '../kernels/topk/reference.js';
