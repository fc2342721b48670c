"""ResNet written with TensorFlow's Core API only (tf.Module, tf.Variable, tf.nn).

Every variable is created in ``__init__`` with its shape and an explicit name.
``ResNet.__call__(images, *, training)`` returns ``(logits, feature_map)``: the
feature map is the last convolutional block's output, so Grad-CAM needs no surgery.

Distribution: trainable variables use ``ONLY_FIRST_REPLICA`` aggregation so the
optimizer can assign them inside ``strategy.run`` after gradients are all-reduced
(every replica computes the same update); batch-norm moving statistics are
``ON_READ``/``MEAN`` so each replica updates its own copy and readers see the mean.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from engine.config import KERNEL_INITS

# Blocks per stage, and whether the stage uses bottleneck blocks.
DEPTHS = {
    "resnet10": ([1, 1, 1, 1], False),
    "resnet18": ([2, 2, 2, 2], False),
    "resnet34": ([3, 4, 6, 3], False),
    "resnet50": ([3, 4, 6, 3], True),
}
BASE_WIDTHS = (64, 128, 256, 512)
# Mixed precision: convolutions in the low type, variables, batch norm, head and loss in
# float32 (as Keras's mixed policies do).
COMPUTE_DTYPES = {"float32": tf.float32, "mixed_bfloat16": tf.bfloat16, "mixed_float16": tf.float16}
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
_TRAINABLE = dict(trainable=True, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)




def initial_kernel(rng: np.random.Generator, shape: tuple[int, ...], kind: str) -> np.ndarray:
    """A kernel's starting values. ``he_normal``: N(0, 2/fan_in), He et al.'s choice for
    ReLU networks. ``glorot_uniform``: U(+-sqrt(6/(fan_in+fan_out))), the Keras default,
    so a network built here starts like the Keras reference does. Behind batch norm the
    scale of a kernel does not change the function, but it sets the effective step size
    of Adam (updates of about lr against weights of this size), so the choice matters
    to how fast the network learns."""
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
    if kind == "he_normal":
        return rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape).astype(np.float32)
    if kind == "glorot_uniform":
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, size=shape).astype(np.float32)
    raise ValueError(f"unknown kernel_init {kind!r}; choose from {KERNEL_INITS}")


class Conv2D(tf.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int,
                 kernels, name: str):
        super().__init__(name=name)
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"{name}: channels must be positive")
        self.stride = stride
        shape = (kernel, kernel, in_channels, out_channels)
        with self.name_scope:
            self.kernel = tf.Variable(kernels(shape), name="kernel", **_TRAINABLE)

    def __call__(self, x):
        # Variables stay float32; under mixed precision the kernel is cast to the
        # activations' compute type for the convolution.
        return tf.nn.conv2d(x, tf.cast(self.kernel, x.dtype), strides=self.stride, padding="SAME")


class BatchNorm(tf.Module):
    def __init__(self, channels: int, name: str):
        super().__init__(name=name)
        on_read = dict(trainable=False, synchronization=tf.VariableSynchronization.ON_READ,
                       aggregation=tf.VariableAggregation.MEAN)
        with self.name_scope:
            self.gamma = tf.Variable(tf.ones([channels]), name="gamma", **_TRAINABLE)
            self.beta = tf.Variable(tf.zeros([channels]), name="beta", **_TRAINABLE)
            self.moving_mean = tf.Variable(tf.zeros([channels]), name="moving_mean", **on_read)
            self.moving_variance = tf.Variable(tf.ones([channels]), name="moving_variance",
                                               **on_read)

    def __call__(self, x, *, training: bool):
        """Normalise ``x`` (any compute type; statistics and scale/offset in float32).

        One replica: TensorFlow's fused kernel (FusedBatchNormV3, one op forward and one
        backward instead of a dozen element-wise ones; oneDNN on x86), which takes
        bfloat16/float16 activations with float32 statistics, so mixed precision needs
        no casts. Several replicas in training: the synchronised two-pass moments below,
        then the same fused kernel in inference form with those moments."""
        if training:
            context = tf.distribute.get_replica_context()
            if context is None or context.num_replicas_in_sync == 1:
                y, mean, variance = _fused(x, self.gamma, self.beta, None, None, training=True)
                # The kernel returns the Bessel-corrected variance (n / (n - 1)); the
                # moving statistics keep the population variance, as tf.nn.moments and
                # Keras do, so checkpoints mean the same whichever path wrote them.
                n = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), tf.float32)
                variance = variance * (n - 1.0) / tf.maximum(n, 1.0)
            else:
                mean, variance = self._batch_moments(tf.cast(x, tf.float32))
                y = _normalise(x, mean, variance, self.gamma, self.beta)
            self.moving_mean.assign(BN_MOMENTUM * self.moving_mean + (1 - BN_MOMENTUM) * mean)
            self.moving_variance.assign(
                BN_MOMENTUM * self.moving_variance + (1 - BN_MOMENTUM) * variance)
            return y
        return _fused(x, self.gamma, self.beta, self.moving_mean, self.moving_variance,
                      training=False)[0]

    @staticmethod
    def _batch_moments(x):
        """Mean and variance over the whole global batch. With several replicas the
        sums are all-reduced (synchronised batch norm), so N replicas train exactly
        like one device on the same global batch, and small per-replica batches do
        not make the statistics noisy."""
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return tf.nn.moments(x, axes=[0, 1, 2])
        # Two passes (the global mean, then squared deviations from it), not
        # E[x^2] - E[x]^2: in float32 that difference loses every digit when the mean
        # is large against the spread. One more all-reduce of C numbers per layer.
        count = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), x.dtype)
        total, count = context.all_reduce(tf.distribute.ReduceOp.SUM,
                                          [tf.reduce_sum(x, axis=[0, 1, 2]), count])
        mean = total / tf.maximum(count, 1.0)
        squares = context.all_reduce(tf.distribute.ReduceOp.SUM,
                                     tf.reduce_sum(tf.square(x - mean), axis=[0, 1, 2]))
        return mean, squares / tf.maximum(count, 1.0)


_NO_STATISTICS = ()


def _fused(x, gamma, beta, mean, variance, *, training: bool):
    """FusedBatchNormV3 in NHWC: (y, batch mean, Bessel-corrected batch variance) in
    training mode; y normalised with the given statistics otherwise."""
    empty = tf.constant(_NO_STATISTICS, tf.float32)
    y, batch_mean, batch_variance, *_ = tf.raw_ops.FusedBatchNormV3(
        x=x, scale=gamma, offset=beta,
        mean=empty if mean is None else tf.convert_to_tensor(mean),
        variance=empty if variance is None else tf.convert_to_tensor(variance),
        epsilon=BN_EPSILON, data_format="NHWC", is_training=training)
    return y, batch_mean, batch_variance


def _normalise(x, mean, variance, gamma, beta):
    """Normalise with given (synchronised) float32 moments; differentiable through them."""
    scale = gamma * tf.math.rsqrt(variance + BN_EPSILON)
    shift = beta - mean * scale
    return tf.cast(tf.cast(x, tf.float32) * scale + shift, x.dtype)


class Dense(tf.Module):
    def __init__(self, in_units: int, out_units: int, kernels, name: str):
        super().__init__(name=name)
        with self.name_scope:
            self.kernel = tf.Variable(kernels((in_units, out_units)),
                                      name="kernel", **_TRAINABLE)
            self.bias = tf.Variable(tf.zeros([out_units]), name="bias", **_TRAINABLE)

    def __call__(self, x):
        return tf.matmul(x, self.kernel) + self.bias


class Shortcut(tf.Module):
    """Identity, or a strided 1x1 projection when the shape changes."""

    def __init__(self, in_channels, out_channels, stride, kernels, name):
        super().__init__(name=name)
        with self.name_scope:
            self.project = stride != 1 or in_channels != out_channels
            if self.project:
                self.conv = Conv2D(in_channels, out_channels, 1, stride, kernels, name="conv")
                self.bn = BatchNorm(out_channels, name="bn")

    def __call__(self, x, *, training):
        return self.bn(self.conv(x), training=training) if self.project else x


class BasicBlock(tf.Module):
    expansion = 1

    def __init__(self, in_channels, channels, stride, kernels, name):
        super().__init__(name=name)
        with self.name_scope:
            self.conv1 = Conv2D(in_channels, channels, 3, stride, kernels, name="conv1")
            self.bn1 = BatchNorm(channels, name="bn1")
            self.conv2 = Conv2D(channels, channels, 3, 1, kernels, name="conv2")
            self.bn2 = BatchNorm(channels, name="bn2")
            self.shortcut = Shortcut(in_channels, channels, stride, kernels, name="shortcut")

    def __call__(self, x, *, training):
        y = tf.nn.relu(self.bn1(self.conv1(x), training=training))
        y = self.bn2(self.conv2(y), training=training)
        return tf.nn.relu(y + self.shortcut(x, training=training))


class BottleneckBlock(tf.Module):
    expansion = 4

    def __init__(self, in_channels, channels, stride, kernels, name):
        super().__init__(name=name)
        with self.name_scope:
            out = channels * self.expansion
            self.conv1 = Conv2D(in_channels, channels, 1, 1, kernels, name="conv1")
            self.bn1 = BatchNorm(channels, name="bn1")
            self.conv2 = Conv2D(channels, channels, 3, stride, kernels, name="conv2")
            self.bn2 = BatchNorm(channels, name="bn2")
            self.conv3 = Conv2D(channels, out, 1, 1, kernels, name="conv3")
            self.bn3 = BatchNorm(out, name="bn3")
            self.shortcut = Shortcut(in_channels, out, stride, kernels, name="shortcut")

    def __call__(self, x, *, training):
        y = tf.nn.relu(self.bn1(self.conv1(x), training=training))
        y = tf.nn.relu(self.bn2(self.conv2(y), training=training))
        y = self.bn3(self.conv3(y), training=training)
        return tf.nn.relu(y + self.shortcut(x, training=training))


def stage_widths(width: float) -> list[int]:
    return [max(4, int(round(base * width))) for base in BASE_WIDTHS]


class ResNet(tf.Module):
    """Binary classifier: stem, four residual stages, global average pooling, dense
    ReLU head, one logit (sigmoid of it is the tumor probability)."""

    def __init__(self, preset: str = "resnet18", width: float = 1.0,
                 head_units: tuple[int, ...] = (256,), dropout: float = 0.0,
                 seed: int = 0, name: str = "resnet", kernel_init: str = "he_normal",
                 precision: str = "float32"):
        super().__init__(name=name)
        if preset not in DEPTHS:
            raise ValueError(f"unknown preset {preset!r}; choose from {sorted(DEPTHS)}")
        if width <= 0:
            raise ValueError("width must be positive")
        if precision not in COMPUTE_DTYPES:
            raise ValueError(f"unknown precision {precision!r}; choose from {sorted(COMPUTE_DTYPES)}")
        self.compute_dtype = COMPUTE_DTYPES[precision]
        rng = np.random.default_rng(seed)

        def kernels(shape):  # every kernel drawn from one seeded stream, in creation order
            return initial_kernel(rng, shape, kernel_init)
        depths, bottleneck = DEPTHS[preset]
        block_type = BottleneckBlock if bottleneck else BasicBlock
        widths = stage_widths(width)
        self.dropout = float(dropout)
        with self.name_scope:
            self.stem_conv = Conv2D(3, widths[0], 7, 2, kernels, name="stem_conv")
            self.stem_bn = BatchNorm(widths[0], name="stem_bn")
            self.blocks = []
            channels_in = widths[0]
            for stage, (blocks, channels) in enumerate(zip(depths, widths)):
                for index in range(blocks):
                    stride = 2 if index == 0 and stage > 0 else 1
                    block = block_type(channels_in, channels, stride, kernels,
                                       name=f"stage{stage + 1}_block{index + 1}")
                    self.blocks.append(block)
                    channels_in = channels * block_type.expansion
            self.feature_channels = channels_in
            self.head = []
            units_in = channels_in
            for index, units in enumerate(head_units):
                self.head.append(Dense(units_in, units, kernels, name=f"dense{index + 1}"))
                units_in = units
            self.classifier = Dense(units_in, 1, kernels, name="classifier")

    def __call__(self, images, *, training: bool):
        """images: [B, H, W, 3] float32 in [0, 1] -> (logits [B], features [B, h, w, C])."""
        x = tf.cast((images - 0.5) * 2.0, self.compute_dtype)  # centred [0, 1] input
        x = tf.nn.relu(self.stem_bn(self.stem_conv(x), training=training))
        x = tf.nn.max_pool2d(x, ksize=3, strides=2, padding="SAME")
        for block in self.blocks:
            x = block(x, training=training)
        features = tf.cast(x, tf.float32)  # pooling, head, logit and Grad-CAM in float32
        return self.head_from_features(features, training=training), features

    def head_from_features(self, features, *, training: bool = False):
        """Logits from the last block's feature map: pooling, dense head, classifier.
        The second half of ``__call__``, and what Grad-CAM differentiates."""
        y = tf.reduce_mean(features, axis=[1, 2])
        for dense in self.head:
            y = tf.nn.relu(dense(y))
            if training and self.dropout > 0:
                y = tf.nn.dropout(y, rate=self.dropout)
        return tf.squeeze(self.classifier(y), axis=-1)


def build_model(config) -> ResNet:
    """The model a TrainConfig describes (create it inside ``strategy.scope()``)."""
    return ResNet(config.preset, config.width, tuple(config.head_units), config.dropout,
                  seed=config.training_seed, kernel_init=config.kernel_init, precision=config.precision)


def count_parameters(module: tf.Module, trainable_only: bool = True) -> int:
    variables = module.trainable_variables if trainable_only else module.variables
    return int(sum(np.prod(v.shape) for v in variables))


def decay_mask(module: tf.Module) -> list[bool]:
    """Which trainable variables get weight decay: kernels, not biases or BN."""
    return [v.name.split("/")[-1].startswith("kernel") for v in module.trainable_variables]
