"""The one table of CNN variants that training, export, the explainer and the tests read.

This module must import without TensorFlow: the server and other light-weight code read the table
(labels, input shapes, batching limits, layer names) and never build a model. Every factory imports
Keras inside the function.

Each factory returns the *served* Keras model, end to end:

    images (uint8, [None, H, W, C], raw 0-255)  ->  rescale (in-graph scaling)  ->  core CNN
        ->  probabilities (float32, [None, K], softmax)

so the SavedModel, the ``.keras`` file and the ONNX model all share one contract and no client ever has
to normalise pixels itself. Every layer carries an explicit name so that Grad-CAM and activation requests
can address layers by stable names (``conv1``, ``pool1``, ...).

To add a variant: write a ``build_<name>`` factory with named layers in ``architectures.py`` and register
a :class:`Variant` in ``VARIANTS``; the parameterised tests (``tests/test_training.py``,
``tests/test_variants.py``) pick it up automatically.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnserve.training import architectures as arch
from cnnserve.training.architectures import CAFFE_MEAN_RGB

DIGIT_LABELS: tuple[str, ...] = tuple(str(i) for i in range(10))
# Package data (installed with the wheel): the registry must load in every image, the server's included.
RESOURCES = Path(__file__).resolve().parent / "resources"
IMAGENET_CLASSES_FILE = RESOURCES / "imagenet-classes.txt"
"""The 1,000 ImageNet-1k class names in Keras' class-index order (source and license beside it)."""
CIFAR10_LABELS = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# CIFAR-100 fine labels in index order (the "fine_label_names" of the dataset's meta file).
CIFAR100_LABELS = tuple(
    """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can
    castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin
    elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster
    man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck
    pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk
    skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger
    tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split()
)
FACE_LABELS = tuple(f"person{i}" for i in range(10))
"""Placeholder: face_cnn's labels are the person folders of the training data (one output per person)."""
CATS_DOGS_LABELS = ("cats", "dogs")
"""Default: vgg16_transfer/_finetune take the two class folders' names (sorted) of the training data."""


@functools.cache
def imagenet_labels() -> tuple[str, ...]:
    names = tuple(line.strip() for line in IMAGENET_CLASSES_FILE.read_text().splitlines() if line.strip())
    if len(names) != 1000:
        raise RuntimeError(f"{IMAGENET_CLASSES_FILE} must list 1000 classes. Received: {len(names)}")
    return names


@dataclass(frozen=True)
class Preprocessing:
    """How raw client pixels become the model's uint8 input (the server resizes; the graph scales)."""

    color_mode: str = "grayscale"
    """``grayscale`` (1 channel) or ``rgb`` (3 channels)."""
    resize: str = "bilinear"
    """Interpolation the server uses to resize decoded images to (H, W)."""
    in_graph: str = "x / 255.0"
    """The scaling the model applies inside its graph to the uint8 input."""
    scale: float | tuple[float, ...] = 1.0 / 255.0
    offset: float | tuple[float, ...] = 0.0
    """Per-channel tuples (RGB order) where the scaling differs per channel (ImageNet's caffe mode)."""
    invert_hint: str | None = None
    """Advice for clients whose images have the opposite polarity to the training data."""


MNIST_INVERT_HINT = "MNIST digits are white ink on black; invert dark-on-light photos"
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # of x / 255 over the MNIST training set

MNIST_PREPROCESSING = Preprocessing(invert_hint=MNIST_INVERT_HINT)

# Standardised input: a sigmoid LeNet on [0, 1] inputs sits on the loss plateau (2.30) for many epochs
# under SGD, because every first-layer unit starts near sigmoid(0); zero-mean, unit-variance inputs
# (in the graph, still raw uint8 on the wire) make it leave the plateau within two epochs.
MNIST_STANDARDISED = Preprocessing(
    in_graph=f"(x / 255.0 - {MNIST_MEAN}) / {MNIST_STD}",
    scale=1.0 / (255.0 * MNIST_STD),
    offset=-MNIST_MEAN / MNIST_STD,
    invert_hint=MNIST_INVERT_HINT,
)


@dataclass(frozen=True)
class Augmentation:
    """Training-only random transforms (never part of the served graph). Zero disables one."""

    max_shift: float = 0.0
    """Fraction of height/width for random translation."""
    max_rotation: float = 0.0
    """Fraction of a full turn for random rotation (0.03 is about 11 degrees)."""
    max_zoom: float = 0.0
    """Fraction for random zoom in and out."""
    max_shear: float = 0.0
    """Shear intensity (Keras ``RandomShear`` factor) along x and y."""
    horizontal_flip: bool = False
    fill_mode: str = "constant"
    """How transforms fill uncovered pixels: ``constant`` (0, digits' background) or ``nearest``."""
    elastic_alpha: float = 0.0
    """Above 0: elastic distortion (Simard et al. 2003) with displacements of up to about this many pixels
    before smoothing; the affine jitter above and the distortion are then applied together as one
    resampling in NumPy (``augment.distort``) instead of the Keras layers."""
    elastic_sigma: float = 4.0
    """Standard deviation in pixels of the Gaussian that smooths the elastic displacement field."""
    numpy_sampler: bool = False
    """True: the affine jitter as one NumPy resampling (``augment.distort``) even without elastic distortion
    (the sampler is always used where ``elastic_alpha`` is above 0)."""


@dataclass(frozen=True)
class Variant:
    """One CNN variant: how to build, train and serve it."""

    name: str
    build: Callable[..., Any]
    """Factory ``build(input_shape, num_classes, weights=None)`` returning the uncompiled served
    ``keras.Model`` (uint8 ``images`` -> ``probabilities``); see :meth:`make_model`."""
    input_shape: tuple[int, int, int]
    """(H, W, C), without the batch dimension."""
    labels: tuple[str, ...]
    """Default labels; loaders that read class folders (faces, cats vs dogs) supply the data's own."""
    dataset: str
    """Key of the loader in ``cnnserve.training.data`` (e.g. ``"mnist"``)."""
    last_conv_layer: str
    """Name of the last Conv2D layer (the Grad-CAM target unless ``cam_layer`` names another)."""
    optimizer: Callable[[int], Any]
    """Factory taking the total number of training steps (for LR schedules) and returning a fresh Keras
    optimizer (imports Keras lazily)."""
    description: str
    loss: str = "sparse_categorical_crossentropy"
    label_smoothing: float = 0.0
    """Above 0: train with ``CategoricalCrossentropy(label_smoothing=...)`` on one-hot labels instead of
    ``loss`` (Keras 3's sparse cross-entropy has no label smoothing); the served model is unchanged."""
    epochs: int = 10
    batch_size: int = 64
    max_batch_size: int = 64
    """Serving: Triton ``max_batch_size`` and the dynamic batcher's limit, in samples."""
    max_queue_delay_microseconds: int = 2000
    preferred_batch_size: int = 0
    """Serving: Triton ``dynamic_batching.preferred_batch_size`` (0: none); the batcher dispatches a batch
    as soon as it holds this many samples."""
    intra_op_threads: int = 0
    """Serving: onnxruntime threads per session (Triton's ``parameters { intra_op_thread_count }``); 0: the
    server's setting. Small models run faster on one thread beside a busy event loop (docs/benchmarks.md)."""
    preprocessing: Preprocessing = MNIST_PREPROCESSING
    augmentation: Augmentation = field(default_factory=Augmentation)
    optimizer_note: str = ""
    """Why these optimizer settings (recorded in the training metadata)."""
    reference: str = ""
    """Where the network comes from in the reference material, and the accuracy it reports."""
    default_weights: str | None = None
    """``"imagenet"`` for keras.applications-based variants (``--weights imagenet|none|PATH``); None: none."""
    smoke_input_shape: tuple[int, int, int] | None = None
    """Smaller input for ``--smoke`` where the architecture allows it (global pooling, no top);
    None keeps ``input_shape`` (a Flatten into a fixed-size dense layer)."""
    heavy: bool = False
    """VGG-sized: ONNX conversion needs GBs of memory and minutes; kept out of the default test run."""
    default_data: str = ""
    """Default ``--data`` for real training (a path, or where to put the Keras download)."""
    cam_layer: str = ""
    """The default Grad-CAM layer where it is not the last Conv2D (empty: ``last_conv_layer``); a block's
    output after its residual addition or concatenation, as Keras' and pytorch-grad-cam's examples use."""

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def heatmap_layer(self) -> str:
        """The default Grad-CAM layer: ``cam_layer``, else ``last_conv_layer``."""
        return self.cam_layer or self.last_conv_layer

    @property
    def params(self) -> int:
        """Parameters at the registered input shape and classes (``PARAM_COUNTS``, checked by the tests)."""
        return PARAM_COUNTS[self.name]

    @property
    def pretrained(self) -> bool:
        return self.default_weights is not None

    def make_model(self, input_shape=None, num_classes=None, weights=None):
        """Build the served Keras model (TensorFlow needed); defaults: the registered shape and classes."""
        return self.build(tuple(input_shape or self.input_shape), int(num_classes or self.num_classes), weights=weights)

    def optimizer_description(self) -> str:
        return self.optimizer_note


# --------------------------------------------------------------------------------------------------
# Optimizers: factories taking the total number of training steps. Keras is imported inside.
# --------------------------------------------------------------------------------------------------


def _adam_cosine(total_steps: int):
    """Adam from 1e-3, cosine-decayed to 1 % over the run."""
    import keras

    schedule = keras.optimizers.schedules.CosineDecay(1e-3, decay_steps=max(1, total_steps), alpha=0.01)
    return keras.optimizers.Adam(learning_rate=schedule)


def _adam_cosine_to_zero(total_steps: int):
    """Adam from 1e-3, cosine-decayed to 0 over the run."""
    import keras

    schedule = keras.optimizers.schedules.CosineDecay(1e-3, decay_steps=max(1, total_steps))
    return keras.optimizers.Adam(learning_rate=schedule)


def _sgd_momentum_cosine(total_steps: int):
    """SGD with Nesterov momentum 0.9 from lr 0.1 (effective step 1.0, like the reference's plain
    SGD at lr 0.9), cosine-decayed to 1 % over the run."""
    import keras

    schedule = keras.optimizers.schedules.CosineDecay(0.1, decay_steps=max(1, total_steps), alpha=0.01)
    return keras.optimizers.SGD(learning_rate=schedule, momentum=0.9, nesterov=True)


def _adam(learning_rate: float) -> Callable[[int], Any]:
    """Constant-rate Adam, as the tutorials use it."""

    def make(total_steps: int):
        import keras

        return keras.optimizers.Adam(learning_rate=learning_rate)

    make.__doc__ = f"Adam({learning_rate:g})"
    return make


def _sgd_cosine(learning_rate: float) -> Callable[[int], Any]:
    def make(total_steps: int):
        import keras

        schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(1, total_steps), alpha=0.01)
        return keras.optimizers.SGD(learning_rate=schedule, momentum=0.9)

    return make


# --------------------------------------------------------------------------------------------------
# The table.
# --------------------------------------------------------------------------------------------------

# mnist_cnn's recipe (issue 16, 5-fold cross-validation inside data/mnist-8k.npz: docs/models.md): affine jitter
# (about 11 degrees, 10 % zoom, shear .15, 8 % shifts) and Simard's elastic distortion (alpha 34, sigma 4), drawn
# per image and applied as one resampling (augment.distort). lenet5 keeps the light Keras jitter: on the one fold
# measured for it, neither this augmentation nor the affine part alone was better by more than the fold's noise.
_DIGIT_ELASTIC = Augmentation(
    max_shift=0.08, max_rotation=0.03, max_zoom=0.1, max_shear=0.15, elastic_alpha=34.0, elastic_sigma=4.0
)
_DIGIT_LIGHT = Augmentation(max_shift=0.08, max_rotation=0.025, max_zoom=0.08)
# 000_*.txt §3: rotation 50 degrees, shifts .3, shear .3, zoom .3, horizontal flip (training split only).
_FACE_AUGMENTATION = Augmentation(
    max_shift=0.3, max_rotation=50 / 360, max_zoom=0.3, max_shear=0.3, horizontal_flip=True, fill_mode="nearest"
)
# 000_*.txt §4.3/4.4: rotation 20 degrees, shifts .2, shear .2, zoom .2, horizontal flip.
_CATS_DOGS_AUGMENTATION = Augmentation(
    max_shift=0.2, max_rotation=20 / 360, max_zoom=0.2, max_shear=0.2, horizontal_flip=True, fill_mode="nearest"
)
_CIFAR_AUGMENTATION = Augmentation(max_shift=0.1, horizontal_flip=True, fill_mode="nearest")

_RGB = Preprocessing(color_mode="rgb")
_CAFFE = Preprocessing(
    color_mode="rgb",
    in_graph=f"x - {list(CAFFE_MEAN_RGB)} (RGB means; the RGB->BGR swap is folded into the first conv's kernel)",
    scale=1.0,
    offset=tuple(-m for m in CAFFE_MEAN_RGB),
)
_INCEPTION = Preprocessing(color_mode="rgb", in_graph="x / 127.5 - 1", scale=1.0 / 127.5, offset=-1.0)
_LENET_BUILD = functools.partial(arch.build_lenet5, scale=MNIST_STANDARDISED.scale, offset=MNIST_STANDARDISED.offset)


def _cats_dogs_vgg16(name: str, build, description: str, reference: str) -> Variant:
    """The two VGG16 cats-vs-dogs variants of the reference: the same data, input, training and serving."""
    return Variant(
        name=name,
        build=build,
        input_shape=(256, 256, 3),
        labels=CATS_DOGS_LABELS,
        dataset="split_folders",
        last_conv_layer="block5_conv3",
        optimizer=_adam(3e-4),
        optimizer_note="Adam(3e-4), as the reference; batch 16 (reference 50) for CPU memory",
        description=description,
        epochs=30,
        batch_size=16,
        max_batch_size=16,
        preprocessing=_CAFFE,
        augmentation=_CATS_DOGS_AUGMENTATION,
        reference=reference,
        default_weights="imagenet",
        smoke_input_shape=(64, 64, 3),
        default_data="cats_and_dogs",
    )


def _imagenet_variant(name: str, build, input_shape, pre: Preprocessing, last_conv: str, description: str, **kw):
    return Variant(
        name=name,
        build=build,
        input_shape=input_shape,
        labels=imagenet_labels(),
        dataset="image_folders",
        last_conv_layer=last_conv,
        optimizer=_sgd_cosine(1e-3),
        optimizer_note="SGD(1e-3, momentum 0.9, cosine) for fine-tuning the ImageNet classifier on local "
        "class folders; the default is 0 epochs: the ImageNet weights served as they are",
        description=description,
        epochs=0,
        batch_size=16,
        max_batch_size=16,
        preprocessing=pre,
        default_weights="imagenet",
        **kw,
    )


# Parameter counts at the registered shapes (keras.applications' published counts for the ImageNet models);
# `cnnserve variants` prints them without TensorFlow, tests/training/test_training.py rebuilds every model to check them.
PARAM_COUNTS = {
    "mnist_cnn": 3_540_144,
    "lenet5": 44_426,
    "digits_bn": 2_135,
    "face_cnn": 19_281_758,
    "vgg16_transfer": 23_103_809,
    "vgg16_finetune": 23_103_809,
    "vgg16": 138_357_544,
    "vgg19": 143_667_240,
    "inception_v3": 23_851_784,
    "resnet50": 25_636_712,
    "alexnet": 62_379_752,
    "cifar10_cnn": 8_664_842,
    "cifar100_cnn": 8_763_428,
}

VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(
            name="mnist_cnn",
            build=arch.build_mnist_cnn,
            input_shape=(28, 28, 1),
            labels=DIGIT_LABELS,
            dataset="mnist",
            last_conv_layer="conv2",
            optimizer=_adam_cosine_to_zero,
            optimizer_note="Adam(1e-3, cosine decay to 0), batch 64, label smoothing 0.1, affine + elastic "
            "augmentation, 24 epochs (5-fold cross-validation: docs/models.md); the reference's Adam(3e-3) with "
            "batch 500 is meant for 60k digits; on 7k digits smaller batches give more steps per epoch",
            description="MNIST CNN: conv5x5x32-pool-conv5x5x64-pool-fc1024-fc256-fc50 (dropout 0.5)-softmax10",
            # One onnxruntime thread beside the event loop; on one thread larger batches are cheaper per
            # image, so no preferred batch size (docs/benchmarks.md, "the preferred batch size removed again").
            intra_op_threads=1,
            epochs=24,  # the recipe's cross-validation: docs/models.md
            batch_size=64,
            label_smoothing=0.1,
            augmentation=_DIGIT_ELASTIC,
            reference="000_*.txt §2 (MNIST CNN, Adam 3e-3, batch 500)",
            default_data="data/mnist-8k.npz",
        ),
        Variant(
            name="lenet5",
            build=_LENET_BUILD,
            input_shape=(28, 28, 1),
            labels=DIGIT_LABELS,
            dataset="mnist",
            last_conv_layer="conv2",
            optimizer=_sgd_momentum_cosine,
            optimizer_note="SGD(lr=0.1, Nesterov momentum 0.9, cosine decay), batch 32, standardised "
            "input: on [0, 1] inputs every SGD setting tried (lr 0.1-1.0, momentum 0/0.9, batch 16-64) "
            "stayed on the 2.30 loss plateau for 8+ epochs; the reference's plain SGD lr=0.9 needs "
            "unscaled 0-255 input to leave it",
            description="LeNet-5: conv5x5x6-pool-conv5x5x16-pool-fc120-fc84-softmax10, sigmoid activations",
            epochs=40,  # kept by issue 16's measurements: docs/models.md
            batch_size=32,
            preprocessing=MNIST_STANDARDISED,
            augmentation=_DIGIT_LIGHT,
            reference="001_*.txt / 004_*.txt §2.4.1 (LeNet-5, sigmoid, SGD)",
            default_data="data/mnist-8k.npz",
        ),
        Variant(
            name="digits_bn",
            build=arch.build_digits_bn,
            input_shape=(8, 8, 1),
            labels=DIGIT_LABELS,
            dataset="digits",
            last_conv_layer="conv2",
            optimizer=_adam_cosine_to_zero,
            optimizer_note="Adam(1e-3, cosine decay to 0 over the run), batch 8, label smoothing 0.1, "
            "training-only input noise (sd 0.1) and dropout 0.2 after conv1; chosen by 5-fold validation on the "
            "training digits, held-out over 10 seeds in docs/models.md (the tutorial: constant Adam(1e-3), "
            "1000 epochs on all 1797 digits)",
            description="sklearn 8x8 digits: conv3x3x10-conv3x3/2x5-BN-relu-maxpool3x3/2-fc50-softmax10",
            epochs=100,  # the recipe's research over 10 seeds: docs/models.md
            batch_size=8,
            label_smoothing=0.1,
            preprocessing=Preprocessing(in_graph="x / 255.0 (the loader maps sklearn's 0-16 to 0-255)"),
            reference="002_*.txt code example: 99.9 % on its own training data",
            default_data="sklearn",
        ),
        Variant(
            name="face_cnn",
            build=arch.build_face_cnn,
            input_shape=(70, 50, 3),
            labels=FACE_LABELS,
            dataset="faces",
            last_conv_layer="conv3",
            optimizer=_adam(1e-3),
            optimizer_note="Adam(1e-3), batch 20, as the reference; softmax cross-entropy instead of its "
            "sigmoid + binary cross-entropy (one person per image)",
            description="faces 70x50: conv5x5x32/64/128 with pools-fc8192-fc1024-fc128 (dropout .5)-fc60-softmax",
            epochs=30,
            batch_size=20,
            preprocessing=_RGB,
            augmentation=_FACE_AUGMENTATION,
            reference="000_*.txt §3: 'above 90 %' on its test folders (faces cut from short videos)",
            default_data="faces",
        ),
        _cats_dogs_vgg16(
            "vgg16_transfer",
            arch.build_vgg16_transfer,
            "VGG16 base (frozen, ImageNet) -flatten-fc256-sigmoid, served as [1-p, p]",
            "000_*.txt §4.3: 93 % on cats vs dogs (2000 train / 1000 validation images)",
        ),
        _cats_dogs_vgg16(
            "vgg16_finetune",
            arch.build_vgg16_finetune,
            "VGG16 base (ImageNet; block5_conv1..3 trainable) -flatten-fc256-dropout.3-sigmoid, served as [1-p, p]",
            "000_*.txt §4.4: 95 % on cats vs dogs",
        ),
        _imagenet_variant(
            "vgg16",
            arch.build_vgg16,
            (224, 224, 3),
            _CAFFE,
            "block5_conv3",
            "VGG16 ImageNet classifier (keras.applications), 1000 classes",
            reference="000_*.txt §5-7 (ImageNet VGG16: decode_predictions, filters, heat maps); Keras: 71.3 % top-1",
            heavy=True,
        ),
        _imagenet_variant(
            "vgg19",
            arch.build_vgg19,
            (224, 224, 3),
            _CAFFE,
            "block5_conv4",
            "VGG19 ImageNet classifier (keras.applications), 1000 classes",
            reference="002_*.txt §3 / 003_*.txt (VGGNet); Keras: 71.3 % top-1",
            heavy=True,
        ),
        _imagenet_variant(
            "inception_v3",
            arch.build_inception_v3,
            (299, 299, 3),
            _INCEPTION,
            "conv94",
            "Inception v3 ImageNet classifier (keras.applications), 1000 classes",
            # conv94 is one 1x1 branch of the last block; mixed10 concatenates all its branches (8x8x2048).
            cam_layer="mixed10",
            reference="003_*.txt (GoogLeNet / Inception line); Keras: 77.9 % top-1",
            smoke_input_shape=(75, 75, 3),
        ),
        _imagenet_variant(
            "resnet50",
            arch.build_resnet50,
            (224, 224, 3),
            _CAFFE,
            "conv5_block3_3_conv",
            "ResNet50 ImageNet classifier (keras.applications), 1000 classes",
            # conv5_block3_3_conv is the residual branch before the addition; the block's output (add + relu).
            cam_layer="conv5_block3_out",
            reference="003_*.txt (ResNet); Keras: 74.9 % top-1",
            smoke_input_shape=(32, 32, 3),
        ),
        Variant(
            name="alexnet",
            build=arch.build_alexnet,
            input_shape=(227, 227, 3),
            labels=imagenet_labels(),
            dataset="image_folders",
            last_conv_layer="conv5",
            optimizer=_sgd_cosine(1e-2),
            optimizer_note="SGD(1e-2, momentum 0.9, cosine), batch 32 (original: 128, lr 1e-2 stepped)",
            description="AlexNet in Keras: conv11x11/4x96-BN-pool-conv5x5x256-BN-pool-conv3x3x384/384/256-pool-"
            "fc4096-fc4096 (dropout .5)-softmax1000; batch norm instead of LRN",
            epochs=90,
            batch_size=32,
            max_batch_size=16,
            preprocessing=_RGB,
            reference="002_*.txt §3 (AlexNet); original paper: 62.5 % top-1 on ImageNet",
            heavy=True,
            default_data="imagenet",
        ),
        Variant(
            name="cifar10_cnn",
            build=arch.build_cifar10_cnn,
            input_shape=(32, 32, 3),
            labels=CIFAR10_LABELS,
            dataset="cifar10",
            last_conv_layer="conv5",
            optimizer=_adam(1e-3),
            optimizer_note="Adam(1e-3), batch 128, 20 epochs, as the tutorial",
            description="CIFAR-10: conv3x3x64-pool-conv2x2x128-conv2x2x128-pool-conv1x1x256-pool-conv1x1x512-"
            "fc1024 (dropout .5)-softmax10",
            epochs=20,
            batch_size=128,
            preprocessing=_RGB,
            reference="003_*.txt 'our first CNN' (CIFAR-10, no figure quoted)",
            default_data="cifar-10-batches-py",
        ),
        Variant(
            name="cifar100_cnn",
            build=arch.build_cifar100_cnn,
            input_shape=(32, 32, 3),
            labels=CIFAR100_LABELS,
            dataset="cifar100",
            last_conv_layer="conv5",
            optimizer=_adam(1e-3),
            optimizer_note="Adam(1e-3), batch 128",
            description="CIFAR-100: the CIFAR-10 net with batch norm after every conv and the dense layer",
            epochs=30,
            batch_size=128,
            preprocessing=_RGB,
            augmentation=_CIFAR_AUGMENTATION,
            reference="004_*.txt §2.2 (CIFAR-100 with BN, no figure quoted)",
            default_data="cifar-100-python",
        ),
    )
}


def get_variant(name: str) -> Variant:
    """Return the registered variant ``name``; KeyError lists the known names."""
    try:
        return VARIANTS[name]
    except KeyError:
        known = ", ".join(sorted(VARIANTS))
        raise KeyError(f"Unknown CNN variant {name!r}. Known variants: {known}") from None
