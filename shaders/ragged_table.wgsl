// The varlen kernels' sequence table, read through the accessor shaders/ragged_seq.wgsl takes:
// their binding `seqs` (array<u32>, declared in each entry file). The attention core defines its
// own `ragged_table` over its `seq_table` binding (kernels/attention/attention.wgsl).

fn ragged_table(i: u32) -> u32 {
  return seqs[i];
}
