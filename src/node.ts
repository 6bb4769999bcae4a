/**
 * Node-only helpers (`tessera/node`): Dawn device creation with SwiftShader discovery, and the
 * golden-vector runner behind `tessera verify`.
 */
export {
  createNodeGpu,
  SWIFTSHADER_ICD_PATHS,
  INSTALL_HINT,
  hasVulkanLoader,
  type NodeGpuOptions,
} from './gpu/node.js';
export { verifyGolden, verdictLine, type VerifyReport } from './verify/run.js';
export { readManifest, loadCase } from './verify/golden-node.js';
export { judge, compareSelections, type GoldenCase, type GoldenHandler } from './verify/golden.js';
export { FileStore, FileManifest, type FileStoreOptions } from './kv/file-store.js';
