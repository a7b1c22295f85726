"""Property-based tests of the CSV loader: any titles and labels load or fail with a ValueError, never crash,
and every kept row has a photo inside the catalogue folder, a non-empty title and a split."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from huse_core.data.catalog import load_catalog, normalise_title
from huse_core.config import DataConfig

cell = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
row = st.fixed_dictionaries({
    "title": cell,
    "articleType": st.sampled_from(["Tshirts", "Jeans", "", "  ", "<b>x</b>", "Кеды"]),
    "image": st.sampled_from(
        ["images/a.png", "images/missing.png", "../outside.png", "/etc/passwd", "", "images/b.png"]),
})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(row, min_size=1, max_size=25), min_count=st.integers(1, 3))
def test_any_rows_load_cleanly_or_fail_with_a_clear_error(rows, min_count):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "shop"
        (root / "images").mkdir(parents=True)
        for name in ("a.png", "b.png"):
            Image.new("RGB", (4, 4), "red").save(root / "images" / name)
        Image.new("RGB", (4, 4), "red").save(Path(tmp) / "outside.png")  # exists, but outside the folder
        with open(root / "metadata.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["id", "title", "articleType", "image"])
            writer.writeheader()
            for i, r in enumerate(rows):
                writer.writerow({"id": i, **r})
        try:
            catalog = load_catalog(DataConfig(catalog=str(root / "metadata.csv"), levels=["articleType"],
                                              attributes=[], min_class_count=min_count), progress=False)
        except ValueError as err:
            assert str(err)  # a message a user can read, never a traceback from deep inside pandas
            event("refused with a message")
            return
        event("loaded")
        df = catalog.df
        assert catalog.report.n_rows == len(rows)
        assert catalog.report.n_kept == len(df) <= len(rows)
        for image in df["image"]:
            assert Path(image).resolve().parent == (root / "images").resolve()
            assert Path(image).name in {"a.png", "b.png"}
        assert all(t.strip() for t in df["title"])
        assert set(df["split"]) <= {"train", "val", "test"}
        for split in ("train", "val", "test"):  # a normalised title never sits in two splits
            others = set(df.loc[df["split"] != split, "title"].map(normalise_title))
            assert not others & set(df.loc[df["split"] == split, "title"].map(normalise_title))
        labels = catalog.labels()["articleType"]
        assert ((labels >= -1) & (labels < len(catalog.head("articleType").classes))).all()
