/**
 * Float64 CPU references: the definition of every kernel's math (`tessera/reference`).
 */
export { mergeReference } from '../kernels/merge/reference.js';
export { attentionReference, keyVisible, type AttentionReferenceOptions } from '../kernels/dense/reference.js';
export { slidingWindowReference } from '../kernels/sliding_window/reference.js';
