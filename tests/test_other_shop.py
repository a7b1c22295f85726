"""Another shop's layout read only through the column flags: a category-path column, long titles, large photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from huse_core.data.catalog import load_catalog
from huse_core.config import DataConfig
from huse_core.data.images import decode_many

PATHS = {  # leaf -> (path, photo colour)
    "Curtains": ("Home Furnishing >> Curtains & Accessories >> Curtains", (150, 30, 30)),
    "Cushions": ("Home Furnishing >> Cushions & Covers >> Cushions", (30, 150, 30)),
    "Mugs": ("Kitchen >> Tableware >> Mugs", (30, 30, 150)),
    "Rugs": ("Home Furnishing >> Rugs", (200, 200, 30)),  # a two-part path: its leaf repeats
}
FILLER = "Machine washable, made to last, ships in two days and returns are free within thirty days of delivery."


def shop_csv(tmp_path: Path, n: int = 40) -> Path:
    """n products in the other shop's layout, each with its own 1200x1600 JPEG."""
    rows = []
    (tmp_path / "photos").mkdir()
    for i in range(n):
        leaf = list(PATHS)[i % 4]
        path, colour = PATHS[leaf]
        Image.new("RGB", (1200, 1600), colour).save(tmp_path / "photos" / f"SKU-{i:03d}.jpg", quality=90)
        rows.append({"sku": f"SKU-{i:03d}", "product_name": f"Brand{i} {leaf} in {['teal', 'ivory'][i % 2]}. {FILLER}",
                     "category_path": path, "photo": f"photos/SKU-{i:03d}.jpg", "colour": ["teal", "ivory"][i % 2],
                     "audience": "Home", "title": "a decoy column the flags don't name"})
    csv = tmp_path / "products.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def test_other_shop_layout_loads_through_column_flags(tmp_path):
    cfg = DataConfig(catalog=str(shop_csv(tmp_path)), id_col="sku", text_col="product_name", image_col="photo",
                     hierarchy_col="category_path", hierarchy_sep=" >> ", attributes=["colour"], min_class_count=1)
    cat = load_catalog(cfg, progress=False)
    assert cat.report.n_kept == 40 and not cat.report.bad_rows
    assert cat.levels == ["level1", "level2", "level3"] and cat.leaf == "level3"
    assert [(h.name, h.level) for h in cat.heads] == [("level1", 0), ("level2", 1), ("level3", 2), ("colour", None)]
    assert cat.head("level1").classes == ["Home Furnishing", "Kitchen"]
    assert cat.head("level2").classes == ["Curtains & Accessories", "Cushions & Covers", "Rugs", "Tableware"]
    assert cat.head("level3").classes == ["Curtains", "Cushions", "Mugs", "Rugs"]
    assert cat.parent_paths()["Curtains"] == ["Home Furnishing", "Curtains & Accessories", "Curtains"]
    assert cat.parent_paths()["Rugs"] == ["Home Furnishing", "Rugs", "Rugs"]
    first = cat.df.set_index("id").loc["SKU-000"]
    assert first["title"].startswith("Brand0 Curtains in teal.") and len(first["title"].split()) > 20
    assert first["image"] == str(tmp_path / "photos" / "SKU-000.jpg")

    pixels, ok, errors = decode_many(list(cat.df["image"]), 64, cache_dir=None, progress=False)
    assert ok.all() and not errors and pixels.shape == (40, 64, 64, 3)
    row = int(np.flatnonzero(cat.df["id"] == "SKU-002")[0])  # a Mugs photo: blue, pillarboxed on white
    assert np.abs(pixels[row, 32, 32].astype(int) - (30, 30, 150)).max() <= 8
    assert (pixels[row, 32, 0] == 255).all()
