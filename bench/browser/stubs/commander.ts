// The page bundles the bench suites for their reusable functions (benchTesseraDense,
// benchSparseMethod, benchLinear, benchTesseraTopK); their CLI entries (runXSuite) use commander,
// a Node-only module. vite.config.ts aliases `commander` to this stub: constructing a Command in
// the page is an error, importing the suites is not.
export class Command {
  constructor(name?: string) {
    throw new Error(`commander is not available in the browser (bench CLI entry "${name ?? ''}")`);
  }
}

export class Option {
  constructor(flags?: string) {
    throw new Error(`commander is not available in the browser (bench CLI option "${flags ?? ''}")`);
  }
}
