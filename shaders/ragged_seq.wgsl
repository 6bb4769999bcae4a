// Sequence lookup of the ragged-batch (varlen) kernels, one piece for all of them. The table
// `seqs` (u32, the entry file's binding, written once at plan time) holds word 0 = n non-empty
// sequences, then `stride` words per sequence; word `field` of a sequence (its first token, or its
// first block) increases from one sequence to the next.
//   ragged_seq(key, stride, field) = the last sequence s with ragged_word(s, stride, field) <= key
// by binary search (ceil(log2 n) trips, counted in the kernels' loop costs; 0 trips for n = 1).

fn ragged_word(s: u32, stride: u32, field: u32) -> u32 {
  return seqs[1u + s * stride + field];
}

fn ragged_seq(key: u32, stride: u32, field: u32) -> u32 {
  var lo = 0u;
  var hi = seqs[0];
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
