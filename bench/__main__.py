"""Run every benchmark module, or those named: `python -m bench [name ...]`.

A benchmark that cannot run raises SystemExit with the reason; the others still
run, and the command exits non-zero naming it."""

import importlib
import os
import pkgutil
import sys
import time
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "roadmap_project.settings")


def main() -> None:
    import django

    django.setup()
    wanted = set(sys.argv[1:])
    names = [m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])]
    not_run: list[str] = []
    for name in sorted(n for n in names if not n.startswith("_") and n != "report"):
        if wanted and name not in wanted:
            continue
        module = importlib.import_module(f"bench.{name}")
        if not hasattr(module, "main"):
            continue
        print(f"\n=== bench.{name}", flush=True)
        started = time.perf_counter()
        try:
            module.main()
        except SystemExit as cannot_run:
            print(f"bench.{name} did not run: {cannot_run}", flush=True)
            not_run.append(name)
            continue
        print(f"(bench.{name} took {time.perf_counter() - started:.1f} s)", flush=True)
    from bench import report

    report.write()
    if not_run:
        sys.exit(f"Benchmarks that did not run: {', '.join(not_run)}")


if __name__ == "__main__":
    main()
