from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HeatmapMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEATMAP_METHOD_UNSPECIFIED: _ClassVar[HeatmapMethod]
    HEATMAP_METHOD_GRADCAM: _ClassVar[HeatmapMethod]
    HEATMAP_METHOD_GRAD_X_ACTIVATION: _ClassVar[HeatmapMethod]
    HEATMAP_METHOD_GRADCAM_PLUS_PLUS: _ClassVar[HeatmapMethod]
    HEATMAP_METHOD_SCORE_CAM: _ClassVar[HeatmapMethod]
HEATMAP_METHOD_UNSPECIFIED: HeatmapMethod
HEATMAP_METHOD_GRADCAM: HeatmapMethod
HEATMAP_METHOD_GRAD_X_ACTIVATION: HeatmapMethod
HEATMAP_METHOD_GRADCAM_PLUS_PLUS: HeatmapMethod
HEATMAP_METHOD_SCORE_CAM: HeatmapMethod

class RawImage(_message.Message):
    __slots__ = ("data", "height", "width", "channels")
    DATA_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    height: int
    width: int
    channels: int
    def __init__(self, data: _Optional[bytes] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., channels: _Optional[int] = ...) -> None: ...

class ExplainImage(_message.Message):
    __slots__ = ("id", "encoded", "raw")
    ID_FIELD_NUMBER: _ClassVar[int]
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    id: str
    encoded: bytes
    raw: RawImage
    def __init__(self, id: _Optional[str] = ..., encoded: _Optional[bytes] = ..., raw: _Optional[_Union[RawImage, _Mapping]] = ...) -> None: ...

class FloatTensor(_message.Message):
    __slots__ = ("shape", "data")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class HeatmapRequest(_message.Message):
    __slots__ = ("model_name", "model_version", "images", "method", "layer", "target_class", "overlay_alpha", "max_channels")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    TARGET_CLASS_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_ALPHA_FIELD_NUMBER: _ClassVar[int]
    MAX_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    images: _containers.RepeatedCompositeFieldContainer[ExplainImage]
    method: HeatmapMethod
    layer: str
    target_class: int
    overlay_alpha: float
    max_channels: int
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., images: _Optional[_Iterable[_Union[ExplainImage, _Mapping]]] = ..., method: _Optional[_Union[HeatmapMethod, str]] = ..., layer: _Optional[str] = ..., target_class: _Optional[int] = ..., overlay_alpha: _Optional[float] = ..., max_channels: _Optional[int] = ...) -> None: ...

class HeatmapResult(_message.Message):
    __slots__ = ("id", "heatmap", "predicted_class", "predicted_label", "predicted_score", "target_class", "target_score", "overlay_png")
    ID_FIELD_NUMBER: _ClassVar[int]
    HEATMAP_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_CLASS_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_LABEL_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_SCORE_FIELD_NUMBER: _ClassVar[int]
    TARGET_CLASS_FIELD_NUMBER: _ClassVar[int]
    TARGET_SCORE_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_PNG_FIELD_NUMBER: _ClassVar[int]
    id: str
    heatmap: FloatTensor
    predicted_class: int
    predicted_label: str
    predicted_score: float
    target_class: int
    target_score: float
    overlay_png: bytes
    def __init__(self, id: _Optional[str] = ..., heatmap: _Optional[_Union[FloatTensor, _Mapping]] = ..., predicted_class: _Optional[int] = ..., predicted_label: _Optional[str] = ..., predicted_score: _Optional[float] = ..., target_class: _Optional[int] = ..., target_score: _Optional[float] = ..., overlay_png: _Optional[bytes] = ...) -> None: ...

class HeatmapResponse(_message.Message):
    __slots__ = ("model_name", "model_version", "layer", "method", "pre_softmax", "results", "faithfulness")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PRE_SOFTMAX_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    FAITHFULNESS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    layer: str
    method: HeatmapMethod
    pre_softmax: bool
    results: _containers.RepeatedCompositeFieldContainer[HeatmapResult]
    faithfulness: FaithfulnessScore
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., layer: _Optional[str] = ..., method: _Optional[_Union[HeatmapMethod, str]] = ..., pre_softmax: _Optional[bool] = ..., results: _Optional[_Iterable[_Union[HeatmapResult, _Mapping]]] = ..., faithfulness: _Optional[_Union[FaithfulnessScore, _Mapping]] = ...) -> None: ...

class FaithfulnessScore(_message.Message):
    __slots__ = ("layer", "method", "deletion_auc", "insertion_auc", "randomisation_correlation", "passes_randomisation", "score", "pointing_game", "heat_ratio", "seconds")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    DELETION_AUC_FIELD_NUMBER: _ClassVar[int]
    INSERTION_AUC_FIELD_NUMBER: _ClassVar[int]
    RANDOMISATION_CORRELATION_FIELD_NUMBER: _ClassVar[int]
    PASSES_RANDOMISATION_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    POINTING_GAME_FIELD_NUMBER: _ClassVar[int]
    HEAT_RATIO_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    layer: str
    method: str
    deletion_auc: float
    insertion_auc: float
    randomisation_correlation: float
    passes_randomisation: bool
    score: float
    pointing_game: float
    heat_ratio: float
    seconds: float
    def __init__(self, layer: _Optional[str] = ..., method: _Optional[str] = ..., deletion_auc: _Optional[float] = ..., insertion_auc: _Optional[float] = ..., randomisation_correlation: _Optional[float] = ..., passes_randomisation: _Optional[bool] = ..., score: _Optional[float] = ..., pointing_game: _Optional[float] = ..., heat_ratio: _Optional[float] = ..., seconds: _Optional[float] = ...) -> None: ...

class ActivationsRequest(_message.Message):
    __slots__ = ("model_name", "model_version", "images", "layer", "channels", "omit_tensors")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    OMIT_TENSORS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    images: _containers.RepeatedCompositeFieldContainer[ExplainImage]
    layer: str
    channels: _containers.RepeatedScalarFieldContainer[int]
    omit_tensors: bool
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., images: _Optional[_Iterable[_Union[ExplainImage, _Mapping]]] = ..., layer: _Optional[str] = ..., channels: _Optional[_Iterable[int]] = ..., omit_tensors: _Optional[bool] = ...) -> None: ...

class ActivationResult(_message.Message):
    __slots__ = ("id", "activations", "grid_png", "dead_channels")
    ID_FIELD_NUMBER: _ClassVar[int]
    ACTIVATIONS_FIELD_NUMBER: _ClassVar[int]
    GRID_PNG_FIELD_NUMBER: _ClassVar[int]
    DEAD_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    id: str
    activations: FloatTensor
    grid_png: bytes
    dead_channels: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, id: _Optional[str] = ..., activations: _Optional[_Union[FloatTensor, _Mapping]] = ..., grid_png: _Optional[bytes] = ..., dead_channels: _Optional[_Iterable[int]] = ...) -> None: ...

class ActivationsResponse(_message.Message):
    __slots__ = ("model_name", "model_version", "layer", "channels", "grid_columns", "results")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    GRID_COLUMNS_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    layer: str
    channels: _containers.RepeatedScalarFieldContainer[int]
    grid_columns: int
    results: _containers.RepeatedCompositeFieldContainer[ActivationResult]
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., layer: _Optional[str] = ..., channels: _Optional[_Iterable[int]] = ..., grid_columns: _Optional[int] = ..., results: _Optional[_Iterable[_Union[ActivationResult, _Mapping]]] = ...) -> None: ...

class FilterPatternsRequest(_message.Message):
    __slots__ = ("model_name", "model_version", "layer", "filters", "steps", "step_size", "size", "regularized", "seed")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    STEP_SIZE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    REGULARIZED_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    layer: str
    filters: _containers.RepeatedScalarFieldContainer[int]
    steps: int
    step_size: float
    size: int
    regularized: bool
    seed: int
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., layer: _Optional[str] = ..., filters: _Optional[_Iterable[int]] = ..., steps: _Optional[int] = ..., step_size: _Optional[float] = ..., size: _Optional[int] = ..., regularized: _Optional[bool] = ..., seed: _Optional[int] = ...) -> None: ...

class FilterPattern(_message.Message):
    __slots__ = ("filter", "png", "activation", "cached")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PNG_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    filter: int
    png: bytes
    activation: float
    cached: bool
    def __init__(self, filter: _Optional[int] = ..., png: _Optional[bytes] = ..., activation: _Optional[float] = ..., cached: _Optional[bool] = ...) -> None: ...

class FilterPatternsResponse(_message.Message):
    __slots__ = ("model_name", "model_version", "layer", "patterns")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    PATTERNS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    layer: str
    patterns: _containers.RepeatedCompositeFieldContainer[FilterPattern]
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., layer: _Optional[str] = ..., patterns: _Optional[_Iterable[_Union[FilterPattern, _Mapping]]] = ...) -> None: ...

class ListLayersRequest(_message.Message):
    __slots__ = ("model_name", "model_version")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...

class LayerInfo(_message.Message):
    __slots__ = ("name", "class_name", "output_shape", "spatial")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    SPATIAL_FIELD_NUMBER: _ClassVar[int]
    name: str
    class_name: str
    output_shape: _containers.RepeatedScalarFieldContainer[int]
    spatial: bool
    def __init__(self, name: _Optional[str] = ..., class_name: _Optional[str] = ..., output_shape: _Optional[_Iterable[int]] = ..., spatial: _Optional[bool] = ...) -> None: ...

class ListLayersResponse(_message.Message):
    __slots__ = ("model_name", "model_version", "layers", "default_heatmap_layer", "input_shape", "labels", "default_heatmap_method", "faithfulness", "faithfulness_source", "faithfulness_samples")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_HEATMAP_LAYER_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_HEATMAP_METHOD_FIELD_NUMBER: _ClassVar[int]
    FAITHFULNESS_FIELD_NUMBER: _ClassVar[int]
    FAITHFULNESS_SOURCE_FIELD_NUMBER: _ClassVar[int]
    FAITHFULNESS_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    layers: _containers.RepeatedCompositeFieldContainer[LayerInfo]
    default_heatmap_layer: str
    input_shape: _containers.RepeatedScalarFieldContainer[int]
    labels: _containers.RepeatedScalarFieldContainer[str]
    default_heatmap_method: str
    faithfulness: _containers.RepeatedCompositeFieldContainer[FaithfulnessScore]
    faithfulness_source: str
    faithfulness_samples: int
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., layers: _Optional[_Iterable[_Union[LayerInfo, _Mapping]]] = ..., default_heatmap_layer: _Optional[str] = ..., input_shape: _Optional[_Iterable[int]] = ..., labels: _Optional[_Iterable[str]] = ..., default_heatmap_method: _Optional[str] = ..., faithfulness: _Optional[_Iterable[_Union[FaithfulnessScore, _Mapping]]] = ..., faithfulness_source: _Optional[str] = ..., faithfulness_samples: _Optional[int] = ...) -> None: ...

class FaithfulnessRequest(_message.Message):
    __slots__ = ("model_name", "model_version", "images", "layers", "methods", "mask_threshold", "steps")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    MASK_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    images: _containers.RepeatedCompositeFieldContainer[ExplainImage]
    layers: _containers.RepeatedScalarFieldContainer[str]
    methods: _containers.RepeatedScalarFieldContainer[HeatmapMethod]
    mask_threshold: int
    steps: int
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., images: _Optional[_Iterable[_Union[ExplainImage, _Mapping]]] = ..., layers: _Optional[_Iterable[str]] = ..., methods: _Optional[_Iterable[_Union[HeatmapMethod, str]]] = ..., mask_threshold: _Optional[int] = ..., steps: _Optional[int] = ...) -> None: ...

class FaithfulnessResponse(_message.Message):
    __slots__ = ("model_name", "model_version", "scores", "best_layer", "best_method", "default_heatmap_layer", "default_heatmap_method", "samples", "seconds")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    BEST_LAYER_FIELD_NUMBER: _ClassVar[int]
    BEST_METHOD_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_HEATMAP_LAYER_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_HEATMAP_METHOD_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    scores: _containers.RepeatedCompositeFieldContainer[FaithfulnessScore]
    best_layer: str
    best_method: str
    default_heatmap_layer: str
    default_heatmap_method: str
    samples: int
    seconds: float
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., scores: _Optional[_Iterable[_Union[FaithfulnessScore, _Mapping]]] = ..., best_layer: _Optional[str] = ..., best_method: _Optional[str] = ..., default_heatmap_layer: _Optional[str] = ..., default_heatmap_method: _Optional[str] = ..., samples: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...
