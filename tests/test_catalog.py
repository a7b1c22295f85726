"""Tests for huse_core.data.catalog: reading shop catalogues, bad rows, heads, grouped splits, saved heads."""

from __future__ import annotations

import tarfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from huse_core.data.catalog import Head, load_catalog, normalise_title
from huse_core.config import DataConfig

ARTICLES = {
    "Tshirts": ("Apparel", "Topwear"),
    "Jeans": ("Apparel", "Bottomwear"),
    "Watches": ("Accessories", "Watches"),
}
COLOURS = ["Red", "Blue", "Black"]


def png(path: Path, colour=(200, 40, 40)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 8), colour).save(path)


def fashion_rows(n: int = 60) -> list[dict]:
    rows = []
    for i in range(n):
        article = list(ARTICLES)[i % 3]
        master, sub = ARTICLES[article]
        colour = COLOURS[(i // 3) % 3]
        rows.append({"id": str(1000 + i), "image": f"images/{1000 + i}.png", "title": f"Brand{i} {colour} {article}",
                     "gender": ["Men", "Women"][i % 2], "masterCategory": master, "subCategory": sub,
                     "articleType": article, "baseColour": colour, "season": "Summer", "usage": "Casual"})
    return rows


def write(tmp_path: Path, rows: list[dict], name: str = "metadata.csv", image_col: str = "image") -> Path:
    df = pd.DataFrame(rows)
    for rel in df.get(image_col, pd.Series(dtype=str)).dropna():
        if not str(rel).startswith(("/", "..")):
            png(tmp_path / rel)
    path = tmp_path / name
    df.to_parquet(path) if name.endswith(".parquet") else df.to_csv(path, index=False)
    return path


def load(path: Path, **kw):
    return load_catalog(DataConfig(catalog=str(path), **kw), progress=False)


def test_auto_detects_fashion_layout(tmp_path):
    cat = load(write(tmp_path, fashion_rows()))
    assert cat.levels == ["masterCategory", "subCategory", "articleType"]
    assert [h.name for h in cat.heads] == cat.levels + ["gender", "baseColour", "season", "usage"]
    assert [h.level for h in cat.heads[:3]] == [0, 1, 2] and cat.heads[3].level is None
    assert cat.leaf == "articleType" and cat.head("articleType").classes == ["Jeans", "Tshirts", "Watches"]
    assert list(cat.df.columns[:4]) == ["id", "title", "image", "split"] and len(cat.df) == 60
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in cat.df["image"])
    assert cat.df["id"].iloc[0] == "1000" and cat.report.n_kept == 60 and cat.report.bad_rows == {}
    labels = cat.labels()
    assert labels["articleType"].dtype == np.int64 and labels["articleType"].shape == (60,)
    assert cat.labels(np.array([1, 0]))["articleType"].tolist() == [0, 1]  # rows 1, 0: Jeans, Tshirts
    assert cat.parent_paths()["Jeans"] == ["Apparel", "Bottomwear", "Jeans"]
    with pytest.raises(KeyError, match="heads are"):
        cat.head("price")


def test_images_by_id_without_image_column(tmp_path):
    rows = fashion_rows(12)
    for r in rows:
        png(tmp_path / "images" / f"{r.pop('image').split('/')[1].replace('.png', '.jpg')}")
    cat = load(write(tmp_path, rows))
    assert len(cat.df) == 12 and cat.df["image"].iloc[0].endswith("images/1000.jpg")


def test_no_image_column_and_no_files(tmp_path):
    rows = fashion_rows(5)
    for r in rows:
        del r["image"]
    with pytest.raises(ValueError, match="no image column.*--image-col"):
        load(write(tmp_path, rows))


def test_explicit_flags(tmp_path):
    rows = [{"sku": f"s{i}", "photo": f"pics/{i}.png", "Product Title": f"thing {i}", "dept": ["A", "B"][i % 2],
             "cat": ["x", "y", "z"][i % 3], "colour": "red", "gender": "Men"} for i in range(30)]
    cat = load(write(tmp_path, rows, image_col="photo"), id_col="sku", image_col="photo", text_col="Product Title",
               levels=["dept", "cat"], attributes=["colour"], min_class_count=1)
    assert cat.levels == ["dept", "cat"] and [h.name for h in cat.heads] == ["dept", "cat", "colour"]
    assert cat.df["id"].iloc[3] == "s3" and cat.df["title"].iloc[3] == "thing 3"


def test_missing_column_error_lists_columns(tmp_path):
    rows = [{"id": "1", "name": "a", "image": "images/1.png", "articleType": "x"}]
    path = write(tmp_path, rows)
    with pytest.raises(ValueError) as err:
        load(path, text_col="title")
    msg = str(err.value)
    assert "'title' not found" in msg and "id, name, image, articleType" in msg and "--text-col" in msg
    with pytest.raises(ValueError, match="'Name' not found.*pass --text-col name"):
        load(path, text_col="Name")
    with pytest.raises(ValueError, match="'colour' not found.*--attributes"):
        load(path, attributes=["colour"])
    no_title = write(tmp_path, [{"id": "1", "image": "images/1.png", "articleType": "x"}], name="b.csv")
    with pytest.raises(ValueError, match="no title column.*columns are: id, image, articleType.*--text-col"):
        load(no_title)


def test_bad_rows_are_counted_named_and_skipped(tmp_path):
    rows = fashion_rows(30)
    outside = tmp_path.parent / f"{tmp_path.name}-outside.png"
    png(outside)
    rows[2]["image"] = "images/gone.png"  # written below, then deleted
    rows[5]["title"] = "   "
    rows[7]["articleType"] = ""
    rows[9]["id"] = rows[8]["id"]
    rows[11]["image"] = "../../etc/passwd"
    rows[13]["image"] = str(outside)
    rows[14]["gender"] = ""  # a missing attribute is not a bad row
    rows[15]["image"] = str(tmp_path / "images" / "inside.png")  # absolute but inside the folder: fine
    png(tmp_path / "images" / "inside.png")
    path = write(tmp_path, rows)
    (tmp_path / "images" / "gone.png").unlink()
    cat = load(path, min_class_count=1)
    rep = cat.report
    assert rep.n_rows == 30 and rep.n_kept == 24 and len(cat.df) == 24
    assert rep.bad_rows == {"missing image file": 1, "empty title": 1, "missing label articleType": 1,
                            "duplicate id": 1, "image path outside the catalogue folder": 2}
    assert rep.examples[0] == "row 3 (id 1002): missing image file images/gone.png"
    assert "row 10 (id 1008): duplicate id" in rep.examples
    assert any(e.startswith("row 12 (id 1011)") and "../../etc/passwd" in e for e in rep.examples)
    assert "1008" in set(cat.df["id"]) and "1014" in set(cat.df["id"])
    assert cat.labels()["gender"][cat.df.index[cat.df["id"] == "1014"][0]] == -1
    summary = rep.summary()
    assert "read 30 rows, kept 24, skipped 6" in summary and "missing image file" in summary


def test_hierarchy_column(tmp_path):
    rows = [{"id": str(i), "image": f"images/{i}.png", "title": f"item {i}",
             "path": "Home >> Kitchen >> Knives >> Chef" if i % 4 else "Home >> Garden"} for i in range(40)]
    cat = load(write(tmp_path, rows), hierarchy_col="path", max_levels=3, min_class_count=1)
    assert cat.levels == ["level1", "level2", "level3"] and cat.leaf == "level3"
    assert cat.df.loc[1, ["level1", "level2", "level3"]].tolist() == ["Home", "Kitchen", "Knives"]
    assert cat.df.loc[0, ["level1", "level2", "level3"]].tolist() == ["Home", "Garden", "Garden"]
    assert cat.parent_paths()["Garden"] == ["Home", "Garden", "Garden"]


def test_multi_label_head(tmp_path):
    rows = fashion_rows(30)
    for i, r in enumerate(rows):
        r["tags"] = ["summer|cotton", " cotton | ", "", "rare"][i % 4] if i else "summer|cotton|rare"
    cat = load(write(tmp_path, rows), multi_label=["tags"], min_class_count=1)
    head = cat.head("tags")
    assert head.kind == "multi" and head.classes == ["cotton", "rare", "summer"]
    hot = cat.labels()["tags"]
    assert hot.dtype == np.float32 and hot.shape == (30, 3)
    assert hot[0].tolist() == [1, 1, 1] and hot[1].tolist() == [1, 0, 0] and hot[2].tolist() == [0, 0, 0]


def test_grouped_split(tmp_path):
    rows = fashion_rows(300)
    for i, r in enumerate(rows):  # near-duplicate titles: same product, differently written
        r["title"] = [f"Red Shirt {i // 3}", f"red   shirt {i // 3}!", f"  RED SHIRT {i // 3}..."][i % 3]
    path = write(tmp_path, rows)
    cat = load(path)
    norm = cat.df["title"].map(normalise_title)
    assert (cat.df.groupby(norm)["split"].nunique() == 1).all()
    counts = cat.df["split"].value_counts()
    assert 0.7 < counts["train"] / 300 < 0.9 and counts["val"] >= 15 and counts["test"] >= 15
    assert load(path).df["split"].tolist() == cat.df["split"].tolist()  # same seed, same split
    assert load(path, seed=1).df["split"].tolist() != cat.df["split"].tolist()
    assert set(load(write(tmp_path, fashion_rows(3), name="three.csv")).df["split"]) == {"train", "val", "test"}
    assert set(cat.split_indices("val")) == set(np.flatnonzero(cat.df["split"] == "val"))
    with pytest.raises(ValueError, match="unknown split"):
        cat.split_indices("dev")


def test_split_column(tmp_path):
    rows = fashion_rows(9)
    for i, r in enumerate(rows):
        r["fold"] = ["Train", "VAL", "test"][i % 3]
    cat = load(write(tmp_path, rows), split_col="fold", min_class_count=1)
    assert cat.df["split"].tolist()[:3] == ["train", "val", "test"]
    rows[4]["fold"] = "holdout"
    with pytest.raises(ValueError, match="'holdout'"):
        load(write(tmp_path, rows, name="b.csv"), split_col="fold")


def test_rare_classes_merge_into_other(tmp_path):
    rows = fashion_rows(60)
    rows[0]["articleType"] = "Socks"
    cat = load(write(tmp_path, rows, name="m.csv"), split_col="", min_class_count=5)
    assert cat.head("articleType").classes == ["Jeans", "Tshirts", "Watches", "other"]
    assert cat.report.merged["articleType"] == ["Socks"]
    assert cat.df.loc[cat.df["id"] == "1000", "articleType"].item() == "other"
    assert cat.labels()["articleType"][cat.df.index[cat.df["id"] == "1000"][0]] == 3
    assert "rare classes merged into 'other' (Socks)" in cat.report.summary()


def test_saved_heads_keep_their_class_order(tmp_path):
    rows = fashion_rows(30)
    rows[0]["articleType"] = "Socks"
    rows[1]["baseColour"] = "Mauve"
    heads = [Head("masterCategory", "single", ["Apparel", "Accessories"], 0),
             Head("subCategory", "single", ["Watches", "Topwear", "Bottomwear"], 1),
             Head("articleType", "single", ["Watches", "Tshirts", "Jeans", "other"], 2),
             Head("baseColour", "single", ["Red", "Blue", "Black"])]
    cat = load_catalog(DataConfig(catalog=str(write(tmp_path, rows))), heads=heads, progress=False)
    assert [h.name for h in cat.heads] == ["masterCategory", "subCategory", "articleType", "baseColour"]
    assert cat.head("articleType").classes == ["Watches", "Tshirts", "Jeans", "other"] and cat.report.merged == {}
    labels = cat.labels()
    assert labels["articleType"][:4].tolist() == [3, 2, 0, 1]  # Socks -> other, then Jeans, Watches, Tshirts
    assert labels["baseColour"][:2].tolist() == [0, -1]  # Mauve is unknown and there is no "other"


def test_parquet_and_long_unicode_titles(tmp_path):
    rows = fashion_rows(12)
    rows[0]["title"] = "Ärmel 🧥 " + "長" * 100_000
    cat = load(write(tmp_path, rows, name="cat.parquet"), min_class_count=1)
    assert len(cat.df) == 12 and len(cat.df["title"].iloc[0]) == 1000


def test_non_csv_file_gives_clear_error(tmp_path):
    bad = tmp_path / "catalogue.csv"
    Image.new("RGB", (4, 4)).save(bad, format="PNG")
    with pytest.raises(ValueError, match=r"catalogue\.csv as CSV.*binary"):
        load(bad)
    broken = tmp_path / "broken.csv"
    broken.write_text('id,title,image\n1,"unterminated,images/1.png\n')
    with pytest.raises(ValueError, match=r"broken\.csv as CSV"):
        load(broken)
    with pytest.raises(ValueError, match="not found"):
        load(tmp_path / "nope.csv")
    pq = tmp_path / "x.parquet"
    pq.write_text("not parquet")
    with pytest.raises(ValueError, match=r"x\.parquet as Parquet"):
        load(pq)


def test_normalise_title():
    assert normalise_title("  Red   SHIRT!! ") == "red shirt" == normalise_title("«red shirt»")
    assert normalise_title("...") == "" and normalise_title("T-shirt 2.0") == "t-shirt 2.0"


REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fashion-product-images-small.tar.gz"


@pytest.fixture(scope="session")
def real_catalog(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("fashion")
    with tarfile.open(REAL) as tar:
        tar.extractall(dest, filter="data")
    return dest / "fashion-product-images-small" / "metadata.csv"


@pytest.mark.skipif(not REAL.exists(), reason=f"real catalogue not present at {REAL}")
def test_real_fashion_catalogue(real_catalog):
    start = time.perf_counter()
    cat = load_catalog(DataConfig(catalog=str(real_catalog)), progress=False)
    seconds = time.perf_counter() - start
    assert cat.report.n_rows == 44_072
    assert cat.levels == ["masterCategory", "subCategory", "articleType"]
    norm = cat.df["title"].map(normalise_title)
    assert (cat.df.groupby(norm)["split"].nunique() == 1).all()
    assert seconds < 15, f"load_catalog took {seconds:.1f}s"
