import pytest

from engine.config import TrainConfig, compact_config, tiny_config
from engine.cli import build_parser, config_from_args


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
    args = parser.parse_args(["--compact", "--epochs", "3", "--no-augment", "--devices", "cpu:2"])
    config = config_from_args(args, parser)
    assert config == compact_config(epochs=3, augment=False, devices="cpu:2")


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    for option in ("--data-dir", "--image-size", "--preset", "--width", "--epochs", "--batch-size",
                   "--learning-rate", "--schedule", "--no-augment", "--devices", "--run-dir",
                   "--resume", "--seed"):
        assert option in text
