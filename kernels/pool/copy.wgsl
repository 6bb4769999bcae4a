// Copy-on-write of pool pages (a forked or rewound sequence's shared partial last page): whole
// pages, word for word, inside the caller's encoder. The pairs (src, dst) sit at
// tables[params.copies + 2c]; tables[2] is their count. A dst is never another pair's src (the
// plan refuses such a schedule), so the order of the words copied does not matter.

@group(0) @binding(0) var<storage, read_write> pages: array<u32>;
@group(0) @binding(1) var<storage, read> tables: array<u32>;
@group(0) @binding(2) var<uniform> params: PageCopyParams;

override WG: u32 = 64;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let id = gid.x + gid.y * nwg.x * WG;
  let per = params.pageWords;
  let c = id / per;
  if (c >= tables[2]) {
    return;
  }
  let w = id - c * per;
  let src = tables[params.copies + 2u * c];
  let dst = tables[params.copies + 2u * c + 1u];
  pages[dst * per + w] = pages[src * per + w];
}
