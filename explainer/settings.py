"""Settings of the explainer sidecar, read once at start from arguments and CNNSERVE_EXPLAINER_* variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from cnnserve.service.settings import ServiceSettings


class ExplainerSettings(ServiceSettings):
    """Settings of `cnnserve explainer`. Every field can be set as CNNSERVE_EXPLAINER_<FIELD>."""

    model_config = SettingsConfigDict(env_prefix="CNNSERVE_EXPLAINER_", extra="forbid")

    grpc_port: int = Field(8011, ge=0, le=65535, description="gRPC port; 0 picks a free port.")
    grace_seconds: float = Field(5.0, ge=0, description="How long SIGTERM waits for in-flight requests.")
    metrics_port: int = Field(8012, ge=-1, le=65535, description="Prometheus port; 0 picks one, -1 disables.")
    max_queued_images: int = Field(
        512,
        gt=0,
        description="Admission bound: images of Heatmap/Activations (and filters of FilterPatterns) waiting or "
        "computing; a request past it is refused with RESOURCE_EXHAUSTED (an empty queue admits any one).",
    )
    max_images: int = Field(64, gt=0, description="Most images in one Heatmap or Activations request.")
    max_filters: int = Field(64, gt=0, description="Most filters in one FilterPatterns request.")
    max_steps: int = Field(500, gt=0, description="Most gradient-ascent steps in one FilterPatterns request.")
    max_pattern_size: int = Field(512, gt=0, description="Largest filter-pattern side in pixels.")
    max_pattern_pixel_steps: int = Field(
        8_000_000,
        gt=0,
        description="Bound on filters x steps x size^2 per FilterPatterns request (about a minute for VGG16 "
        "on 2 CPU cores), so no request holds the worker for minutes.",
    )
    max_score_cam_channels: int = Field(512, gt=0, description="Most channels Score-CAM may mask with.")
    default_score_cam_channels: int = Field(64, gt=0, description="Score-CAM channels when a request sets none.")
    pattern_cache_size: int = Field(4096, ge=0, description="Filter patterns kept in the LRU cache; 0 disables.")
