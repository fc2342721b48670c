import numpy as np
import pytest
import tensorflow as tf

from engine.training.optim import Adam, learning_rate_at


def lr(step, **kw):
    args = dict(base_lr=1.0, total_steps=110, warmup_steps=10, schedule="cosine")
    args.update(kw)
    return float(learning_rate_at(step, **args))


def test_warmup_then_cosine_to_zero():
    assert lr(0) == pytest.approx(0.1)
    assert lr(9) == pytest.approx(1.0)
    assert lr(10) == pytest.approx(1.0)
    assert lr(60) == pytest.approx(0.5, abs=1e-6)
    assert lr(110) == pytest.approx(0.0, abs=1e-6)


def test_step_and_constant_schedules():
    kw = dict(schedule="step", warmup_steps=0, steps_per_epoch=10, decay_every_epochs=2,
              decay_factor=0.1)
    assert lr(19, **kw) == pytest.approx(1.0)
    assert lr(20, **kw) == pytest.approx(0.1)
    assert lr(45, **kw) == pytest.approx(0.01)
    assert lr(77, schedule="constant", warmup_steps=0) == 1.0
    with pytest.raises(ValueError):
        lr(1, schedule="sawtooth")


def test_adam_matches_the_reference_update_rule():
    start = np.array([1.0, -2.0, 3.0], np.float32)
    var = tf.Variable(start)
    opt = Adam([var], weight_decay=0.1)
    m = v = np.zeros(3)
    x = start.astype(np.float64)
    for t in range(1, 6):
        grad = 2 * x  # gradient of sum(x^2)
        opt.apply([tf.constant(grad, tf.float32)], 0.01)
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad ** 2
        m_hat, v_hat = m / (1 - 0.9 ** t), v / (1 - 0.999 ** t)
        x = x - 0.01 * (m_hat / (np.sqrt(v_hat) + 1e-8) + 0.1 * x)
        np.testing.assert_allclose(var.numpy(), x, rtol=1e-4, atol=1e-5)
    assert int(opt.iterations.numpy()) == 5
