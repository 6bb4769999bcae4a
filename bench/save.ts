/**
 * When a bench suite writes its report files: only with `--save` (into `bench/results/<adapter>/`)
 * or when `TESSERA_BENCH_DIR` moves the output elsewhere (the GPU bundle). A plain run prints its
 * table and writes nothing but an explicit `--json FILE`, so running a benchmark never changes the
 * committed result files. `--no-write` wins over both (kept for older command lines).
 */
export const SAVE_HELP =
  'write bench/results/<adapter>/<suite>.{json,md,svg} (or $TESSERA_BENCH_DIR/<adapter>/); without it only --json is written';
export const NO_WRITE_HELP = 'never write the report files (the default unless --save or $TESSERA_BENCH_DIR)';

export function shouldSave(o: { save?: boolean; write?: boolean }): boolean {
  if (o.write === false) return false;
  return o.save === true || !!process.env.TESSERA_BENCH_DIR;
}
