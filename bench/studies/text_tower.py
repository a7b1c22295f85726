"""Text tower alone on a catalogue: which title encoder should the default be? Compared on VALIDATION.

Trains only the text tower + shared classifier with the class loss (every head, label smoothing 0.1, AdamW +
OneCycle as in `train`), prints the leaf head's validation and test accuracy per epoch, then one summary line
per variant with every single-label head's validation / test accuracy at the last epoch. Variants:
  conv        the word Conv1D tower (text_backbone conv)
  ngram       TF-IDF-weighted hashed word 1-2 + char 3-5-grams through an EmbeddingBag (text_backbone ngram)
  conv+ngram  both, concatenated before the MLP (text_backbone conv+ngram)
  bag         conv + a fastText-style branch: summed embeddings of the title's words and hashed word bigrams
              (32,768 buckets x 128), concatenated with the Conv1D features before the MLP (README, Nov 2026)
  vocabN      the conv tower with a vocabulary of N words instead of 5,000 (e.g. vocab20000)
  tfidf       reference: scikit-learn TF-IDF (word 1-2 + char_wb 2-5, sublinear, min_df 2) + LogisticRegression
              (C=10, lbfgs) per head, fitted on the train split's titles
A model variant takes ModelConfig overrides after a colon: ngram:ngram_dim=128,ngram_dropout=0.2; two more are
bench-only experiments: init=STD (the n-gram table's init) and bn=1 (BatchNorm over the features before the MLP).

    python -m bench.studies.text_tower --data /tmp/data/fashion-product-images-small/metadata.csv conv ngram conv+ngram
    python -m bench.studies.text_tower --data /tmp/other-shop/products.csv --id-col sku --text-col product_name \\
        --image-col photo --hierarchy-col category_path --batch-size 32 --epochs 30 conv ngram conv+ngram tfidf
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.common import write_result
from huse_core.config import DataConfig, ModelConfig
from huse_core.model.huse import text_tower
from huse_core.model.towers import MLP, TextTower
from huse_core.prepare import cache_dir_for, prepare
from huse_core.training.losses import ClassLoss

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


def model_config(variant: str) -> tuple[ModelConfig, dict[str, float]]:
    """ModelConfig of a variant name with its ":key=value,..." overrides (typed like the field's default), and
    the bench-only overrides: init=STD re-initialises the n-gram table N(0, STD)."""
    name, _, overrides = variant.partition(":")
    cfg = ModelConfig(text_backbone=name if name in ("conv", "ngram", "conv+ngram") else "conv")
    if name.startswith("vocab"):
        cfg.vocab_size = int(name[5:])
    types = {f.name: type(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    extra = {}
    for item in filter(None, overrides.split(",")):
        key, value = item.split("=")
        if key not in types:
            extra[key] = float(value)
        else:
            setattr(cfg, key, types[key](float(value)) if types[key] is int else types[key](value))
    return cfg, extra


def single_heads(prep) -> list[str]:
    return [h["name"] for h in prep.heads if h["kind"] == "single"]


SUMMARIES: list[str] = []  # one line per variant, written to the result at the end


def summary(variant: str, prep, val: dict, test: dict, extra: str = "") -> None:
    cols = " | ".join(f"{h} val {val[h] * 100:.2f} test {test[h] * 100:.2f}" for h in single_heads(prep))
    print(f"SUMMARY {variant}: {cols}{extra}", flush=True)
    SUMMARIES.append(f"{variant}: {cols}{extra}")


def run_tfidf(prep, variant: str) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_union

    t0 = time.time()
    titles = prep.catalog.df["title"].to_numpy(dtype=object)
    tr, va, te = (prep.split(s) for s in ("train", "val", "test"))
    vec = make_union(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2),
                     TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2))
    x_tr = vec.fit_transform(titles[tr])
    x_va, x_te = vec.transform(titles[va]), vec.transform(titles[te])
    val, test = {}, {}
    for head in single_heads(prep):
        y = prep.labels[head]
        known = tr[y[tr] >= 0]
        clf = LogisticRegression(C=10.0, max_iter=1000).fit(x_tr[np.isin(tr, known)], y[known])
        for rows, x, out in ((va, x_va, val), (te, x_te, test)):
            ok = y[rows] >= 0
            out[head] = float((clf.predict(x)[ok] == y[rows][ok]).mean())
    summary(variant, prep, val, test, f" ({time.time() - t0:.0f} s)")


def run_variant(data_cfg: DataConfig, variant: str, epochs: int, batch: int, lr: float) -> None:
    cfg, extra = model_config(variant)
    prep = prepare(data_cfg, cfg, cache_dir_for(data_cfg, Path("/tmp")), progress=False)
    if variant == "tfidf":
        return run_tfidf(prep, variant)
    torch.manual_seed(0)
    n_tokens = prep.tokenizer.n_tokens
    tower = BagTower(cfg, n_tokens) if variant == "bag" else text_tower(cfg, n_tokens, prep.tokenizer.idf)
    if extra.get("bn"):  # experiment: BatchNorm over the tower's features before its MLP
        tower.bn = nn.BatchNorm1d(tower.head.blocks[0][0].in_features)
        plain = tower.features
        tower.features = lambda x: tower.bn(plain(x))
    if "init" in extra:
        with torch.no_grad():
            tower.ngrams.bag.weight.normal_(0, extra["init"])[0] = 0
    classifier = nn.ModuleList(nn.Linear(cfg.dim, len(h["classes"])) for h in prep.heads)
    names = [h["name"] for h in prep.heads]
    train_rows, steps = prep.split("train"), max(1, len(prep.split("train")) // batch)
    opt = torch.optim.AdamW([*tower.parameters(), *classifier.parameters()], lr=lr, weight_decay=5e-4, fused=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps * epochs, pct_start=0.2)
    loss_fn = ClassLoss({h["name"]: h["kind"] for h in prep.heads}, label_smoothing=0.1)

    def accuracy(split: str) -> dict[str, float]:
        rows = prep.split(split)
        tower.eval()
        with torch.no_grad():
            emb = torch.cat([tower(prep.text_input(rows[i : i + 1024])) for i in range(0, len(rows), 1024)])
        tower.train()
        out = {}
        for head in single_heads(prep):
            y = prep.labels[head][rows]
            pred = classifier[names.index(head)](emb * cfg.logit_scale).argmax(1).numpy()
            out[head] = float((pred == y)[y >= 0].mean())
        return out

    t0 = time.time()
    for epoch in range(epochs):
        order = np.random.default_rng(epoch).permutation(train_rows)
        for step in range(steps):
            rows = np.sort(order[step * batch : (step + 1) * batch])
            emb = tower(prep.text_input(rows)) * cfg.logit_scale
            logits = {"text": {h["name"]: layer(emb) for h, layer in zip(prep.heads, classifier)}}
            loss = loss_fn(logits, {h: torch.from_numpy(y[rows]) for h, y in prep.labels.items()})
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if epoch == epochs - 1 or (epoch + 1) % max(1, epochs // 8) == 0:
            val, test = accuracy("val"), accuracy("test")
            print(f"{variant} epoch {epoch + 1}: val {val[prep.leaf] * 100:.2f} % test {test[prep.leaf] * 100:.2f} % "
                  f"({time.time() - t0:.0f} s)", flush=True)
    n_params = sum(p.numel() for p in tower.parameters())
    summary(variant, prep, val, test, f" ({(time.time() - t0) / (steps * epochs) * 1000:.0f} ms/step, "
            f"{n_params / 1e6:.1f} M parameters)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the catalogue CSV (e.g. the real one, unpacked)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=2)
    for col in ("id-col", "text-col", "image-col", "hierarchy-col"):
        parser.add_argument(f"--{col}", default="", help="as in `train`")
    parser.add_argument("--attributes", default="", help="comma-separated attribute columns, as in `train`")
    parser.add_argument("variants", nargs="+", help="conv, ngram, conv+ngram, bag, vocabN, tfidf (+ :overrides)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data_cfg = DataConfig(catalog=str(args.data), id_col=args.id_col, text_col=args.text_col,
                          image_col=args.image_col, hierarchy_col=args.hierarchy_col,
                          attributes=[a for a in args.attributes.split(",") if a])
    for variant in args.variants:
        run_variant(data_cfg, variant, args.epochs, args.batch_size, args.lr)
    path = write_result("studies", "text-tower", {"args": {k: str(v) for k, v in vars(args).items()}},
                        "\n\n".join(SUMMARIES))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
