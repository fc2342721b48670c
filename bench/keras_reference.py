"""The same ResNet built with Keras layers: the reference a user would otherwise pick
(``model.fit``). Used only by the benchmarks, never by the engine."""

from __future__ import annotations

import keras
from keras import layers

from engine.model.resnet import BN_EPSILON, BN_MOMENTUM, DEPTHS, stage_widths


def _bn():
    return layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON)


def _basic(x, channels, stride):
    shortcut = x
    y = layers.Conv2D(channels, 3, stride, "same", use_bias=False)(x)
    y = layers.ReLU()(_bn()(y))
    y = _bn()(layers.Conv2D(channels, 3, 1, "same", use_bias=False)(y))
    if stride != 1 or x.shape[-1] != channels:
        shortcut = _bn()(layers.Conv2D(channels, 1, stride, "same", use_bias=False)(x))
    return layers.ReLU()(y + shortcut)


def _bottleneck(x, channels, stride):
    out = channels * 4
    shortcut = x
    y = layers.ReLU()(_bn()(layers.Conv2D(channels, 1, 1, "same", use_bias=False)(x)))
    y = layers.ReLU()(_bn()(layers.Conv2D(channels, 3, stride, "same", use_bias=False)(y)))
    y = _bn()(layers.Conv2D(out, 1, 1, "same", use_bias=False)(y))
    if stride != 1 or x.shape[-1] != out:
        shortcut = _bn()(layers.Conv2D(out, 1, stride, "same", use_bias=False)(x))
    return layers.ReLU()(y + shortcut)


def keras_resnet(preset: str, width: float, head_units: tuple[int, ...], image_size: int) -> keras.Model:
    depths, bottleneck = DEPTHS[preset]
    block = _bottleneck if bottleneck else _basic
    widths = stage_widths(width)
    inputs = keras.Input((image_size, image_size, 3))
    x = layers.Rescaling(2.0, offset=-1.0)(inputs)
    x = layers.ReLU()(_bn()(layers.Conv2D(widths[0], 7, 2, "same", use_bias=False)(x)))
    x = layers.MaxPooling2D(3, 2, "same")(x)
    for stage, (blocks, channels) in enumerate(zip(depths, widths)):
        for index in range(blocks):
            x = block(x, channels, 2 if index == 0 and stage > 0 else 1)
    x = layers.GlobalAveragePooling2D()(x)
    for units in head_units:
        x = layers.Dense(units, activation="relu")(x)
    outputs = layers.Dense(1)(x)
    return keras.Model(inputs, outputs)


def copy_weights_into_keras(engine_model, keras_model: keras.Model) -> None:
    """Give ``keras_model`` (built by keras_resnet with the same preset, width and head)
    the engine model's weights and batch-norm statistics, so the two can be compared
    computation by computation. Layers are matched in creation order: stem, then per
    block conv1, conv2[, conv3], shortcut; head, classifier."""
    convs, norms = [engine_model.stem_conv], [engine_model.stem_bn]
    for block in engine_model.blocks:
        inner = [name for name in ("1", "2", "3") if hasattr(block, f"conv{name}")]
        convs += [getattr(block, f"conv{n}") for n in inner]
        norms += [getattr(block, f"bn{n}") for n in inner]
        if block.shortcut.project:
            convs.append(block.shortcut.conv)
            norms.append(block.shortcut.bn)
    denses = list(engine_model.head) + [engine_model.classifier]

    def in_creation_order(kind):
        # Keras names layers conv2d, conv2d_1, conv2d_2, ... as they are created.
        found = [layer for layer in keras_model.layers if type(layer) is kind]
        return sorted(found, key=lambda layer: int(layer.name.rsplit("_", 1)[1])
                      if layer.name.rsplit("_", 1)[-1].isdigit() else 0)

    pairs = (list(zip(convs, in_creation_order(layers.Conv2D), strict=True))
             + list(zip(norms, in_creation_order(layers.BatchNormalization), strict=True))
             + list(zip(denses, in_creation_order(layers.Dense), strict=True)))
    for source, target in pairs:
        if isinstance(target, layers.BatchNormalization):
            for name in ("gamma", "beta", "moving_mean", "moving_variance"):
                getattr(target, name).assign(getattr(source, name).read_value())
        else:
            target.kernel.assign(source.kernel.read_value())
            if isinstance(target, layers.Dense):
                target.bias.assign(source.bias.read_value())
