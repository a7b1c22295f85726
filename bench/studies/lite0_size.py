"""The photo size for `--backbone lite0`: a linear probe of its frozen ImageNet features at a few sizes.

    python -m bench.studies.lite0_size --data CSV [--sizes 128,160,192] [--train 5000] [--test 2000]

A seeded sample of the real catalogue, split by title (crc32 of the lowercased title: 8 of 10 buckets train, the
last one test, so no title is on both sides); each photo decoded as training decodes it (white-padded square), its
1280 EfficientNet-Lite0 features, and scikit-learn's LogisticRegression on articleType. Prints the probe's test
accuracy and the milliseconds a photo (decode + features, 2 threads) per size. The chosen size is
huse_core.model.backbones.LITE0_IMAGE_SIZE.
"""

from __future__ import annotations

import argparse
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from bench.common import write_result

from huse_core.config import ModelConfig
from huse_core.data.images import decode_image
from huse_core.model.towers import ImageTower


def features(tower: ImageTower, paths: list[str], size: int) -> np.ndarray:
    """The frozen backbone's features of `paths`' photos, decoded and normalised as training does."""
    out = []
    for i in range(0, len(paths), 64):
        px = np.stack([decode_image(p, size) for p in paths[i : i + 64]])
        out.append(tower.features(torch.from_numpy(px)).numpy())
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="metadata.csv of the unpacked catalogue")
    parser.add_argument("--sizes", default="128,160,192")
    parser.add_argument("--train", type=int, default=5000)
    parser.add_argument("--test", type=int, default=2000)
    args = parser.parse_args()
    from sklearn.linear_model import LogisticRegression

    torch.set_num_threads(2)
    root = Path(args.data).parent
    df = pd.read_csv(args.data, dtype=str, keep_default_na=False)
    bucket = df["title"].str.lower().map(lambda t: zlib.crc32(t.encode()) % 10)
    train = df[bucket < 8].sample(args.train, random_state=0)
    test = df[bucket >= 9].sample(args.test, random_state=0)
    tower = ImageTower(ModelConfig(backbone="lite0")).eval()
    lines = ["| size | probe test accuracy (articleType) | ms a photo |", "|---:|---:|---:|"]
    print("\n".join(lines))
    for size in (int(s) for s in args.sizes.split(",")):
        t0 = time.time()
        a = features(tower, [str(root / p) for p in train["image"]], size)
        b = features(tower, [str(root / p) for p in test["image"]], size)
        ms = (time.time() - t0) / (len(a) + len(b)) * 1000
        clf = LogisticRegression(max_iter=2000).fit(a, train["articleType"])
        lines.append(f"| {size} px | {(clf.predict(b) == test['articleType'].to_numpy()).mean():.4f} | {ms:.1f} |")
        print(lines[-1], flush=True)
    print(f"results: {write_result('studies', 'lite0-size', {'args': vars(args)}, chr(10).join(lines))}")


if __name__ == "__main__":
    main()
