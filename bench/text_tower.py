"""Text tower alone on a real catalogue: is a richer title encoder worth a full HUSE run?

Trains only the text tower + shared classifier with the class loss (every head, label smoothing 0.1, AdamW +
OneCycle as in `train`) and prints the leaf head's validation and test accuracy per epoch. Variants:
  conv        the default word Conv1D tower (ModelConfig defaults)
  bag         + a fastText-style branch: summed embeddings of the title's words and hashed word bigrams
              (32,768 buckets x 128), concatenated with the Conv1D features before the MLP
  vocabN      the default tower with a vocabulary of N words instead of 5,000 (e.g. vocab20000)

    python bench/text_tower.py --data /tmp/data/fashion-product-images-small/metadata.csv conv bag vocab20000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from huse_core.config import DataConfig, ModelConfig  # noqa: E402
from huse_core.prepare import cache_dir_for, prepare  # noqa: E402
from huse_core.training.losses import ClassLoss  # noqa: E402
from huse_core.model import MLP, TextTower  # noqa: E402

BUCKETS, BAG_DIM = 1 << 15, 128


class BagTower(nn.Module):
    """The Conv1D tower's max-pooled features next to a bag of word + hashed word-bigram embeddings."""

    def __init__(self, cfg: ModelConfig, n_tokens: int):
        super().__init__()
        self.conv_tower = TextTower(cfg, n_tokens)
        self.bag = nn.Embedding(BUCKETS, BAG_DIM, padding_idx=0)
        self.norm = nn.LayerNorm(BAG_DIM)
        self.head = MLP(cfg.conv_channels + BAG_DIM, cfg.hidden, cfg.dim, cfg.text_layers, cfg.dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.conv_tower.features(tokens)
        a, b = tokens[:, :-1], tokens[:, 1:]
        ids = torch.cat([tokens % (BUCKETS - 1), (a * 1000003 + b) % (BUCKETS - 1) + 1], 1)
        ids = ids.masked_fill(torch.cat([tokens == 0, (a == 0) | (b == 0)], 1), 0)  # 0 = padding, embeds to 0
        bag = self.bag(ids).sum(1) / (ids > 0).sum(1, keepdim=True).clamp(min=1).float().sqrt()
        return F.normalize(self.head(torch.cat([x, self.norm(bag)], 1)), dim=-1)


def run_variant(data: Path, variant: str, epochs: int, batch: int = 128, lr: float = 2e-3) -> None:
    cfg = ModelConfig(vocab_size=int(variant[5:]) if variant.startswith("vocab") else ModelConfig.vocab_size)
    data_cfg = DataConfig(catalog=str(data))
    prep = prepare(data_cfg, cfg, cache_dir_for(data_cfg, Path("/tmp")), progress=False)
    torch.manual_seed(0)
    tower = BagTower(cfg, prep.tokenizer.n_tokens) if variant == "bag" else TextTower(cfg, prep.tokenizer.n_tokens)
    classifier = nn.ModuleList(nn.Linear(cfg.dim, len(h["classes"])) for h in prep.heads)
    leaf = [h["name"] for h in prep.heads].index(prep.leaf)
    train_rows, steps = prep.split("train"), len(prep.split("train")) // batch
    opt = torch.optim.AdamW([*tower.parameters(), *classifier.parameters()], lr=lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps * epochs, pct_start=0.2)
    loss_fn = ClassLoss({h["name"]: h["kind"] for h in prep.heads}, label_smoothing=0.1)

    def accuracy(split: str) -> float:
        rows, y = prep.split(split), prep.labels[prep.leaf][prep.split(split)]
        tower.eval()
        with torch.no_grad():
            pred = classifier[leaf](tower(torch.from_numpy(prep.tokens[rows])) * cfg.logit_scale).argmax(1).numpy()
        tower.train()
        return float((pred == y)[y >= 0].mean())

    t0 = time.time()
    for epoch in range(epochs):
        order = np.random.default_rng(epoch).permutation(train_rows)
        for step in range(steps):
            rows = np.sort(order[step * batch : (step + 1) * batch])
            emb = tower(torch.from_numpy(prep.tokens[rows])) * cfg.logit_scale
            logits = {"text": {h["name"]: layer(emb) for h, layer in zip(prep.heads, classifier)}}
            loss = loss_fn(logits, {h: torch.from_numpy(y[rows]) for h, y in prep.labels.items()})
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        print(f"{variant} epoch {epoch + 1}: val {accuracy('val') * 100:.2f} % test {accuracy('test') * 100:.2f} % "
              f"({time.time() - t0:.0f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the catalogue CSV (e.g. the real one, unpacked)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("variants", nargs="+", help="conv, bag, vocabN")
    args = parser.parse_args()
    torch.set_num_threads(2)
    for variant in args.variants:
        run_variant(args.data, variant, args.epochs)


if __name__ == "__main__":
    main()
