"""Enumerated settings: a typo is refused in one line before any photo is decoded, from the CLI and the API."""

from __future__ import annotations

import shutil

import pytest

from huse_core import cli
from huse_core.config import CHOICES, LossConfig, ModelConfig, TrainConfig

TYPOS = [("--optimizer", "adamm"), ("--precision", "bf15"), ("--cnn-pool", "max"), ("--backbone", "resnet19"),
         ("--text-backbone", "ngrams"), ("--losses", "cls,grph"), ("--gap-anchor", "photo"),
         ("--graph-distance", "trees"), ("--select-by", "best"), ("--nce-anchor", "image"), ("--device", "gpu"),
         ("--backbone", "openclip:"), ("--text-backbone", "timm:resnet18")]


@pytest.fixture
def shop(tiny_demo_csv, tmp_path):
    """A copy of the tiny shop without its decode cache, so a decoded photo would leave a pixel cache behind."""
    folder = tmp_path / "shop"
    shutil.copytree(tiny_demo_csv.parent, folder, ignore=shutil.ignore_patterns(".huse_cache"))
    return folder / tiny_demo_csv.name


@pytest.mark.parametrize(("flag", "value"), TYPOS)
def test_a_typo_in_a_setting_stops_train_before_any_photo_is_decoded(flag, value, shop, tmp_path, capsys,
                                                                      monkeypatch):
    import huse_core.prepare

    def no_decoding(*args, **kwargs):
        raise AssertionError("a photo was decoded before the settings were checked")

    monkeypatch.setattr(huse_core.prepare, "decode_many", no_decoding)
    try:
        code = cli.main(["train", "--catalog", str(shop), "--out", str(tmp_path / "run"), "--quiet", flag, value])
    except SystemExit as exit_:  # argparse's choices
        code = exit_.code
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "\n" not in err and value.split(",")[-1] in err and flag in err, err  # one line naming flag and value
    assert not list(shop.parent.rglob("*pixels*")) and not (tmp_path / "run").exists()


def test_the_configs_refuse_a_typo_for_api_users_and_accept_every_listed_value():
    with pytest.raises(ValueError, match="unknown optimizer 'adamm': choose adamw or rmsprop"):
        TrainConfig(optimizer="adamm")
    with pytest.raises(ValueError, match="unknown backbone 'resnet19'"):
        ModelConfig(backbone="resnet19")
    with pytest.raises(ValueError, match="unknown loss terms 'grph'"):
        LossConfig(losses=["cls", "grph"])
    for name, values in CHOICES.items():
        cls = next(c for c in (ModelConfig, LossConfig, TrainConfig) if name in c.__dataclass_fields__)
        for value in values:
            assert getattr(cls(**{name: value}), name) == value
    ModelConfig(backbone="openclip:ViT-B-32/laion2b_s34b_b79k", text_backbone="st:all-MiniLM-L6-v2")
    ModelConfig(backbone="timm:resnet18", text_backbone="openclip:ViT-B-32")
    TrainConfig(device="cuda:1", select_by=None)


def test_the_config_lists_match_what_the_model_builds():
    from huse_core.config import IMAGE_BACKBONES, LOSS_TERMS, TEXT_BACKBONES
    from huse_core.model.backbones import BACKBONES, SmallCNN
    from huse_core.model.backbones import TEXT_BACKBONES as BUILT_TEXT
    from huse_core.training.losses import TERMS

    assert set(IMAGE_BACKBONES) == set(BACKBONES) and set(TEXT_BACKBONES) == set(BUILT_TEXT)
    assert set(LOSS_TERMS) == set(TERMS) and set(CHOICES["cnn_pool"]) == set(SmallCNN.POOLS)


def test_the_settings_name_the_backbones_the_model_builds():
    """config checks backbone names before anything is read; the model builds them: the two lists agree."""
    from huse_core import config, model

    assert config.TEXT_BACKBONES == model.TEXT_BACKBONES
    assert set(config.IMAGE_BACKBONES) <= set(model.BACKBONES)
