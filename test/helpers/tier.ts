/**
 * The options that put a test in a tier (vitest.config.ts; docs/development.md, "Test tiers"):
 * `tier(true)` tags it `extended` (`npm run test:extended`, which CI runs after `npm test`),
 * `tier(false)` leaves it in the core tier that `npm test` runs.
 */
export function tier(extended?: boolean): { tags?: string[] } {
  return extended ? { tags: ['extended'] } : {};
}
