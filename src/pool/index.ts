export { PagePool, createPagePool, type PagePoolOptions, type StepEntry, type StepTables } from './pool.js';
