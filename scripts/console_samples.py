"""Write the console's sample digits: the first held-out MNIST digit of each class (training never sees them),
as 28x28 greyscale PNGs in server/http/console/samples/digit-N.png. Run again only if the bundled data or the
held-out split changes: `.venv/bin/python scripts/console_samples.py`."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from cnnserve.training.data import DEFAULT_DATA, load_mnist, split_dataset

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "server" / "http" / "console" / "samples"


def main() -> None:
    data = load_mnist(ROOT / DEFAULT_DATA)
    held = split_dataset(data).heldout
    OUT.mkdir(parents=True, exist_ok=True)
    for digit in range(10):
        index = next(i for i in held if int(data.y[i]) == digit)
        Image.fromarray(data.x[index].reshape(28, 28)).save(OUT / f"digit-{digit}.png", optimize=True)
        print(f"digit {digit}: bundled index {index}")


if __name__ == "__main__":
    main()
