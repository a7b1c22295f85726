"""Seconds per training step of a photo backbone, float32 vs bfloat16 autocast (TrainConfig.precision).

    python -m bench.studies.precision [--batch 128] [--sizes 64,80] [--threads 2]
    python -m bench.studies.precision --backbone lite0 --batch 64 --sizes 160   # fine-tuning EfficientNet-Lite0 whole

Forward + backward + AdamW step on random photos, channels-last as in training; the median of 5 timed steps
after one warm-up. An epoch of the real catalogue is ~276 steps of 128.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from bench.common import write_result

from huse_core.model.backbones import SmallCNN, lite0_backbone
from huse_core.training.train import training_autocast


def step_seconds(size: int, batch: int, dtype: torch.dtype | None, steps: int = 6, backbone: str = "cnn") -> float:
    torch.manual_seed(0)
    net = (SmallCNN(32) if backbone == "cnn" else lite0_backbone()[0].train()).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters())
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            loss = net(x).float().pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--sizes", default="64,80")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backbone", choices=("cnn", "lite0"), default="cnn")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    auto = training_autocast("auto", torch.device("cpu"))
    lines = [f"{args.backbone}, {args.threads} threads, batch {args.batch}; precision auto on this CPU = "
             f"{'bf16' if auto else 'fp32'}", "",
             "| photo size | fp32 s/step | fp32 ms/photo | bf16 s/step | speed-up |", "|---:|---:|---:|---:|---:|"]
    print("\n".join(lines), flush=True)
    for size in (int(s) for s in args.sizes.split(",")):
        fp32, bf16 = (step_seconds(size, args.batch, dtype, backbone=args.backbone) for dtype in (None, torch.bfloat16))
        lines.append(f"| {size} px | {fp32:.3f} | {fp32 / args.batch * 1000:.1f} | {bf16:.3f} | {fp32 / bf16:.2f}x |")
        print(lines[-1], flush=True)
    variant = "precision" if args.backbone == "cnn" else f"precision-{args.backbone}"
    print(f"results: {write_result('studies', variant, {'args': vars(args)}, chr(10).join(lines))}")


if __name__ == "__main__":
    main()
