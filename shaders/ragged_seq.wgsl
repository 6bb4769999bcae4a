// Sequence lookup of the ragged-batch (varlen) kernels and of the attention core's batch table,
// one piece for all of them. The table (u32 words, written once at plan time, read through
// `ragged_table(i)`: shaders/ragged_table.wgsl over the varlen kernels' `seqs` binding, or the
// core's own over `seq_table`) holds word 0 = n non-empty sequences, then `stride` words per
// sequence from word 1; word `field` of a sequence (its first token, or its first block)
// increases from one sequence to the next. (The core's table has a second header word, t0, so its
// sequences' first tokens are field 1 with stride SEQ_WORDS: word 2 + s * SEQ_WORDS.)
//   ragged_seq(key, stride, field) = the last sequence s with ragged_word(s, stride, field) <= key
// by binary search (ceil(log2 n) trips, counted in the kernels' loop costs; 0 trips for n = 1).

fn ragged_word(s: u32, stride: u32, field: u32) -> u32 {
  return ragged_table(1u + s * stride + field);
}

fn ragged_seq(key: u32, stride: u32, field: u32) -> u32 {
  var lo = 0u;
  var hi = ragged_table(0u);
  while (hi - lo > 1u) {
    let mid = (lo + hi) / 2u;
    if (ragged_word(mid, stride, field) <= key) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}
