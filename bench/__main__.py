"""Run every benchmark in bench/ and print a summary table; results go to bench/results/.

``python -m bench NAME ...`` runs the named ones. A benchmark that sets ``BY_NAME_ONLY`` (the
hour-long studies of ``architectures``) runs only when named.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from pathlib import Path

import bench


def main(names: list[str]) -> None:
    results = []
    for info in pkgutil.iter_modules(bench.__path__):
        if info.name.startswith("_") or (names and info.name not in names):
            continue
        module = importlib.import_module(f"bench.{info.name}")
        if not hasattr(module, "main") or (getattr(module, "BY_NAME_ONLY", False) and not names):
            continue
        result = module.main()
        print(json.dumps(result))
        results.append((info.name, result))
        if "skipped" in result:
            continue  # keep the last real measurement (e.g. gpu.json from a GPU machine)
        out = Path(__file__).parent / "results" / f"{info.name}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'benchmark':<24} {'ratio':>8}  goal")
    for name, r in results:
        ratio = "skipped" if "skipped" in r else f"{r['ratio']:.3f}"
        print(f"{name:<24} {ratio:>8}  {r.get('skipped') or r.get('goal', '')}")


if __name__ == "__main__":
    main(sys.argv[1:])
