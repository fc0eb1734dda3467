"""Layout of the training artifacts folder and hashing helpers (no TensorFlow)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from cnnserve.repository import file_sha256


@dataclass(frozen=True)
class ArtifactPaths:
    """``<output_dir>/<variant>/``: what ``train`` writes and ``export`` reads."""

    root: Path

    @classmethod
    def of(cls, output_dir: str | Path, variant: str) -> ArtifactPaths:
        return cls(Path(output_dir) / variant)

    @property
    def savedmodel(self) -> Path:
        return self.root / "savedmodel"

    @property
    def keras_model(self) -> Path:
        return self.root / "model.keras"

    @property
    def metadata(self) -> Path:
        return self.root / "train_metadata.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def read_metadata(self) -> dict:
        if not self.metadata.exists():
            raise FileNotFoundError(
                f"No training metadata at {self.metadata}; run `cnnserve train {self.root.name}` first"
            )
        return json.loads(self.metadata.read_text())


def tree_sha256(root: str | Path) -> str:
    """One digest for a folder: sha256 over the sorted (relative path, file sha256) lines."""
    root = Path(root)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(root).as_posix()}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()
