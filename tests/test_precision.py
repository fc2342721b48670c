"""Mixed precision: float32 variables with bfloat16 or float16 compute, and dynamic
loss scaling for float16, on the CPU."""

import numpy as np
import pytest
import tensorflow as tf

from engine.config import tiny_config
from engine.model.resnet import ResNet, decay_mask
from engine.training.optim import Adam, DynamicLossScale
from engine.training.steps import make_train_step


def test_low_precision_forward_stays_close_to_float32_and_variables_stay_float32():
    images = tf.random.stateless_uniform([4, 32, 32, 3], [1, 2])
    reference, _ = ResNet("resnet10", 0.25, (16,), seed=1)(images, training=True)
    scale = float(np.abs(reference.numpy()).max()) + 1.0
    for precision, mantissa_bits in (("mixed_bfloat16", 8), ("mixed_float16", 11)):
        model = ResNet("resnet10", 0.25, (16,), seed=1, precision=precision)
        logits, features = model(images, training=True)
        assert logits.dtype == tf.float32 and features.dtype == tf.float32
        assert all(v.dtype == tf.float32 for v in model.variables)
        # Each conv rounds its inputs to 2**-bits relative; batch norm re-centres after
        # every one, so errors do not compound much over the 9 convolutions: allow
        # 30 roundings' worth of the logits' scale (bf16: 0.12, fp16: 0.015).
        np.testing.assert_allclose(logits.numpy(), reference.numpy(), rtol=0,
                                   atol=30 * 2.0 ** -mantissa_bits * scale)


def test_a_bfloat16_run_learns_and_exports(tmp_path):
    from conftest import write_class_folders
    from engine import runs
    from engine.serving.inference import load_model
    from engine.training.loop import train_and_evaluate
    data = write_class_folders(tmp_path / "data", per_class=40)
    config = tiny_config(data_dir=str(data), epochs=4, dedup_distance=-1, precision="mixed_bfloat16")
    status = train_and_evaluate(config, tmp_path / "run")
    assert status["state"] == "finished", status.get("error")
    assert runs.read_metrics(tmp_path / "run", "epoch")[-1]["val/accuracy"] > 0.9
    model = load_model(tmp_path / "run")
    members, _ = model.outputs(np.zeros((1, 32, 32, 3), np.float32))
    assert np.isfinite(members).all()


def test_float16_loss_scaling_skips_an_overflowing_step_and_halves_the_scale():
    strategy = tf.distribute.get_strategy()
    model = ResNet("resnet10", 0.125, (8,), seed=3, precision="mixed_float16")
    optimizer = Adam(model.trainable_variables, decay_mask(model))
    optimizer.loss_scale = DynamicLossScale(initial=2.0 ** 60)  # overflows float16 gradients
    step = make_train_step(strategy, model, optimizer, lambda _: tf.constant(0.01))
    images = tf.random.stateless_uniform([8, 32, 32, 3], [3, 4])
    labels = tf.constant((np.arange(8) % 2).astype(np.float32))
    before = [v.numpy().copy() for v in model.trainable_variables]
    loss = step((images, labels))
    assert np.isfinite(float(loss))  # the loss itself is fine: only the scaled gradients overflow
    assert float(optimizer.loss_scale.scale.numpy()) == 2.0 ** 59
    for old, variable in zip(before, model.trainable_variables):
        np.testing.assert_array_equal(old, variable.numpy())  # skipped: nothing moved
    assert int(optimizer.iterations.numpy()) == 1  # the step still counts
    optimizer.loss_scale.scale.assign(2.0 ** 10)  # a scale that fits: the next step applies
    step((images, labels))
    assert float(optimizer.loss_scale.scale.numpy()) == 2.0 ** 10
    assert any(not np.array_equal(old, v.numpy()) for old, v in zip(before, model.trainable_variables))


def test_precision_is_validated():
    with pytest.raises(ValueError, match="precision"):
        tiny_config(precision="float8")
