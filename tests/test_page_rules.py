"""The rules the app's pages take from huse_core instead of keeping their own: tables, columns, sizes, metrics."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from huse_core.config import DataConfig
from huse_core.data.tables import IMAGE_COLS, TEXT_COLS, matching_columns, read_table
from huse_core.model import BACKBONES, PRETRAINED_IMAGE_SIZE, backbone_choices, default_image_size
from huse_core.pipeline import DemoSpec
from huse_core.training.evaluate import class_accuracy, confusion_matrix


def test_read_table_reads_uploaded_bytes_like_a_file(tmp_path):
    data = "title,image\ncafé crème,a.png\nNA,\n".encode("latin-1")  # an Excel export: not UTF-8
    (tmp_path / "shop.csv").write_bytes(data)
    from_file, from_bytes = read_table(tmp_path / "shop.csv"), read_table(data, "shop.csv")
    pd.testing.assert_frame_equal(from_file, from_bytes)
    assert from_bytes["title"][0] == "café crème" and pd.isna(from_bytes["title"][1])
    assert read_table(data, "shop.csv", missing_as_nan=False).values.tolist() == [["café crème", "a.png"], ["NA", ""]]
    assert len(read_table(data, "shop.csv", nrows=1)) == 1
    buf = io.BytesIO()
    pd.DataFrame({"title": ["a", "b", "c"]}).to_parquet(buf)
    assert read_table(buf.getvalue(), "shop.parquet", nrows=2)["title"].tolist() == ["a", "b"]


def test_read_table_refuses_a_photo_named_csv_with_the_commands_message():
    with pytest.raises(ValueError, match="could not read photo.csv as CSV: it looks like a binary file, not text"):
        read_table(b"\x89PNG\r\n\x1a\n\x00\x00", "photo.csv")


def test_matching_columns_finds_any_case_in_the_candidates_order():
    assert matching_columns(["IMAGE", "productDisplayName", "Title"], TEXT_COLS) == ["Title", "productDisplayName"]
    assert matching_columns(["photo", "file"], IMAGE_COLS) == ["file"]
    assert matching_columns(["x"], ("id",)) == []


def test_image_size_and_weights_per_backbone():
    assert default_image_size("cnn") == DataConfig.image_size
    assert default_image_size("lite0") == 160  # ~2x the catalogue photos' 80 px; ImageNet's 224 costs 2.2x the time
    assert all(default_image_size(b) == PRETRAINED_IMAGE_SIZE for b in BACKBONES if b not in ("cnn", "lite0"))
    missing = backbone_choices()
    assert list(missing) == list(BACKBONES) and missing["cnn"] is None
    assert all(why is None or ".pth is not in torch's cache" in why for b, why in missing.items() if b != "lite0")


def test_confusion_matrix_counts_true_rows_and_leaves_out_missing_labels():
    labels = np.array([0, 1, 1, 2, -1])
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8], [0.0, 0.0, 1.0]])
    cm = confusion_matrix(labels, probs)
    assert cm.tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    assert class_accuracy(cm).tolist() == [1.0, 0.5, 1.0]
    assert class_accuracy(np.zeros((2, 2), dtype=np.int64)).tolist() == [0.0, 0.0], "a class without products"


def test_the_tiny_demo_spec_is_small_and_takes_overrides():
    tiny = DemoSpec.tiny(3, patience=10)
    assert tiny.n_products == 240 and tiny.model.dim == 32
    assert (tiny.train.epochs, tiny.train.batch_size, tiny.train.threads, tiny.train.patience) == (3, 32, 1, 10)
