export {
  planBlockSparse,
  blockSparseAttention,
  BlockSparsePlan,
  type BlockSparseOptions,
  type BlockSparseTensors,
} from './block_sparse.js';
