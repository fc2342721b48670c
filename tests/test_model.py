import numpy as np
import pytest
import tensorflow as tf

from engine.model.resnet import ResNet, count_parameters, decay_mask

# Backbone parameter counts of the reference ResNets (torchvision's, without the
# 1000-class classifier): our Core-API model must match them exactly.
REFERENCE_BACKBONE = {"resnet18": 11_176_512, "resnet34": 21_284_672, "resnet50": 23_508_032}


@pytest.mark.parametrize("preset", sorted(REFERENCE_BACKBONE))
def test_parameter_counts_match_reference_resnets(preset):
    model = ResNet(preset, 1.0, head_units=())
    head = model.feature_channels + 1  # the one-logit classifier
    assert count_parameters(model) - head == REFERENCE_BACKBONE[preset]


def test_resnet10_and_width_multiplier_shrink_the_model():
    full = count_parameters(ResNet("resnet10", 1.0, head_units=()))
    half = count_parameters(ResNet("resnet10", 0.5, head_units=()))
    # resnet18 minus one identity block per stage (73,984 + 295,424 + 1,180,672 +
    # 4,720,640 parameters), plus the 513-parameter classifier.
    assert full == 11_176_512 - 6_270_720 + 513
    assert 0.2 < half / full < 0.3  # channels halve, most weights quarter


@pytest.mark.parametrize("preset,channels", [("resnet10", 64), ("resnet50", 256)])
def test_outputs_logits_and_last_feature_map(preset, channels):
    model = ResNet(preset, 0.125, head_units=(8,))
    logits, features = model(tf.random.uniform([3, 64, 64, 3]), training=False)
    assert logits.shape == (3,)
    assert features.shape == (3, 2, 2, channels)


def test_training_flag_updates_batch_norm_statistics_only_in_training():
    model = ResNet("resnet10", 0.125, head_units=())
    images = tf.random.uniform([4, 32, 32, 3])
    before = model.stem_bn.moving_mean.numpy().copy()
    model(images, training=False)
    np.testing.assert_array_equal(model.stem_bn.moving_mean.numpy(), before)
    model(images, training=True)
    assert not np.allclose(model.stem_bn.moving_mean.numpy(), before)


def test_same_seed_same_weights_and_named_variables():
    a, b = ResNet("resnet10", 0.25, seed=7), ResNet("resnet10", 0.25, seed=7)
    for va, vb in zip(a.trainable_variables, b.trainable_variables):
        np.testing.assert_array_equal(va.numpy(), vb.numpy())
    names = [v.name for v in a.variables]
    assert any(n.startswith("resnet/stage1_block1/conv1/kernel") for n in names)
    assert any("moving_variance" in n for n in names)
    mask = decay_mask(a)
    assert sum(mask) < len(mask)  # biases and batch-norm parameters are not decayed


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="unknown preset"):
        ResNet("resnet99")
    with pytest.raises(ValueError, match="width"):
        ResNet("resnet10", 0.0)
