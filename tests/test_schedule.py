"""The size-aware training schedule: its choices from 300 to 300,000 products, flags winning, run.json keeping it."""

import json
import math

import pytest

from huse_core.cli import build_config, build_parser, main
from huse_core.config import DEFAULT_DROPOUT, DataConfig, LossConfig, ModelConfig, TrainConfig, from_dict
from huse_core.training import schedule as S
from huse_core.training.schedule import Schedule, plan_schedule

TINY_MODEL_FLAGS = ["--cnn-width", "8", "--hidden", "32", "--dim", "16", "--conv-channels", "16", "--word-dim", "8"]


def plan(n_products: int, classes: int = 50, **given) -> Schedule:
    """The auto schedule of a shop of `n_products` spread evenly over `classes` leaf classes (0.8 of it trains)."""
    n_train = int(n_products * 0.8)
    return plan_schedule(n_train, {"leaf": [n_train // classes] * classes}, TrainConfig(**given),
                         n_val=n_products // 10)


def test_a_small_shop_trains_in_small_batches_for_many_more_steps_than_it_has_batches():
    small = plan(300, classes=20)
    assert small.batch_size <= 32 and small.epochs == S.MAX_EPOCHS
    assert small.total_steps >= 10 * small.steps_per_epoch  # sees every product many times
    assert small.patience >= small.epochs // 4  # a noisy epoch early in the one-cycle schedule does not stop it
    assert small.select_by == "mean"  # 30 validation products: one accuracy alone is too noisy
    assert small.dropout == DEFAULT_DROPOUT  # 0.25 measured no better on a 1,000-product shop
    assert small.min_class_count <= 3  # a 300-product shop's classes are all small: keep the learnable ones


def test_sizes_get_larger_batches_higher_rates_fewer_epochs_and_more_steps():
    sizes = [plan(n) for n in (300, 3_000, 44_000, 300_000)]
    batches, epochs = [s.batch_size for s in sizes], [s.epochs for s in sizes]
    assert batches == sorted(batches) and batches[0] < batches[-1]
    assert epochs == sorted(epochs, reverse=True) and epochs[0] > epochs[-1]
    assert [s.total_steps for s in sizes] == sorted(s.total_steps for s in sizes)
    for s in sizes:  # the rate follows the batch: sqrt scaling from the tuned pair
        assert s.lr == pytest.approx(S.BASE_LR * math.sqrt(s.batch_size / S.BASE_BATCH), rel=0.05)


def test_3000_products_train_more_steps_than_the_old_fixed_default_gave_them():
    mid = plan(3_000)
    old_steps = (2_400 // 128) * 14  # 14 epochs of 128: under-trained, as bench/other_shop.py found
    assert mid.batch_size < 128 and mid.total_steps >= 4 * old_steps
    assert S.MIN_EPOCHS <= mid.epochs <= S.MAX_EPOCHS


def test_the_44k_catalogue_keeps_the_schedule_it_was_tuned_with():
    big = plan(44_000, classes=117)  # 35,200 training products: ~118 s an epoch, 14 epochs fit in 30 minutes
    assert (big.batch_size, big.lr, big.epochs, big.patience, big.select_by) == (128, 2e-3, 14, 4, "fused")
    assert (big.dropout, big.min_class_count) == (0.15, 5)


def test_the_alignment_moves_titles_only_where_there_are_enough_products():
    # 300 and 3,000: titles held fixed (a 1k shop lost accuracy and found no more); 44k, 300k: both towers move
    assert [plan(n).nce_anchor for n in (300, 3_000, 44_000, 300_000)] == ["text", "text", "none", "none"]
    assert "only photos" in plan(300).describe() and "both" in plan(44_000).describe()
    given = plan_schedule(800, {"leaf": [8] * 100}, TrainConfig(), nce_anchor="none")
    assert given.nce_anchor == "none" and given.why["nce_anchor"] == "given"


def test_a_cuda_device_gets_the_longer_schedule_and_a_given_epoch_count_still_wins():
    def on(device, n=44_000, **given):
        n_train = int(n * 0.8)
        return plan_schedule(n_train, {"leaf": [n_train // 117] * 117}, TrainConfig(**given), n_val=n // 10,
                             device=device)

    cpu, gpu = on("cpu"), on("cuda")
    assert (cpu.epochs, gpu.epochs) == (14, 35) and gpu.batch_size == cpu.batch_size and gpu.lr == cpu.lr
    assert gpu.total_steps >= S.GPU_STEPS_FACTOR * S.TARGET_STEPS and gpu.device == "cuda"
    assert "CUDA" in gpu.why["epochs"] and "CUDA" not in cpu.why["epochs"]
    assert on("cuda", n=3_000).epochs == S.MAX_EPOCHS  # capped like any auto choice
    assert on("cuda", epochs=6).epochs == 6  # --epochs wins
    assert Schedule.from_dict(gpu.to_dict()) == gpu


def test_300000_products_get_few_epochs_but_enough_steps():
    huge = plan(300_000, classes=200)
    assert huge.batch_size >= 128 and S.MIN_EPOCHS <= huge.epochs < 14
    assert huge.total_steps >= S.TARGET_STEPS and huge.select_by == "fused"


def test_a_rare_class_heavy_shop_merges_less_so_other_stays_small():
    counts = [60] * 5 + [2] * 40 + [1] * 20  # 380 products; 100 of them in classes of one or two
    s = plan_schedule(sum(counts), {"leaf": counts, "colour": [190, 190]}, TrainConfig())
    merged_share = sum(c for c in counts if c < s.min_class_count) / sum(counts)
    assert s.min_class_count < plan(500).min_class_count and merged_share <= S.RARE_SHARE
    assert "lowered" in s.why["min_class_count"]
    balanced = plan_schedule(sum(counts), {"leaf": [40] * 9}, TrainConfig())
    assert balanced.min_class_count > s.min_class_count  # the size rule alone where nothing much is rare


def test_given_settings_win_and_are_marked_given():
    given = dict(batch_size=100, lr=0.05, epochs=3, patience=2, select_by="fused")
    s = plan_schedule(800, {"leaf": [8] * 100}, TrainConfig(**given), dropout=0.5, min_class_count=9,
                      nce_anchor="text")
    assert {k: getattr(s, k) for k in given} == given and (s.dropout, s.min_class_count) == (0.5, 9)
    assert set(s.why.values()) == {"given"}
    only_batch = plan_schedule(800, {"leaf": [8] * 100}, TrainConfig(batch_size=8))
    assert only_batch.steps_per_epoch == 100 and only_batch.lr < plan(1000).lr  # the rest follows the given batch
    assert only_batch.why["batch_size"] == "given" and only_batch.why["epochs"] != "given"


def test_impossible_settings_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="fused or mean"):
        plan_schedule(800, {}, TrainConfig(select_by="loss"))
    with pytest.raises(ValueError, match="epochs"):
        plan_schedule(800, {}, TrainConfig(epochs=-1))  # 0 passes here: train allows it for a --zero-shot run
    with pytest.raises(ValueError, match="batch_size"):
        plan_schedule(800, {}, TrainConfig(batch_size=0))
    with pytest.raises(ValueError, match="training products"):
        plan_schedule(0, {}, TrainConfig())


def test_the_schedule_reads_as_one_block_and_round_trips():
    s = plan(1_000)
    text = s.describe()
    for name in ("batch size", "learning rate", "epochs", "patience", "early stopping", "dropout", "min class count"):
        assert name in text
    assert "800 training products" in text and "small shop" in text
    assert Schedule.from_dict(json.loads(json.dumps(s.to_dict()))) == s


def test_flags_default_to_auto_and_an_explicit_flag_wins(capsys):
    parser = build_parser()
    auto = parser.parse_args(["train", "--catalog", "x.csv", "--out", "r"])
    assert build_config(auto, TrainConfig).batch_size is None and build_config(auto, ModelConfig).dropout is None
    assert build_config(auto, DataConfig).min_class_count is None
    given = parser.parse_args(["train", "--catalog", "x.csv", "--out", "r", "--batch-size", "16", "--lr", "0.01",
                               "--select-by", "fused", "--dropout", "0.3", "--min-class-count", "2"])
    cfg = build_config(given, TrainConfig)
    assert (cfg.batch_size, cfg.lr, cfg.select_by, cfg.epochs) == (16, 0.01, "fused", None)
    assert build_config(given, ModelConfig).dropout == 0.3 and build_config(given, DataConfig).min_class_count == 2
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--batch-size INT" in (out := capsys.readouterr().out) and "(default: auto)" in out


def test_runs_saved_before_schedules_resume_with_their_own_early_stopping():
    assert from_dict(TrainConfig, {"epochs": 14, "batch_size": 128}).select_by == "fused"


def test_train_prints_the_schedule_and_stores_it_resolved_in_run_json(tiny_demo_csv, tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = ["train", "--catalog", str(tiny_demo_csv), "--out", str(run_dir), "--epochs", "2", "--threads", "1",
            *TINY_MODEL_FLAGS]
    assert main(args) == 0
    err = capsys.readouterr().err
    meta = json.loads((run_dir / "run.json").read_text())
    schedule = meta["schedule"]
    assert "training schedule for" in err and f"{schedule['n_train']} training products" in err
    assert schedule["epochs"] == meta["train"]["epochs"] == 2 and schedule["why"]["epochs"] == "given"
    for key in ("batch_size", "lr", "patience", "select_by"):  # auto choices, stored as the values used
        assert meta["train"][key] is not None and meta["train"][key] == schedule[key]
        assert schedule["why"][key] != "given"
    assert meta["model"]["dropout"] == schedule["dropout"] and meta["data"]["min_class_count"] == schedule[
        "min_class_count"]
    assert schedule["n_train"] == meta["splits"]["train"]


def test_resume_keeps_the_stored_schedule(tiny_demo_csv, tmp_path):
    from huse_core.training.train import train

    cfgs = (DataConfig(catalog=str(tiny_demo_csv)), ModelConfig(cnn_width=8, hidden=32, dim=16, conv_channels=16,
                                                                word_dim=8), LossConfig(), TrainConfig(epochs=2,
                                                                                                       threads=1))

    def stop(event):
        if event["stage"] == "epoch" and event["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(*cfgs, tmp_path / "run", progress=False, callback=stop)
    first = json.loads((tmp_path / "run" / "run.json").read_text())
    events = []
    meta = train(*cfgs, tmp_path / "run", resume=True, progress=False, callback=events.append)
    assert meta["status"] == "done" and len(meta["history"]) == 2
    assert meta["schedule"] == first["schedule"] and meta["train"] == first["train"]
    assert [e["schedule"] for e in events if e["stage"] == "schedule"] == [first["schedule"]]


def test_the_mean_score_weighs_photo_and_title_where_fused_alone_would_not():
    from huse_core.training.validation import selection_score

    before = {"image": 0.30, "text": 0.70, "fused": 0.71}
    after = {"image": 0.40, "text": 0.71, "fused": 0.70}  # one validation product less in fused, far better photos
    assert selection_score(after, "mean") > selection_score(before, "mean")
    assert selection_score(before, "fused") > selection_score(after, "fused")
    with pytest.raises(ValueError, match="fused or mean"):
        selection_score(before, "loss")
