"""The catalogue audit end to end on a trained shop with planted errors: each kind found, plain rows, decisions stored
with the run, the corrected export, the CLI and the add-time duplicate flag, the Audit page, one-line errors for bad
input. (Out-of-sample label scores: test_audit_labels.py; duplicate pieces: test_audit_duplicates.py.)"""

from __future__ import annotations

import json
import multiprocessing
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from huse_core.audit import AuditError, audit, export_corrected, read_decisions, record

N_SHOP, PER_KIND = 600, 4


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory) -> Path:
    """A small demo shop with PER_KIND planted errors of each kind, trained (small model) and indexed."""
    import torch

    from huse_core.config import DataConfig, LossConfig, ModelConfig, TrainConfig
    from huse_core.data.demo import generate_demo
    from huse_core.retrieval.build import build_index
    from huse_core.training.train import train

    root = tmp_path_factory.mktemp("audit")
    csv = generate_demo(root / "shop", n_products=N_SHOP, seed=0, progress=False, planted=PER_KIND)
    threads = torch.get_num_threads()
    try:
        model = ModelConfig(cnn_width=16, hidden=128, dim=64, conv_channels=32, word_dim=16)
        train(DataConfig(catalog=str(csv), image_size=32), model, LossConfig(),
              TrainConfig(epochs=24, batch_size=32, lr=3e-3, threads=1), root / "run", progress=False)
    finally:
        torch.set_num_threads(threads)
    build_index(root / "run", progress=False, with_map=False)
    return root / "run"


@pytest.fixture(scope="module")
def findings(planted_run) -> list[dict]:
    return audit(planted_run)


def _truth(run: Path) -> dict:
    meta = json.loads((run / "run.json").read_text())
    return json.loads((Path(meta["data"]["catalog"]).parent / "planted.json").read_text())


def _ids(rows, kind, heads=None) -> list[str]:
    return [r["id"] for r in rows if r["kind"] == kind and (heads is None or r["head"] in heads)]


def test_planted_wrong_paths_are_found_near_the_top(planted_run, findings):
    planted = {t["id"] for t in _truth(planted_run)["labels"]}
    paths = _ids(findings, "labels", ("category path",))
    top = paths[: N_SHOP // 25]  # the top 4 % of the shop (the towers memorised some planted labels)
    assert planted <= set(top), (planted, top)
    row = next(r for r in findings if r["id"] in planted and r["head"] == "category path")
    true = next(t for t in _truth(planted_run)["labels"] if t["id"] == row["id"])["true"]
    assert row["suggested"].split(" › ") == true and row["current"].split(" › ") != true


def test_planted_photo_swaps_are_found(planted_run, findings):
    swapped = {i for t in _truth(planted_run)["swaps"] for i in (t["id"], t["partner"])}
    flagged = _ids(findings, "mismatch")  # the top 1 % of the shop, at least 20 (3 % of this one)
    # at chance, 20 of 604 would hold a quarter of one swapped listing; this small model's photo tower is weak (about
    # half its photos classed right), so half of them is the bar here (the 44k benchmark measures the real recall)
    assert len(swapped & set(flagged)) >= 0.5 * len(swapped), flagged


def test_planted_duplicates_are_found(planted_run, findings):
    dups = {(t["id"], t["source"]) for t in _truth(planted_run)["duplicates"]}
    rows = [r for r in findings if r["kind"] == "duplicates"]
    found = {(r["id"], r["suggested"].removeprefix("duplicate of ")) for r in rows}
    found |= {(b, a) for a, b in found}
    assert dups <= found, (dups, found)
    assert all(r["cluster"] and r["others"] for r in rows)


def test_rows_are_plain_and_top_limits_each_kind(planted_run):
    rows = audit(planted_run, kinds="labels,duplicates", top=2)
    assert {r["kind"] for r in rows} <= {"labels", "duplicates"}
    assert sum(r["kind"] == "labels" for r in rows) == 2
    json.dumps(rows)  # plain values only
    with pytest.raises(AuditError, match="unknown audit kind"):
        audit(planted_run, kinds="labels,spelling")


def _record_many(args):
    run, start = args
    for k in range(start, start + 20):
        record(run, [{"kind": "labels", "id": str(k), "head": "gender", "current": "a", "suggested": "b"}], "keep")


def test_decisions_persist_across_reopen_and_concurrent_writers(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    record(run, [{"kind": "labels", "id": "1", "head": "gender", "current": "Men", "suggested": "Women"}], "skip")
    record(run, [{"kind": "labels", "id": "1", "head": "gender", "current": "Men", "suggested": "Women"}], "accept")
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        pool.map(_record_many, [(run, 100), (run, 200), (run, 300)])
    got = read_decisions(run)  # a fresh connection, as after a restart
    assert len(got) == 61
    assert got.set_index("id").loc["1", "decision"] == "accept"
    with pytest.raises(ValueError, match="unknown decision"):
        record(run, [], "maybe")


def test_export_applies_accepted_decisions_and_never_touches_the_input(planted_run, findings, tmp_path):
    run = Path(shutil.copytree(planted_run, tmp_path / "run"))
    src = Path(json.loads((run / "run.json").read_text())["data"]["catalog"])
    before = src.read_bytes()
    path_row = next(r for r in findings if r["head"] == "category path")
    dup_row = next(r for r in findings if r["kind"] == "duplicates")
    record(run, [path_row, dup_row], "accept")
    record(run, [next(r for r in findings if r["kind"] == "mismatch")], "keep")
    result = export_corrected(run)
    assert src.read_bytes() == before and Path(result["path"]) != src
    out = pd.read_csv(result["path"], dtype=str)
    assert result == {"path": result["path"], "changed": 1, "removed": 1, "rows": len(out)}
    fixed = out.set_index("id").loc[path_row["id"]]
    assert " › ".join(fixed[["masterCategory", "subCategory", "articleType"]]) == path_row["suggested"]
    assert dup_row["id"] not in set(out["id"])
    with pytest.raises(ValueError, match="input catalogue"):
        export_corrected(run, src)


def test_a_run_without_index_gets_one_line(tiny_trained_run):
    with pytest.raises(AuditError, match="no search index") as err:
        audit(tiny_trained_run)
    assert "\n" not in str(err.value)


def test_a_catalogue_changed_since_training_gets_one_line(planted_run, tmp_path):
    run = Path(shutil.copytree(planted_run, tmp_path / "run"))
    meta = json.loads((run / "run.json").read_text())
    shop = Path(shutil.copytree(Path(meta["data"]["catalog"]).parent, tmp_path / "shop"))
    df = pd.read_csv(shop / "metadata.csv", dtype=str)
    df.loc[3, "articleType"] = "Jeans" if df.loc[3, "articleType"] != "Jeans" else "Shirts"
    df.to_csv(shop / "metadata.csv", index=False)
    meta["data"]["catalog"] = str(shop / "metadata.csv")
    (run / "run.json").write_text(json.dumps(meta))
    with pytest.raises(AuditError, match="changed since") as err:
        audit(run)
    assert "\n" not in str(err.value) and "index" in str(err.value)


def test_cli_audit_json_csv_and_add_time_flag(planted_run, tmp_path, capsys):
    from huse_core.cli import main

    assert main(["audit", "--run", str(planted_run), "--kinds", "duplicates", "--json", "--quiet"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and {r["kind"] for r in rows} == {"duplicates"}
    out = tmp_path / "findings.csv"
    assert main(["audit", "--run", str(planted_run), "--top", "3", "--csv", str(out), "--quiet"]) == 0
    assert len(pd.read_csv(out)) <= 9
    assert main(["audit", "--run", str(planted_run), "--kinds", "nope"]) == 2
    capsys.readouterr()

    run = Path(shutil.copytree(planted_run, tmp_path / "run"))
    meta = json.loads((run / "run.json").read_text())
    shop = Path(meta["data"]["catalog"]).parent
    src = pd.read_csv(shop / "metadata.csv", dtype=str).iloc[0]
    shutil.copy(shop / src["image"], tmp_path / "same.png")  # new products' photos sit beside their table
    new = pd.DataFrame([{"title": src["title"], "image": "same.png"}])
    new.to_csv(tmp_path / "new.csv", index=False)
    assert main(["add", "--run", str(run), "--catalog", str(tmp_path / "new.csv"), "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["resembling"] and result["resembling"][0]["like"] == src["id"], result


def test_audit_page_accept_then_export(tiny_demo_csv, tiny_indexed_run, tmp_path_factory, monkeypatch):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    from test_app import APP, app_folder

    root = app_folder(tiny_demo_csv, tiny_indexed_run, tmp_path_factory)
    run = root / "runs" / "demo"
    shutil.rmtree(run / "audit", ignore_errors=True)
    src = Path(json.loads((run / "run.json").read_text())["data"]["catalog"])
    before = src.read_bytes()
    monkeypatch.setenv("HUSE_RUNS_DIR", str(root / "runs"))
    monkeypatch.setenv("HUSE_DATA_DIR", str(root / "data"))
    monkeypatch.delenv("HUSE_RUN", raising=False)
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    at.switch_page("pages/audit.py").run()
    assert not at.exception
    at.button(key="audit_run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    keys = {b.key for b in at.button}
    kind = next(k for k in ("labels", "mismatch", "duplicates") if f"audit_{k}_0_accept" in keys)
    at.button(key=f"audit_{kind}_0_accept").click().run()
    decided = read_decisions(run)
    assert list(decided["decision"]) == ["accept"]
    at.switch_page("pages/audit.py").run()  # a new visit (as after a restart) reads the decision back
    at.button(key="audit_export").click().run()
    assert not at.exception and at.success, [e.value for e in at.error]
    out = Path(json.loads((run / "run.json").read_text())["data"]["catalog"]).with_name("metadata.corrected.csv")
    assert out.is_file() and src.read_bytes() == before
    shutil.rmtree(run / "audit", ignore_errors=True)
    out.unlink()


def test_cli_audit_csv_is_formula_safe(tmp_path, monkeypatch):
    """`audit --csv` writes as every CSV of the product: a title that starts a formula goes out as text."""
    import sys

    from huse_core.audit import COLUMNS
    from huse_core.cli import main

    row = dict.fromkeys(COLUMNS, "")
    row.update(kind="labels", id="7", title='=HYPERLINK("http://x","y")', score=0.9, current="Shirts",
               suggested="Tshirts")
    monkeypatch.setattr(sys.modules["huse_core.audit"], "audit", lambda *a, **k: [row])
    out = tmp_path / "findings.csv"
    assert main(["audit", "--run", str(tmp_path), "--csv", str(out), "--quiet"]) == 0
    written = pd.read_csv(out, dtype=str)
    assert written.loc[0, "title"] == "'=HYPERLINK(\"http://x\",\"y\")"
    assert written.loc[0, "suggested"] == "Tshirts"


def test_a_cropped_copy_is_flagged_and_a_same_title_colour_variant_is_not(planted_run):
    """End to end on the trained shop: list one product again as a cropped, re-encoded photo under a reworded
    title, and another in a second colour under the very same title; only the copy is flagged, by the calibrated
    rule (synthetic copies of the shop's own products), not the fixed fallback."""
    from PIL import Image

    from huse_core.audit.duplicates import duplicate_pairs, flagged
    from huse_core.audit.inputs import load_inputs
    from huse_core.data.images import decode_image

    inputs = load_inputs(planted_run)
    df = inputs.products
    folder = Path(df["image"].iat[0]).parent
    spread = [np.asarray(Image.open(p).convert("RGB"), np.float32).std(2).mean() for p in df["image"][:80]]
    a, b = (int(i) for i in np.argsort(spread)[-2:])  # two colourful products
    with Image.open(df["image"].iat[a]) as im:
        im = im.convert("RGB")
        w, h = im.size
        im.crop((w // 14, h // 18, w - w // 16, h - h // 14)).save(folder / "copy_a.jpg", "JPEG", quality=70)
    with Image.open(df["image"].iat[b]) as im:
        Image.fromarray(np.asarray(im.convert("RGB"))[:, :, ::-1]).save(folder / "variant_b.jpg", "JPEG", quality=90)
    extra = pd.DataFrame([{**df.iloc[a].to_dict(), "id": "copy_a", "image": str(folder / "copy_a.jpg"),
                           "title": df["title"].iat[a].upper() + " - New"},
                          {**df.iloc[b].to_dict(), "id": "variant_b", "image": str(folder / "variant_b.jpg")}])
    pixels = np.stack([decode_image(p, inputs.run.image_size) for p in extra["image"]])
    inputs.products = pd.concat([df, extra], ignore_index=True)
    inputs.image_emb = np.vstack([inputs.image_emb, inputs.run.encode_images(pixels)])
    inputs.text_emb = np.vstack([inputs.text_emb, inputs.run.encode_texts(list(extra["title"]))])
    pairs = duplicate_pairs(inputs)
    n = len(df)
    hit = flagged(pairs)
    pair = {(int(x), int(y)): k for k, (x, y) in enumerate(zip(pairs["a"], pairs["b"]))}
    assert pairs["calibration"]["copies"] >= 30 and "cut" in pairs["calibration"]
    k = pair[(a, n)]
    rival = [(int(x), int(y), float(sc)) for x, y, sc in zip(pairs["a"], pairs["b"], pairs["score"])
             if a in (x, y) or n in (x, y)]
    assert hit[k], ({key: pairs[key][k] for key in ("photo", "title", "aligned", "score")}, pairs["threshold"],
                    sorted(rival, key=lambda r: -r[2])[:5])
    k = pair.get((b, n + 1))
    assert k is not None and pairs["exact"][k] == "same title" and not hit[k], (
        {key: pairs[key][k] for key in ("photo", "title", "aligned", "score")}, pairs["threshold"])
