"""The catalogue audit measured on a copy of a catalogue with seeded errors, beside the peers a data scientist uses.

    python bench/audit.py inject --catalog /work/real/fashion-product-images-small/metadata.csv --out DIR
    python -m huse_core train --catalog DIR/metadata.csv --out RUN && python -m huse_core index --run RUN
    python bench/audit.py --run RUN --truth DIR/truth.json --variant noisy44k        # measure (the default command)
    python bench/audit.py sample --run CLEAN_RUN                                     # 30 findings to check by eye

Per kind: precision at the number injected, recall at twice that, AUROC; mismatches also recall at 1 % flagged
(across categories and within a category, another colour); duplicates also precision / recall of the flagged set,
with the catalogue's own duplicates (same original title, or photo files byte-identical originally or as audited)
counted apart. Peers on the same rows: cleanlab find_label_issues on 5-fold TF-IDF + logistic-regression
probabilities (labels), photo-class vs title-class disagreement (mismatches), perceptual hash + normalised title
(duplicates).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from audit_duplicates import measure_duplicates, original_photos, peer_pairs
from common import write_result

from huse_core.audit.core import label_probs, mismatch_probs
from huse_core.audit.duplicates import duplicate_findings, duplicate_pairs
from huse_core.audit.inputs import load_inputs
from huse_core.audit.labels import issues, label_findings, quality
from huse_core.audit.mismatch import evidence, mismatch_findings, mismatch_scores


def ranking(truth: np.ndarray, score: np.ndarray, n: int | None = None) -> dict:
    """Precision at n (default: the number true), recall at 2n, AUROC."""
    n = n or int(truth.sum())
    top = np.argsort(-score, kind="stable")
    return {"n_true": int(truth.sum()), "precision_at_n": round(float(truth[top[:n]].mean()), 4),
            "recall_at_2n": round(float(truth[top[: 2 * n]].sum() / max(1, truth.sum())), 4),
            "auroc": round(float(roc_auc_score(truth, score)), 4)}


def tfidf_oof(titles, y: np.ndarray, folds: int = 5) -> np.ndarray:
    """The peer's out-of-sample probabilities: 5-fold TF-IDF (words 1-2) + logistic regression on the titles."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    n_classes = int(y.max()) + 1
    x = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True).fit_transform([t.lower() for t in titles])
    fold = np.random.default_rng(0).permutation(len(y)) % folds
    out = np.zeros((len(y), n_classes), np.float32)
    for k in range(folds):
        tr, te = np.flatnonzero((fold != k) & (y >= 0)), np.flatnonzero(fold == k)
        clf = LogisticRegression(C=5.0, max_iter=100).fit(x[tr], y[tr])
        out[np.ix_(te, clf.classes_)] = clf.predict_proba(x[te])
    return out


def measure_labels(inputs, truth, both, timings) -> tuple[dict, np.ndarray]:
    ids = inputs.products["id"].astype(str).to_numpy()
    leaf = inputs.run.leaf_head
    y = inputs.codes(leaf)
    injected = np.isin(ids, [t["id"] for t in truth["labels"]])
    kinds = {t["id"]: t["kind"] for t in truth["labels"]}
    ours = 1 - np.nan_to_num(quality(y, both[leaf.name]), nan=1.0)
    t = time.perf_counter()
    peer_p = tfidf_oof(inputs.products["title"].tolist(), y)
    timings["peer_tfidf_lr_s"] = round(time.perf_counter() - t, 1)
    peer = 1 - np.nan_to_num(quality(y, peer_p), nan=1.0)
    out = {}
    for name, score, probs in (("huse", ours, both[leaf.name]), ("cleanlab_tfidf_lr", peer, peer_p)):
        flagged = issues(y, probs)
        top = np.argsort(-score)[: 2 * int(injected.sum())]
        out[name] = ranking(injected, score) | {
            "cleanlab_flagged": int(flagged.sum()),
            "flagged_precision": round(float(injected[flagged].mean()), 4) if flagged.any() else 0.0,
            "flagged_recall": round(float(injected[flagged].sum() / injected.sum()), 4),
            "recall_at_2n_by_kind": {k: round(float(np.mean([ids[i] in set(ids[top]) for i in np.flatnonzero(
                injected) if kinds[ids[i]] == k])), 4) for k in ("confusable", "random")}}
    return out, peer_p


def measure_mismatch(inputs, truth, probs, peer_text) -> dict:
    ids = inputs.products["id"].astype(str).to_numpy()
    kind = {t["id"]: t["kind"] for t in truth["swaps"]}
    partner = {t["id"]: t["partner"] for t in truth["swaps"]}
    swapped = np.array([i in kind for i in ids])
    scores = mismatch_scores(inputs, evidence(inputs, *probs))
    ours, heads = scores.score, scores.heads
    leaf = inputs.run.leaf
    photo = inputs.run.probabilities(image_emb=inputs.image_emb)[leaf]["image"]  # the run's own photo head
    disagree = photo.argmax(1) != peer_text.argmax(1)
    peer = disagree + 0.5 * photo.max(1) * peer_text.max(1)  # disagreeing first, the surer ones first among them
    k = len(ids) // 100
    out = {"heads": heads}
    for name, score in (("huse", ours), ("photo_vs_title_class", peer)):
        flagged = np.zeros(len(ids), bool)
        flagged[np.argsort(-score)[:k]] = True
        out[name] = ranking(swapped, score) | {"recall_at_1pct": {
            kd: round(float(np.mean([flagged[i] for i in np.flatnonzero(swapped) if kind[ids[i]] == kd])), 4)
            for kd in ("across", "colour")}}
    out["photo_vs_title_class"]["disagreeing"] = int(disagree.sum())
    named = [i for i in np.flatnonzero(swapped) if scores.partner[i] >= 0 and ids[scores.partner[i]] == partner[ids[i]]]
    out["huse"]["partner_named"] = {"right": len(named), "of_swapped": int(swapped.sum()),
                                    "mutual_right": int(scores.mutual[named].sum()),
                                    "mutual_pairs_found": int(scores.mutual.sum())}
    return out


def measure(args) -> None:
    truth = json.loads(Path(args.truth).read_text())
    timings: dict = {}
    t0 = time.perf_counter()

    def lap(name: str) -> None:
        timings[name] = round(time.perf_counter() - t0 - sum(v for k, v in timings.items() if k.endswith("_step")), 1)

    inputs = load_inputs(args.run)  # what `huse audit` does, step by step, timed
    lap("load_step")
    print("loaded", timings, flush=True)
    both = label_probs(inputs)
    rows = label_findings(inputs, both)
    lap("labels_step")
    probs = mismatch_probs(inputs)
    rows += mismatch_findings(inputs, *probs)
    lap("mismatch_step")
    pairs = duplicate_pairs(inputs)
    rows += duplicate_findings(inputs, pairs)
    lap("duplicates_step")
    timings["huse_audit_s"] = round(time.perf_counter() - t0, 1)
    labels, peer_text = measure_labels(inputs, truth, both, timings)
    import pandas as pd

    src = pd.read_csv(truth["source"], dtype=str, keep_default_na=False)
    layout = truth.get("layout", {"id": "id", "title": "title"})  # the other shop's columns are named otherwise
    original = dict(zip(src[layout["id"]], src[layout["title"]]))
    original |= {t["id"]: t["source_title"] for t in truth["duplicates"]}
    result = {"run": args.run, "n_products": len(inputs), "findings": {k: sum(r["kind"] == k for r in rows)
                                                                       for k in ("labels", "mismatch", "duplicates")},
              "labels": labels, "mismatch": measure_mismatch(inputs, truth, probs, peer_text),
              "duplicates": measure_duplicates(inputs, truth, pairs, original, original_photos(truth),
                                               peer_pairs(inputs)),
              "seconds": timings}
    write_result("audit", args.variant, result, markdown=markdown(result))
    print(json.dumps(result, indent=1), flush=True)


def markdown(r: dict) -> str:
    lab, mm, du = r["labels"], r["mismatch"], r["duplicates"]
    lines = [f"# Catalogue audit on {r['n_products']:,} products ({r['run']})", "",
             f"`huse audit` took {r['seconds']['huse_audit_s']} s; findings {r['findings']}.", "",
             "| finding | method | precision@N | recall@2N | AUROC | other |", "|---|---|---|---|---|---|"]
    for name, m in lab.items():
        lines.append(f"| wrong category path (N={m['n_true']}) | {name} | {m['precision_at_n']} | "
                     f"{m['recall_at_2n']} | {m['auroc']} | cleanlab flags {m['cleanlab_flagged']} "
                     f"(P {m['flagged_precision']}, R {m['flagged_recall']}); R@2N {m['recall_at_2n_by_kind']} |")
    for name in ("huse", "photo_vs_title_class"):
        m = mm[name]
        lines.append(f"| photo swapped (N={m['n_true']}) | {name} | {m['precision_at_n']} | {m['recall_at_2n']} | "
                     f"{m['auroc']} | recall at 1 % flagged {m['recall_at_1pct']} |")
    for name in ("huse", "phash_or_title"):
        if name not in du:
            continue
        m = du[name]
        lines.append(f"| near-duplicate (N={du['injected']}) | {name} | "
                     f"{m['precision_without_catalogue_duplicates']} (flagged set, the catalogue's own duplicates "
                     f"apart; same-title apart {m['precision_without_same_title']}; raw {m['precision']}) | "
                     f"{m['recall']} (flagged set) | pairs {du['pair_auroc']} | flagged pairs {m['flagged_pairs']}: "
                     f"catalogue same title {m['same_title_in_catalogue']}, same photo {m['same_photo_in_catalogue']}"
                     f" ({m['catalogue_duplicates']} either), other {m['other']} |")
    lines += ["", f"Duplicate rule calibration: {du.get('calibration', {})}", "",
              f"Duplicates with the cut moved (recall, precision with the catalogue's own apart, other pairs): "
              f"{du.get('cut_sweep', {})}"]
    for key, what in (("same_title_sample", "same original title (photos differ)"),
                      ("same_photo_sample", "same photo bytes, originally or as audited"), ("other_sample", "neither")):
        lines += ["", f"Catalogue pairs flagged as duplicates, {what} (seeded sample):", ""]
        lines += [f"- {s['a']} / {s['b']}: {s['title']} / {s['title_b']} (score {s['score']}"
                  f"{', ' + s['exact'] if s['exact'] else ''})" for s in du[key]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("inject", help="write a copy of a catalogue with seeded errors and truth.json")
    p.add_argument("--catalog", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--layout", choices=["fashion", "other"], default="fashion")
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("sample", help="30 findings of a run (10 a kind, seeded) as a contact sheet to check by eye")
    p.add_argument("--run", required=True)
    p.add_argument("--out", default="/tmp/audit-sample")
    p.add_argument("--findings", help="a `huse audit --csv` file of the run (else the audit runs now)")
    parser.add_argument("--run", default="/work/runs/noisy44k")
    parser.add_argument("--truth", default="/work/runs/noisy44k-data/truth.json")
    parser.add_argument("--variant", default="noisy44k")
    args = parser.parse_args()
    if args.command == "inject":
        from audit_inject import LAYOUTS, inject

        truth = inject(Path(args.catalog), Path(args.out), LAYOUTS[args.layout], seed=args.seed)
        print({k: len(v) for k, v in truth.items() if isinstance(v, list)}, "rows", truth["n_rows"])
    elif args.command == "sample":
        from audit_sample import contact_sheet

        contact_sheet(args.run, Path(args.out), args.findings)
    else:
        measure(args)


if __name__ == "__main__":
    main()
