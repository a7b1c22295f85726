"""`train --preset demo` resolves to the settings the app's first start trains the demo shop with."""

from huse_core.cli import build_parser, train_configs
from huse_core.config import DataConfig
from huse_core.pipeline import DemoSpec


def _configs(*flags):
    args = build_parser().parse_args(["train", "--catalog", "data/demo/metadata.csv", "--out", "runs/demo", *flags])
    return train_configs(args)


def test_demo_preset_is_the_first_start_build():
    spec = DemoSpec()
    data, model, loss, train = _configs("--preset", "demo")
    assert train == spec.train and model == spec.model and loss == spec.loss
    assert (data.image_size, data.seed) == (spec.image_size, spec.seed)  # what build_demo's DataConfig gets
    assert data.catalog == "data/demo/metadata.csv"


def test_explicit_flags_win_over_the_preset():
    spec = DemoSpec()
    data, _, _, train = _configs("--preset", "demo", "--epochs", "3", "--image-size", "48")
    assert train.epochs == 3 and data.image_size == 48
    assert train.batch_size == spec.train.batch_size and train.lr == spec.train.lr  # the rest still the preset's


def test_without_a_preset_the_schedule_decides():
    data, _, _, train = _configs()
    assert train.epochs is None and train.batch_size is None  # auto: training.schedule resolves them
    assert data.image_size == DataConfig().image_size
