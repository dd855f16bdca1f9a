"""One backbone training step (forward + backward + AdamW on adapters) with and without activation
checkpointing: peak memory and step time on CPU, fp32, batch 1, ViT-S + adapters in all 12 blocks.

Each setting runs in a fresh subprocess so that its peak RSS (getrusage ru_maxrss) is its own.
glibc keeps freed heap pages mapped (its mmap threshold grows after the first large free), so RSS
would also count memory that checkpointing already released; children therefore run with
MALLOC_MMAP_THRESHOLD_ fixed (default 1 MiB: every activation tensor is mmapped and returned on
free) so the peak tracks live memory. `--mmap-threshold 0` keeps glibc's default behaviour.
Step time is wall clock and process CPU time (the latter is less sensitive to a busy machine).

    .venv/bin/python benchmarks/bench_backbone_step.py                    # 768 and 384 frames
    .venv/bin/python benchmarks/bench_backbone_step.py --frames 384 --size 160
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def count_params(model) -> dict[str, int]:
    params = dict(model.named_parameters())
    return {
        "total": sum(p.numel() for p in params.values()),
        "trainable": sum(p.numel() for p in params.values() if p.requires_grad),
        "adapters": sum(p.numel() for n, p in params.items() if "adapter" in n),
    }


def child(frames: int, size: int, checkpointing: bool, threads: int) -> dict:
    import torch

    from adatad.models.chunked import ChunkedEncoder
    from adatad.models.videomae import build_videomae

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    encoder = ChunkedEncoder(build_videomae("S", drop_path_rate=0.1), use_checkpoint=checkpointing).train()
    with torch.no_grad():  # trained-looking adapters so every gradient is non-trivial
        for block in encoder.backbone.blocks:
            block.adapter.up_proj.weight.normal_(0, 0.02)
    optimizer = torch.optim.AdamW([p for p in encoder.parameters() if p.requires_grad], lr=2e-4)
    x = torch.randn(1, 3, frames, size, size)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    start, cpu_start = time.perf_counter(), time.process_time()
    feats = encoder(x)
    forward_s = time.perf_counter() - start
    feats.square().mean().backward()
    optimizer.step()
    step_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start

    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"frames": frames, "size": size, "checkpointing": checkpointing, "threads": threads,
            "feats_shape": list(feats.shape), "forward_s": round(forward_s, 2), "step_s": round(step_s, 2),
            "step_cpu_s": round(cpu_s, 2), "mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_", "glibc default"),
            "peak_rss_gib": round(peak_kib / 2**20, 2), "rss_before_step_gib": round(rss_before / 2**20, 2),
            "params": count_params(encoder)}


def run_child(frames: int, size: int, checkpointing: bool, threads: int, mmap_threshold: int) -> dict:
    cmd = [sys.executable, __file__, "--child", "--frames", str(frames), "--size", str(size),
           "--checkpointing", str(int(checkpointing)), "--threads", str(threads)]
    env = dict(os.environ)
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    if mmap_threshold > 0:
        env["MALLOC_MMAP_THRESHOLD_"] = str(mmap_threshold)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:  # e.g. killed by the OOM killer (-9)
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"frames": frames, "size": size, "checkpointing": checkpointing,
                "error": f"exit {proc.returncode}: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[768, 384])
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mmap-threshold", type=int, default=2**20,
                        help="MALLOC_MMAP_THRESHOLD_ for the children in bytes; 0 = glibc default")
    parser.add_argument("--checkpointing-only", choices=["both", "on", "off"], default="both")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.frames[0], args.size, bool(args.checkpointing), args.threads)))
        return

    settings = {"both": (True, False), "on": (True,), "off": (False,)}[args.checkpointing_only]
    rows = [run_child(f, args.size, cp, args.threads, args.mmap_threshold) for f in args.frames for cp in settings]
    for row in rows:
        print(json.dumps(row), flush=True)
    print("\n| frames | size | checkpointing | forward s | step s (wall) | step CPU s | peak RSS GiB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['frames']} | {r['size']} | {r['checkpointing']} | - | - | - | {r['error']} |")
        else:
            print(f"| {r['frames']} | {r['size']} | {r['checkpointing']} | {r['forward_s']} | {r['step_s']} "
                  f"| {r['step_cpu_s']} | {r['peak_rss_gib']} |")
    for f in args.frames:
        pair = {r["checkpointing"]: r for r in rows if r["frames"] == f and "error" not in r}
        if len(pair) == 2:
            ratio = pair[True]["peak_rss_gib"] / pair[False]["peak_rss_gib"]
            print(f"{f} frames: peak with checkpointing = {ratio:.0%} of without")
    ok = next((r for r in rows if "params" in r), None)
    if ok:
        print("parameters:", ok["params"])


if __name__ == "__main__":
    main()
