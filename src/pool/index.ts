export {
  PagePool,
  createPagePool,
  type PagePoolOptions,
  type PageFix,
  type StepEntry,
  type StepTables,
} from './pool.js';
