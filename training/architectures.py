"""Keras factories of every CNN variant, each returning the *served* model end to end.

    images (uint8, [None, H, W, C], raw 0-255) -> ``rescale`` (in-graph scaling) -> core CNN
        -> ``probabilities`` (float32, [None, K])

Every factory has the signature ``build(input_shape, num_classes, weights=None)`` and names every layer,
so Grad-CAM and activation requests address stable names. Keras is imported inside the functions: this
module imports without TensorFlow (the registry, which the server reads, imports it).

``weights`` (pretrained variants only): ``None`` (random initialisation), ``"imagenet"`` (Keras' download,
cached in ``~/.keras/models``) or a local path to the same Keras weights file, for offline machines.
"""

from __future__ import annotations

from typing import Any

INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
RESCALE_LAYER = "rescale"

# ImageNet "caffe" preprocessing (VGG, ResNet50): BGR channel order, per-channel mean subtracted, no scaling.
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)


def served_input(shape: tuple[int, int, int], scale: Any, offset: Any):
    """uint8 ``images`` input followed by the in-graph ``Rescaling(scale, offset)`` named ``rescale``."""
    import keras

    images = keras.Input(shape=shape, dtype="uint8", name=INPUT_NAME)
    scale = list(scale) if isinstance(scale, tuple) else scale
    offset = list(offset) if isinstance(offset, tuple) else offset
    x = keras.layers.Rescaling(scale, offset=offset, name=RESCALE_LAYER)(images)
    return images, x


def fold_rgb_to_bgr(model, layer_name: str) -> None:
    """Make a BGR-trained first convolution accept RGB: reverse its kernel's input-channel axis.

    Keras' ImageNet weights for VGG and ResNet50 expect BGR input; the server sends RGB. Reversing the
    kernel's input channels is exactly equivalent to reversing the image's channels, without an extra op.
    """
    layer = model.get_layer(layer_name)
    kernel, *rest = layer.get_weights()
    layer.set_weights([kernel[:, :, ::-1, :].copy(), *rest])


def _no_weights(name: str, weights: str | None) -> None:
    if weights not in (None, "none"):
        raise ValueError(f"{name} has no pretrained weights; use --weights none. Received: weights={weights!r}")


def _app_weights(weights: str | None) -> str | None:
    return None if weights in (None, "none") else weights


def _dense_dropout(x, units, rate: float, start: int = 1):
    """ReLU Dense layers fc<i> of ``units``, each followed by Dropout dropout<i> (the references' MLP heads)."""
    from keras import layers

    for i, n in enumerate(units, start=start):
        x = layers.Dense(n, activation="relu", name=f"fc{i}")(x)
        x = layers.Dropout(rate, name=f"dropout{i}")(x)
    return x


# ------------------------------------------------------------------ MNIST (reference nets, unchanged)


def build_mnist_cnn(input_shape=(28, 28, 1), num_classes=10, weights=None):
    """The reference MNIST CNN: two 5x5 'same' conv blocks and a 1024-256-50 MLP with dropout 0.5."""
    import keras
    from keras import layers

    _no_weights("mnist_cnn", weights)
    images, x = served_input(input_shape, 1.0 / 255.0, 0.0)
    x = layers.Conv2D(32, (5, 5), padding="same", activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(2, 2, name="pool1")(x)
    x = layers.Conv2D(64, (5, 5), padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, 2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = _dense_dropout(x, (1024, 256, 50), 0.5)
    probabilities = layers.Dense(num_classes, activation="softmax", name=OUTPUT_NAME)(x)
    return keras.Model(images, probabilities, name="mnist_cnn")


def build_lenet5(input_shape=(28, 28, 1), num_classes=10, weights=None, *, scale=1.0, offset=0.0):
    """LeNet-5 as in the reference: sigmoid 5x5 'valid' convs, 2x2/2 max pools, 120-84-10 dense."""
    import keras
    from keras import layers

    _no_weights("lenet5", weights)
    images, x = served_input(input_shape, scale, offset)
    x = layers.Conv2D(6, 5, activation="sigmoid", name="conv1")(x)
    x = layers.MaxPooling2D(pool_size=2, strides=2, name="pool1")(x)
    x = layers.Conv2D(16, 5, activation="sigmoid", name="conv2")(x)
    x = layers.MaxPooling2D(pool_size=2, strides=2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(120, activation="sigmoid", name="fc1")(x)
    x = layers.Dense(84, activation="sigmoid", name="fc2")(x)
    probabilities = layers.Dense(num_classes, activation="softmax", name=OUTPUT_NAME)(x)
    return keras.Model(images, probabilities, name="lenet5")


# ------------------------------------------------------------------ small CNNs of the tutorials


def build_digits_bn(input_shape=(8, 8, 1), num_classes=10, weights=None):
    """002_*.txt's code as it is really wired: conv2 reads conv1's output (the tutorial's first max pool
    is computed but never used, so it is left out), then batch norm, relu, a 3x3/2 'same' max pool.

    Two training-only regularisers (identity at inference, no parameters: the served graph computes the
    tutorial's network): Gaussian noise (sd 0.1) on the rescaled [0, 1] pixels and dropout 0.2 on conv1's
    maps. docs/models.md (digits_bn) says how they were chosen and what they change."""
    import keras
    from keras import layers

    _no_weights("digits_bn", weights)
    images, x = served_input(input_shape, 1.0 / 255.0, 0.0)
    x = layers.GaussianNoise(0.1, name="noise")(x)  # after the rescale: layers[1] stays the Rescaling
    x = layers.Conv2D(10, 3, padding="same", activation="relu", name="conv1")(x)  # 8x8x10
    x = layers.Dropout(0.2, name="drop_conv1")(x)
    x = layers.Conv2D(5, 3, strides=2, padding="same", name="conv2")(x)  # 4x4x5
    x = layers.BatchNormalization(epsilon=1e-3, name="bn2")(x)
    x = layers.ReLU(name="relu2")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool2")(x)  # 2x2x5
    x = layers.Flatten(name="flatten")(x)  # 20
    x = layers.Dense(50, activation="relu", name="fc1")(x)
    probabilities = layers.Dense(num_classes, activation="softmax", name=OUTPUT_NAME)(x)
    return keras.Model(images, probabilities, name="digits_bn")


def build_face_cnn(input_shape=(70, 50, 3), num_classes=10, weights=None):
    """000_*.txt §3: three 5x5 'valid' relu convs with 2x2 max pools, an 8192-1024-128-60 MLP.

    The reference ends in a sigmoid per person with binary cross-entropy; we serve softmax
    probabilities over the persons (one person per face image) and train with cross-entropy.
    """
    import keras
    from keras import layers

    _no_weights("face_cnn", weights)
    images, x = served_input(input_shape, 1.0 / 255.0, 0.0)
    for i, filters in enumerate((32, 64, 128), start=1):
        x = layers.Conv2D(filters, (5, 5), activation="relu", name=f"conv{i}")(x)
        x = layers.MaxPooling2D(name=f"pool{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = _dense_dropout(x, (8192, 1024, 128), 0.5)
    x = layers.Dense(60, activation="relu", name="fc4")(x)
    probabilities = layers.Dense(num_classes, activation="softmax", name=OUTPUT_NAME)(x)
    return keras.Model(images, probabilities, name="face_cnn")


def _cifar_family(name: str, input_shape, num_classes: int, batch_norm: bool):
    """003_*.txt's first CNN: conv64 3x3 - pool - conv128 2x2 - conv128 2x2 - pool - conv256 1x1 - pool -
    conv512 1x1 - flatten - dense 1024 + dropout .5 - softmax. With ``batch_norm`` (004_*.txt §2.2, CIFAR-100)
    each conv and the dense layer are followed by batch norm before the relu."""
    import keras
    from keras import layers

    images, x = served_input(input_shape, 1.0 / 255.0, 0.0)

    def conv(x, filters, kernel, idx):
        if not batch_norm:
            return layers.Conv2D(filters, kernel, padding="same", activation="relu", name=f"conv{idx}")(x)
        x = layers.Conv2D(filters, kernel, padding="same", use_bias=False, name=f"conv{idx}")(x)
        x = layers.BatchNormalization(name=f"bn{idx}")(x)
        return layers.ReLU(name=f"relu{idx}")(x)

    x = conv(x, 64, 3, 1)
    x = layers.MaxPooling2D(2, padding="same", name="pool1")(x)
    x = conv(x, 128, 2, 2)
    x = conv(x, 128, 2, 3)
    x = layers.MaxPooling2D(2, padding="same", name="pool2")(x)
    x = conv(x, 256, 1, 4)
    x = layers.MaxPooling2D(2, padding="same", name="pool3")(x)
    x = conv(x, 512, 1, 5)
    x = layers.Flatten(name="flatten")(x)
    if batch_norm:
        x = layers.Dense(1024, use_bias=False, name="fc1")(x)
        x = layers.BatchNormalization(name="bn_fc1")(x)
        x = layers.ReLU(name="relu_fc1")(x)
    else:
        x = layers.Dense(1024, activation="relu", name="fc1")(x)
    x = layers.Dropout(0.5, name="dropout1")(x)
    probabilities = layers.Dense(num_classes, activation="softmax", name=OUTPUT_NAME)(x)
    return keras.Model(images, probabilities, name=name)


def build_cifar10_cnn(input_shape=(32, 32, 3), num_classes=10, weights=None):
    _no_weights("cifar10_cnn", weights)
    return _cifar_family("cifar10_cnn", input_shape, num_classes, batch_norm=False)


def build_cifar100_cnn(input_shape=(32, 32, 3), num_classes=100, weights=None):
    _no_weights("cifar100_cnn", weights)
    return _cifar_family("cifar100_cnn", input_shape, num_classes, batch_norm=True)


def build_alexnet(input_shape=(227, 227, 3), num_classes=1000, weights=None):
    """AlexNet (002_*.txt §3) in Keras: 5 convs (11x11/4, 5x5, 3x3 x3) with 3x3/2 max pools and two
    4096 dense layers with dropout; batch normalization where the original used local response norm."""
    import keras
    from keras import layers

    images, x = served_input(input_shape, 1.0 / 255.0, 0.0)
    x = layers.Conv2D(96, 11, strides=4, activation="relu", name="conv1")(x)  # 55x55
    x = layers.BatchNormalization(name="norm1")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)  # 27x27
    x = layers.Conv2D(256, 5, padding="same", activation="relu", name="conv2")(x)
    x = layers.BatchNormalization(name="norm2")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool2")(x)  # 13x13
    x = layers.Conv2D(384, 3, padding="same", activation="relu", name="conv3")(x)
    x = layers.Conv2D(384, 3, padding="same", activation="relu", name="conv4")(x)
    x = layers.Conv2D(256, 3, padding="same", activation="relu", name="conv5")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool5")(x)  # 6x6x256
    x = layers.Flatten(name="flatten")(x)
    x = _dense_dropout(x, (4096, 4096), 0.5, start=6)
    probabilities = layers.Dense(num_classes, activation="softmax", name=OUTPUT_NAME)(x)
    model = keras.Model(images, probabilities, name="alexnet")
    if weights not in (None, "none"):  # Keras publishes no AlexNet weights: a PATH is this model's .weights.h5
        if weights == "imagenet":
            raise ValueError("No ImageNet weights are published for alexnet; pass a .weights.h5 path or none")
        model.load_weights(weights)
    return model


# ------------------------------------------------------------------ keras.applications

_AUTO_PREFIXES = {
    "conv2d": "conv",
    "batch_normalization": "bn",
    "activation": "relu",
    "max_pooling2d": "maxpool",
    "average_pooling2d": "avgpool",
    "concatenate": "concat",
}


def stable_layer_names(model) -> None:
    """Rename Keras' automatic layer names (``conv2d_93``: a process-wide counter, different after any
    other model was built) to stable ones numbered in graph order (``conv94``), before anything is saved."""
    import re

    pattern = re.compile(rf"^({'|'.join(_AUTO_PREFIXES)})(_\d+)?$")
    counters: dict[str, int] = {}
    for layer in model.layers:
        match = pattern.match(layer.name)
        if match:
            short = _AUTO_PREFIXES[match.group(1)]
            counters[short] = counters.get(short, 0) + 1
            layer.name = f"{short}{counters[short]}"


def _application(app_name: str, input_shape, num_classes: int, weights, scale, offset, bgr_first_conv):
    """A keras.applications classifier with its own preprocessing in the graph and a named softmax.

    The application is built on our ``rescale`` output (``input_tensor``), so its layers are the served
    model's own layers (Grad-CAM can address ``block5_conv3`` directly). Its classifier emits logits and a
    separate ``probabilities`` softmax follows, so the output has the contract's name.
    """
    import keras
    from keras import layers

    weights = _app_weights(weights)
    if weights is not None and num_classes != 1000:
        raise ValueError(f"{app_name} with ImageNet weights has 1000 classes. Received: num_classes={num_classes}")
    images, x = served_input(input_shape, scale, offset)
    factory = getattr(keras.applications, app_name)
    app = factory(include_top=True, weights=weights, input_tensor=x, classes=num_classes, classifier_activation=None)
    probabilities = layers.Activation("softmax", name=OUTPUT_NAME)(app.output)
    model = keras.Model(images, probabilities, name=app_name.lower())
    stable_layer_names(model)
    if bgr_first_conv:
        fold_rgb_to_bgr(model, bgr_first_conv)
    return model


_CAFFE = {"scale": 1.0, "offset": tuple(-m for m in CAFFE_MEAN_RGB)}


def build_vgg16(input_shape=(224, 224, 3), num_classes=1000, weights=None):
    return _application("VGG16", input_shape, num_classes, weights, **_CAFFE, bgr_first_conv="block1_conv1")


def build_vgg19(input_shape=(224, 224, 3), num_classes=1000, weights=None):
    return _application("VGG19", input_shape, num_classes, weights, **_CAFFE, bgr_first_conv="block1_conv1")


def build_resnet50(input_shape=(224, 224, 3), num_classes=1000, weights=None):
    return _application("ResNet50", input_shape, num_classes, weights, **_CAFFE, bgr_first_conv="conv1_conv")


def build_inception_v3(input_shape=(299, 299, 3), num_classes=1000, weights=None):
    # Inception's "tf" preprocessing: x / 127.5 - 1, RGB.
    return _application("InceptionV3", input_shape, num_classes, weights, 1.0 / 127.5, -1.0, bgr_first_conv=None)


def _vgg16_binary(name: str, input_shape, num_classes: int, weights, fine_tune: bool):
    """000_*.txt §4.3/§4.4: VGG16 without top (frozen; block5_conv1..3 trainable when fine-tuning),
    Flatten, Dense 256 relu, (Dropout .3), one sigmoid unit. Served as [1 - p, p] over the two classes."""
    import keras
    from keras import layers

    if num_classes != 2:
        raise ValueError(f"{name} separates two classes. Received: num_classes={num_classes}")
    images, x = served_input(input_shape, **_CAFFE)
    base = keras.applications.VGG16(include_top=False, weights=_app_weights(weights), input_tensor=x)
    trainable = {"block5_conv1", "block5_conv2", "block5_conv3"} if fine_tune else set()
    for layer in base.layers:
        layer.trainable = layer.name in trainable
    x = layers.Flatten(name="flatten")(base.output)
    x = layers.Dense(256, activation="relu", name="fc1")(x)
    if fine_tune:
        x = layers.Dropout(0.3, name="dropout1")(x)
    p = layers.Dense(1, activation="sigmoid", name="sigmoid")(x)
    q = layers.Rescaling(-1.0, offset=1.0, name="complement")(p)  # 1 - p, a built-in layer (no Lambda)
    probabilities = layers.Concatenate(name=OUTPUT_NAME)([q, p])
    model = keras.Model(images, probabilities, name=name)
    fold_rgb_to_bgr(model, "block1_conv1")
    return model


def build_vgg16_transfer(input_shape=(256, 256, 3), num_classes=2, weights=None):
    return _vgg16_binary("vgg16_transfer", input_shape, num_classes, weights, fine_tune=False)


def build_vgg16_finetune(input_shape=(256, 256, 3), num_classes=2, weights=None):
    return _vgg16_binary("vgg16_finetune", input_shape, num_classes, weights, fine_tune=True)
