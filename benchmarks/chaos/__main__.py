"""Run the full-size campaign and print a table of trials and failures (exit 1 if any row failed)."""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

AREAS = ("cli", "registry", "hub")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="the small trial counts CI uses")
    ap.add_argument("--only", choices=AREAS, action="append", help="run only these areas")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    rows = []
    for area in args.only or AREAS:
        mod = importlib.import_module(f"benchmarks.chaos.{area}")
        with tempfile.TemporaryDirectory(prefix=f"chaos-{area}-") as tmp:
            t0 = time.perf_counter()
            got = mod.campaign(full=not args.quick, workdir=Path(tmp))
            print(f"[{area}] {len(got)} checks in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            rows += got
    head = f"{'area':<9} {'check':<44} {'trials':>7} {'fail':>5} {'tb':>4} {'changed':>7} {'s':>6}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r.area:<9} {r.check[:44]:<44} {r.trials:>7} {r.failures:>5} {r.tracebacks:>4} "
              f"{r.changed_after_refusal:>7} {r.seconds:>6.0f}")
    bad = [r for r in rows if r.failures or r.tracebacks or r.changed_after_refusal]
    print(f"{len(rows)} checks, {sum(r.trials for r in rows)} trials, {len(bad)} rows with failures")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
