"""Print the pinned requirements of cnnserve and the given extras, one per line, from pyproject.toml.

The images install these first, in a layer that only changes when pyproject.toml does, and then the
project itself with --no-deps, so that editing the code never re-installs TensorFlow:

    python docker/requirements.py pyproject.toml train          # base + [train]
    python docker/requirements.py pyproject.toml --without onnxruntime   # base, for onnxruntime-gpu

Self-references such as "cnnserve[train,client]" (the dev extra) are expanded.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[([^\]]*)\])?")


def _name(requirement: str) -> tuple[str, list[str]]:
    match = _NAME.match(requirement)
    if match is None:
        raise ValueError(f"cannot read the requirement {requirement!r}")
    extras = [e.strip() for e in (match.group(3) or "").split(",") if e.strip()]
    return re.sub(r"[-_.]+", "-", match.group(1)).lower(), extras


def requirements(pyproject: dict, extras: list[str], without: set[str]) -> list[str]:
    project = pyproject["project"]
    own = _name(project["name"])[0]
    optional = project.get("optional-dependencies", {})
    out: list[str] = []
    seen_extras: set[str] = set()

    def add(reqs: list[str]) -> None:
        for req in reqs:
            name, req_extras = _name(req)
            if name == own:
                expand(req_extras)
            elif name not in without and req not in out:
                out.append(req)

    def expand(names: list[str]) -> None:
        for extra in names:
            if extra in seen_extras:
                continue
            if extra not in optional:
                raise SystemExit(f"unknown extra {extra!r}; pyproject.toml has: {', '.join(sorted(optional))}")
            seen_extras.add(extra)
            add(optional[extra])

    add(project.get("dependencies", []))
    expand(extras)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pyproject", type=Path)
    parser.add_argument("extras", nargs="*", help="extras to include besides the base dependencies")
    parser.add_argument("--without", action="append", default=[], help="leave this distribution out")
    args = parser.parse_args(argv)
    data = tomllib.loads(args.pyproject.read_text())
    without = {_name(w)[0] for w in args.without}
    print("\n".join(requirements(data, args.extras, without)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
