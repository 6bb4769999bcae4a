/**
 * Float64 CPU references: the definition of every kernel's math (`tessera/reference`).
 */
export { mergeReference } from '../kernels/merge/reference.js';
export { mobaReference, mobaBlockMeansReference, type MobaReferenceOptions } from '../kernels/moba/reference.js';
export { nsaReference, type NsaReferenceOptions, type NsaVariant } from '../kernels/nsa/reference.js';
export { blockSparseReference, type BlockSparseReferenceOptions } from '../kernels/block_sparse/reference.js';
