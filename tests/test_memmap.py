"""Flat memory: decoded photos, backbone features and index embeddings are written to disk in chunks and read back
row by row, so a process never holds a whole catalogue's array (huse_core.data.rowfile and its users)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from huse_core.config import DataConfig, ModelConfig
from huse_core.data import images
from huse_core.data.images import _cache_key, decode_image, decode_many
from huse_core.data.rowfile import RowView, write_rows
from huse_core.prepare import prepare


def _no_decoding(monkeypatch) -> None:
    def boom(*_a, **_k):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(images, "decode_image", boom)


def _shop(folder: Path, n: int, photo: int = 12, files: int | None = None) -> Path:
    """A catalogue of n products with small one-colour photos (rows reuse `files` photo files); returns its CSV."""
    (folder / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    kinds = [("Apparel", "Topwear", "Tshirts"), ("Apparel", "Bottomwear", "Jeans"), ("Footwear", "Shoes", "Sneakers")]
    files = n if files is None else files
    rows = []
    for i in range(n):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if i < files:
            Image.new("RGB", (photo, photo + i % 5), colour).save(folder / "images" / f"{i}.png")
        master, sub, article = kinds[i % 3]
        rows.append({"id": i, "image": f"images/{i % files}.png", "title": f"{article} {colour[0]} {i % 97}",
                     "masterCategory": master, "subCategory": sub, "articleType": article})
    pd.DataFrame(rows).to_csv(folder / "metadata.csv", index=False)
    return folder / "metadata.csv"


def test_write_rows_takes_blocks_in_any_order_and_can_keep_fewer_rows(tmp_path):
    data = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
    path = tmp_path / "a.npy"

    def fill(put):
        put(6, data[6:]), put(0, data[:3]), put(3, data[3:6])  # as threads finish

    assert write_rows(path, data.shape, np.float32, fill) == 10
    assert np.array_equal(np.load(path), data) and not list(tmp_path.glob("*.tmp"))
    assert write_rows(path, data.shape, np.float32, lambda put: put(0, data[:4]) or 4) == 4
    assert np.array_equal(np.load(path), data[:4]) and not list(tmp_path.glob("*.part"))
    with pytest.raises(ValueError, match="do not fit"):
        write_rows(tmp_path / "b.npy", data.shape, np.float32, lambda put: put(8, data[:3]))
    assert not (tmp_path / "b.npy").exists() and not list(tmp_path.glob("*.tmp"))  # nothing half-written


@pytest.mark.parametrize("kept", [None, np.array([0, 2, 3, 4, 7, 8, 9])])
def test_row_view_reads_the_rows_numpy_would_give(tmp_path, kept):
    data = np.random.default_rng(1).integers(0, 255, (10, 4, 4, 3), dtype=np.uint8)
    np.save(tmp_path / "p.npy", data)
    expect = data if kept is None else data[kept]
    for base in (np.load(tmp_path / "p.npy", mmap_mode="r"), data):  # from the file (preadv) and from memory
        view = RowView(base, kept)
        assert len(view) == len(expect) and view.shape == expect.shape and view.dtype == np.uint8
        for key in (np.array([0, 1, 4]), np.array([5, 1, 1]), [-1, 0], slice(None, None, 3), slice(2, 5),
                    slice(5, 2), np.arange(len(expect)) % 2 == 0, 3, -2):
            got = view[key]
            assert isinstance(got, np.ndarray) and not isinstance(got, np.memmap) and got.flags.writeable
            assert np.array_equal(got, expect[key]), key
        assert np.array_equal(view[[1, 2], 0, 1], expect[[1, 2], 0, 1]) and np.array_equal(view[2, 1], expect[2, 1])
        assert np.array_equal(np.asarray(view), expect)
        with pytest.raises(IndexError):
            view[[len(expect)]]


def test_prepare_reuses_the_memory_mapped_cache_and_drops_failed_photos_without_copying(tmp_path, monkeypatch):
    csv = _shop(tmp_path / "shop", 60)
    broken = [5, 17, 40]
    for i in broken:
        (tmp_path / "shop" / "images" / f"{i}.png").write_text("not an image")
    cfg, cache = DataConfig(catalog=str(csv), image_size=16), tmp_path / "cache"
    prep = prepare(cfg, ModelConfig(), cache, progress=False)
    kept = np.setdiff1d(np.arange(60), broken)
    assert len(prep.pixels) == len(prep.catalog.df) == 57 and prep.pixels.shape == (57, 16, 16, 3)
    assert prep.catalog.report.bad_rows["unreadable image"] == 3
    # The view reads the cache file itself: no copy of the kept rows was made.
    (npy,) = cache.glob("pixels-16-*.npy")
    assert isinstance(prep.pixels.base, np.memmap) and Path(prep.pixels.base.filename) == npy.resolve()
    assert prep.pixels.base.shape == (60, 16, 16, 3) and np.array_equal(prep.pixels.kept, kept)
    root = tmp_path / "shop" / "images"
    rows = np.array([0, 4, 5, 30, 56])  # what training asks for: sorted rows of the kept catalogue
    expect = np.stack([decode_image(root / f"{kept[r]}.png", 16) for r in rows])
    assert np.array_equal(prep.pixels[rows], expect)
    assert np.array_equal(prep.pixels[::20], np.stack([decode_image(root / f"{kept[r]}.png", 16) for r in (0, 20, 40)]))
    assert list(prep.catalog.df["id"].iloc[rows]) == [str(kept[r]) for r in rows]

    # Token and n-gram rows: read from the cache file (not mapped), equal to tokenising the kept titles now
    titles = list(prep.catalog.df["title"])
    assert all(isinstance(a, RowView) and a._file is not None for a in (prep.tokens, prep.ngram_ids,
                                                                          prep.ngram_counts))
    assert np.array_equal(prep.tokens, prep.tokenizer.encode(titles))
    for got, want in zip((prep.ngram_ids, prep.ngram_counts), prep.tokenizer.encode_ngrams(titles)):
        assert got.dtype == want.dtype and np.array_equal(got, want)

    _no_decoding(monkeypatch)  # a second prepare reads the cache: nothing is decoded, no title tokenised
    from huse_core.data.text import Tokenizer

    monkeypatch.setattr(Tokenizer, "encode_ngrams", lambda *a: pytest.fail("n-grams hashed again"))
    again = prepare(cfg, ModelConfig(), cache, progress=False)
    assert np.array_equal(again.pixels[rows], expect) and len(again.pixels) == 57
    assert np.array_equal(again.ngram_ids, prep.ngram_ids) and np.array_equal(again.tokens, prep.tokens)


def test_caches_written_before_chunked_writing_still_open(tmp_path, monkeypatch):
    paths = []
    for i, colour in enumerate([(200, 10, 10), (10, 10, 200)]):
        Image.new("RGB", (6, 6), colour).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    pixels = np.stack([decode_image(p, 8) for p in paths])
    cache = tmp_path / "cache"
    cache.mkdir()
    stem = cache / f"pixels-8-{_cache_key(paths, 8)}"
    np.save(f"{stem}.npy", pixels)  # how the cache was written before: one np.save of the whole array
    Path(f"{stem}.json").write_text(json.dumps({"n": 2, "size": 8, "failed": [], "errors": []}))
    with monkeypatch.context() as m:
        _no_decoding(m)
        got, ok, errors = decode_many(paths, 8, cache, progress=False)
    assert isinstance(got, np.memmap) and np.array_equal(got, pixels) and ok.all() and errors == []
    np.savez(f"{stem}.npy.npz", pixels=pixels)  # another format under the cache's name: decoded again
    shutil.move(f"{stem}.npy.npz", f"{stem}.npy")
    got, ok, _ = decode_many(paths, 8, cache, progress=False)
    assert np.array_equal(got, pixels) and ok.all() and np.load(f"{stem}.npy").shape == (2, 8, 8, 3)


class _Backbone:
    """A stand-in frozen backbone: 5 numbers per photo (its mean colour and more), counting the photos it sees."""

    def __init__(self):
        self.cfg = type("Cfg", (), {"backbone": "stub", "image_weights": ""})()
        self.image, self.seen = self, 0
        self.cache_key, self.cache_name = "stub|", "stub"  # what ImageTower gives prepare's feature cache

    def eval(self):
        return self

    def features(self, px):
        self.seen += len(px)
        x = px.float().mean(dim=(1, 2))
        return torch.cat([x, x[:, :1] * 2, x[:, 1:2] - 1], dim=1)


def test_backbone_features_are_written_in_batches_and_reused_from_disk(tmp_path):
    csv = _shop(tmp_path / "shop", 50)
    (tmp_path / "shop" / "images" / "7.png").write_text("broken")
    prep = prepare(DataConfig(catalog=str(csv), image_size=8), ModelConfig(), tmp_path / "cache", progress=False)
    model = _Backbone()
    prep.compute_features(model, torch.device("cpu"), progress=False, batch_size=16)
    expect = model.features(torch.from_numpy(np.asarray(prep.pixels))).numpy().astype(np.float16)
    assert isinstance(prep.features, RowView) and prep.features.shape == (49, 5) and model.seen == 49 * 2
    assert np.array_equal(prep.features[np.arange(49)], expect)
    assert np.array_equal(prep.features[3:40:7], expect[3:40:7])
    (path,) = (tmp_path / "cache").glob("features-stub-*.npy")
    again = _Backbone()
    prep.compute_features(again, torch.device("cpu"), progress=False)
    assert again.seen == 0 and np.array_equal(prep.features[[0, 48]], expect[[0, 48]])
    np.save(path, expect)  # as features were saved before: one np.save, still read from disk
    prep.compute_features(again, torch.device("cpu"), progress=False)
    assert again.seen == 0 and Path(prep.features.base.filename) == path.resolve()


RSS_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    from huse_core.config import DataConfig, ModelConfig
    from huse_core.prepare import prepare
    def peak():  # ru_maxrss: KiB on Linux, bytes on macOS
        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return r if sys.platform == "darwin" else r * 1024
    before = peak()  # after the imports: the largest the process has been so far
    prep = prepare(DataConfig(catalog=sys.argv[1], image_size=int(sys.argv[2])), ModelConfig(), sys.argv[3],
                   progress=False)
    rows = prep.pixels[[0, len(prep.pixels) - 1]]
    print(json.dumps({"before": before, "after": peak(), "n": len(prep.pixels)}))
""")


def test_prepare_memory_stays_far_below_the_decoded_array(tmp_path):
    pytest.importorskip("resource")
    n, size = 2500, 170  # 2,500 x 170 x 170 x 3 = 217 MB of decoded photos
    csv = _shop(tmp_path / "shop", n, photo=8, files=50)  # each row is decoded, even where photos repeat
    out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(csv), str(size), str(tmp_path / "cache")],
                         capture_output=True, text=True, timeout=300, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    array_bytes = n * size * size * 3
    (npy,) = (tmp_path / "cache").glob(f"pixels-{size}-*.npy")
    assert got["n"] == n and npy.stat().st_size >= array_bytes  # the whole array was decoded, to disk
    growth = got["after"] - got["before"]
    assert growth < array_bytes / 2, f"prepare grew by {growth / 1e6:.0f} MB for a {array_bytes / 1e6:.0f} MB array"


def test_embed_catalog_writes_what_the_in_memory_path_gives(tiny_trained_run, tmp_path):
    from huse_core.prepare import cache_dir_for, embed
    from huse_core.retrieval.embed import embed_catalog
    from huse_core.retrieval.layout import load_embeddings
    from huse_core.run import load_run

    run = load_run(tiny_trained_run)
    products = embed_catalog(run, out_dir=tmp_path / "index", batch_size=64, progress=False)
    _, image_emb, text_emb = load_embeddings(tmp_path / "index")
    assert isinstance(image_emb, np.memmap) and image_emb.dtype == np.float32
    assert image_emb.shape == text_emb.shape == (len(products), run.dim)

    # Before: the whole catalogue's pixels in one in-memory array, embedded in one call.
    prep = prepare(run.data_cfg, run.model_cfg, cache_dir_for(run.data_cfg, run.run_dir), progress=False,
                   tokenizer=run.meta["tokenizer"], heads=run.heads)
    in_memory = dataclasses.replace(prep, pixels=np.asarray(prep.pixels))
    old_image, old_text = embed(run.model, in_memory, np.arange(len(prep.catalog.df)), torch.device("cpu"))
    assert list(products["id"]) == list(prep.catalog.df["id"].astype(str))
    np.testing.assert_allclose(image_emb, old_image.numpy(), atol=1e-5)
    np.testing.assert_allclose(text_emb, old_text.numpy(), atol=1e-5)

    # A catalogue whose photo fails to decode is embedded chunk by chunk and its files shortened to the rows kept.
    catalog = prep.catalog
    catalog.df = catalog.df.copy()
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    catalog.df.loc[3, "image"] = str(bad)
    products = embed_catalog(run, catalog, out_dir=tmp_path / "index2", batch_size=64, progress=False)
    _, image2, text2 = load_embeddings(tmp_path / "index2")
    keep = np.arange(len(catalog.df)) != 3
    assert len(products) == len(image2) == len(text2) == len(catalog.df) - 1
    np.testing.assert_allclose(image2, old_image.numpy()[keep], atol=1e-4)
    np.testing.assert_allclose(text2, old_text.numpy()[keep], atol=1e-4)
