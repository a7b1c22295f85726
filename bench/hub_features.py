"""Frozen-feature extraction speed of a hub image encoder (randomly initialised: no download), products/s.

Results: bench/results/hub_features/<model>-<device>.json, overwritten on a rerun.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch
from common import write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="ViT-B-32", help="open_clip architecture, or timm:NAME (random weights)")
    parser.add_argument("--products", type=int, default=256, help="photos to embed")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = all cores")
    args = parser.parse_args()
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    from huse_core.compat import import_torchvision

    import_torchvision()
    import open_clip

    from huse_core.model.encoders import HubImage

    if args.model.startswith("timm:"):  # timm's own input size and normalisation, as encoders.py reads them
        import timm

        net = timm.create_model(args.model[5:], pretrained=False, num_classes=0).eval().requires_grad_(False)
        data = timm.data.resolve_model_data_config(net)
        size, out_dim, norm = tuple(data["input_size"][1:]), int(net.num_features), (data["mean"], data["std"])
    else:
        clip = open_clip.create_model(args.model.removeprefix("openclip:")).eval().requires_grad_(False)
        net, pre = clip.visual, clip.visual.preprocess_cfg
        size = (pre["size"], pre["size"]) if isinstance(pre["size"], int) else tuple(pre["size"])
        out_dim, norm = net.output_dim, (pre["mean"], pre["std"])
    backbone = HubImage(net, {"encoder": args.model, "sha256": "random"}, size, out_dim, "bicubic").to(args.device)
    mean = torch.tensor(norm[0], device=args.device).view(1, 3, 1, 1)
    std = torch.tensor(norm[1], device=args.device).view(1, 3, 1, 1)
    pixels = torch.randint(0, 256, (args.batch_size, *size, 3), dtype=torch.uint8, device=args.device)

    def batch() -> None:  # ImageTower.features: uint8 NHWC -> normalised NCHW -> encoder
        x = pixels.permute(0, 3, 1, 2).float().div_(255).sub_(mean).div_(std).contiguous(
            memory_format=torch.channels_last)
        with torch.inference_mode():
            backbone(x)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    batch()  # warm-up
    load_before = os.getloadavg()
    wall, cpu = time.perf_counter(), time.process_time()
    n = 0
    while n < args.products:
        batch()
        n += args.batch_size
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    result = {"model": args.model, "device": args.device, "threads": torch.get_num_threads(),
              "products": n, "seconds": round(wall, 2), "products_per_s": round(n / wall, 2),
              "cpu_seconds": round(cpu, 2), "products_per_cpu_s": round(n / max(cpu, 1e-9), 2),
              "load_avg_before_after": [round(v, 1) for v in (*load_before[:1], os.getloadavg()[0])],
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"}
    print(json.dumps(result))
    variant = f"{args.model.replace(':', '-').replace('/', '-')}-{args.device.replace(':', '')}"
    print(f"results: {write_result('hub_features', variant, result)}")


if __name__ == "__main__":
    main()
