"""Grad-CAM: which part of the image drove the tumor logit.

The map is the ReLU of the last feature map weighted by the spatially averaged
gradient of the logit with respect to it (Selvaraju et al., 2017), upsampled to the
input size and scaled to [0, 1] per image. It is computed from the model's own
feature map output, so it works on the in-memory model and inside the exported
SavedModel alike.
"""

from __future__ import annotations

import tensorflow as tf


def grad_cam(model, images):
    """images [B, H, W, 3] in [0, 1] -> (logits [B], cam [B, H, W] in [0, 1])."""
    _, features = model(images, training=False)
    with tf.GradientTape() as tape:
        tape.watch(features)
        logits = model.head_from_features(features)
    gradients = tape.gradient(logits, features)
    weights = tf.reduce_mean(gradients, axis=[1, 2], keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))
    peak = tf.reduce_max(cam, axis=[1, 2], keepdims=True)
    cam = tf.math.divide_no_nan(cam, peak)
    size = tf.shape(images)[1:3]
    cam = tf.image.resize(cam[..., None], size, method="bilinear")[..., 0]
    return logits, tf.clip_by_value(cam, 0.0, 1.0)
