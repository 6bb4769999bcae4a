export {
  planBlockSparse,
  blockSparseAttention,
  BlockSparsePlan,
  type BlockSparseOptions,
  type BlockSparseTensors,
} from './block_sparse.js';
export {
  planBlockSparseVarlen,
  blockSparseVarlen,
  BlockSparseVarlenPlan,
  type BlockSparseVarlenOptions,
  type BsrPattern,
} from './varlen.js';
