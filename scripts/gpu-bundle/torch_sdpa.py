#!/usr/bin/env python3
"""Times torch.nn.functional.scaled_dot_product_attention (causal; FlashAttention on CUDA) on the
shapes of Tessera's dense suite, as the hardware's reference point for the GPU bundle's run.

  python3 torch_sdpa.py --shapes T:D:dtype[,T:D:dtype...] [--heads 1] [--runs 5] --out DIR

Writes DIR/torch-sdpa.json (rows shaped like Tessera's bench results: impl "torch-sdpa",
median/min/max ms, flops counted as Tessera counts them, causal) and DIR/torch-sdpa.md.
"""
import argparse, json, os, statistics, sys

import torch
import torch.nn.functional as F


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", required=True)
    ap.add_argument("--heads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name(0) if dev == "cuda" else "cpu"
    rows = []
    for spec in a.shapes.split(","):
        T, D, dt = spec.split(":")
        T, D = int(T), int(D)
        dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[dt]
        g = torch.Generator(device=dev).manual_seed(1234 + T)
        q, k, v = (torch.randn(1, a.heads, T, D, device=dev, dtype=dtype, generator=g) for _ in range(3))
        run = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)
        run()  # warm-up
        times = []
        for _ in range(a.runs):
            if dev == "cuda":
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                s.record(); run(); e.record(); torch.cuda.synchronize()
                times.append(s.elapsed_time(e))
            else:
                import time
                t0 = time.perf_counter(); run(); times.append((time.perf_counter() - t0) * 1e3)
        flops = a.heads * 4 * D * T * (T + 1) / 2
        med = statistics.median(times)
        rows.append({"suite": "dense", "impl": "torch-sdpa", "T": T, "D": D, "H": a.heads, "dtype": dt, "causal": True,
                     "median_ms": med, "min_ms": min(times), "max_ms": max(times), "runs": len(times),
                     "flops": flops, "gflops": flops / (med * 1e6), "device": name, "torch": torch.__version__})
        print(f"torch sdpa T={T} D={D} {dt}: {med:.3f} ms ({flops / (med * 1e6):.1f} GFLOP/s)", flush=True)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "torch-sdpa.json"), "w") as f:
        json.dump({"adapter": name, "results": rows}, f, indent=2)
    with open(os.path.join(a.out, "torch-sdpa.md"), "w") as f:
        f.write(f"# torch scaled_dot_product_attention on {name} (torch {torch.__version__})\n\n")
        f.write("| T | D | H | dtype | median ms | min ms | max ms | GFLOP/s |\n|---:|---:|---:|---|---:|---:|---:|---:|\n")
        for r in rows:
            f.write(f"| {r['T']} | {r['D']} | {r['H']} | {r['dtype']} | {r['median_ms']:.3f} | {r['min_ms']:.3f} | {r['max_ms']:.3f} | {r['gflops']:.1f} |\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
