/**
 * Float64 references of the delta family (DeltaNet, Gated DeltaNet, KDA): the general recurrence
 * lives in `kernels/linear/reference.ts` (one definition for the whole scan family).
 */
export { deltaRuleReference, gatedDeltaRuleReference, kdaReference, linearScanReference } from '../linear/reference.js';
