import pytest

from engine.config import TrainConfig, compact_config, tiny_config
from engine.training.cli import build_parser, config_from_args


def test_round_trip_and_unknown_keys_rejected():
    config = tiny_config(epochs=3)
    assert TrainConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="unknown config keys: epoch"):
        TrainConfig.from_dict({"epoch": 3})


@pytest.mark.parametrize("bad", [dict(preset="vgg"), dict(epochs=0), dict(schedule="zigzag"),
                                 dict(split_fractions=(0.5, 0.5, 0.5)), dict(image_size=8)])
def test_invalid_values_raise(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad)


def test_cli_flags_map_onto_the_config():
    parser = build_parser()
    argv = ["--compact", "--epochs", "3", "--no-augment", "--devices", "cpu:2"]
    config = config_from_args(parser.parse_args(argv), parser, argv)
    assert config == compact_config(epochs=3, augment=False, devices="cpu:2")


def test_an_option_equal_to_the_plain_default_still_overrides_a_preset():
    parser = build_parser()
    argv = ["--compact", "--epochs", "20", "--image-size", "224"]
    config = config_from_args(parser.parse_args(argv), parser, argv)
    assert (config.epochs, config.image_size, config.preset) == (20, 224, "resnet10")


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    for option in ("--data-dir", "--image-size", "--preset", "--width", "--epochs", "--batch-size",
                   "--learning-rate", "--schedule", "--no-augment", "--devices", "--run-dir",
                   "--resume", "--seed"):
        assert option in text


def test_shipped_recipe_flag_starts_from_the_shipped_config_and_options_override_it():
    from engine.config import shipped_config
    parser = build_parser()
    argv = ["--shipped-recipe"]
    assert config_from_args(parser.parse_args(argv), parser, argv) == shipped_config()
    argv = ["--shipped-recipe", "--epochs", "3", "--no-crop-to-head", "--ema-decay", "0.5",
            "--brightness", "0.15", "--contrast", "0"]
    assert config_from_args(parser.parse_args(argv), parser, argv) == shipped_config(
        epochs=3, crop_to_head=False, ema_decay=0.5, brightness=0.15, contrast=0.0)


def test_init_seed_changes_the_model_not_the_split():
    """--init-seed trains another model on the same folds: the initial weights follow
    it, while --seed alone (init_seed -1) still sets both, as before the option existed."""
    import numpy as np
    from engine.model.resnet import build_model
    base = tiny_config(seed=42)
    assert base.training_seed == 42 and base.replace(init_seed=7).training_seed == 7
    assert base.replace(init_seed=7).seed == 42  # the split's seed is untouched

    def kernel(config):  # every trainable value; batch-norm ones start at 0 or 1 whatever the seed
        return np.concatenate([v.numpy().ravel() for v in build_model(config).trainable_variables])
    np.testing.assert_array_equal(kernel(base), kernel(base.replace(init_seed=42)))
    assert not np.allclose(kernel(base), kernel(base.replace(init_seed=7)))
    parser = build_parser()
    argv = ["--shipped-recipe", "--init-seed", "7"]
    assert config_from_args(parser.parse_args(argv), parser, argv).training_seed == 7
