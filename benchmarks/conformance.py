"""Conformance of every registered component, and proof that the checks catch broken ones.

Runs :func:`seqify.testing.run_conformance` over the registry (every registered
generator, orderer and tokenizer, and the runner's modelability bookkeeping), prints
one row per component and check with what the check asserts, then runs the checks on
the kit's deliberately broken doubles (``PeekingGenerator`` reads the next slot's true
value; ``UnnormalizedGenerator`` adds 0.1 nats to every log-probability) and shows
that each is caught. Exits 1 if a registered component fails a check or a broken
double is not caught.

    OMP_NUM_THREADS=1 python benchmarks/conformance.py
    python benchmarks/conformance.py --with-doubles --kinds generator,runner
"""

from __future__ import annotations

import argparse
import time

import torch

from seqify.plugins import build_registry, get_registry
from seqify.testing import (
    CHECKS,
    PeekingConfig,
    PeekingGenerator,
    ToyPlugin,
    UnnormalizedGenerator,
    check_no_peeking,
    check_normalized,
    run_conformance,
)

KINDS = ("generator", "orderer", "tokenizer", "runner")


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated subset of {','.join(KINDS)}")
    parser.add_argument("--with-doubles", action="store_true",
                        help="also register the test doubles (toy modality, digits tokenizer, unigram generator)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown kinds {sorted(unknown)} (choose from {', '.join(KINDS)})")
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    registry = build_registry([ToyPlugin()]) if args.with_doubles else get_registry()
    for plugin, why in registry.failed_plugins.items():
        print(f"plugin {plugin!r} {why}")
    rows = run_conformance(registry, kinds=kinds, seed=args.seed)
    elapsed = time.perf_counter() - start

    # one line per component and check (an orderer's probe structures folded together)
    grouped: dict[tuple[str, str], dict[str, list[str]]] = {}
    for r in rows:
        base, _, probe = r.check.partition("[")
        entry = grouped.setdefault((f"{r.kind} {r.name}", base), {"passed": [], "failed": [], "skipped": []})
        entry[r.status].append(probe.rstrip("]") or base)
    table = []
    for (component, check), by in grouped.items():
        present = {k: v for k, v in by.items() if v}
        if sum(map(len, present.values())) == 1:
            status = next(iter(present))
        elif len(present) == 1:
            status = f"{next(iter(present))} (all {len(next(iter(present.values())))} structures)"
        else:
            status = "; ".join(f"{k} {', '.join(v)}" for k, v in present.items())
        status = status.replace("failed", "FAILED")
        table.append((component, check, status, CHECKS.get(check, "")))
    header = ("component", "check", "result", "what the check asserts")
    widths = [max(len(header[i]), *(len(t[i]) for t in table)) for i in range(3)]
    print("  ".join(h.ljust(w) for h, w in zip(header[:3], widths)) + "  " + header[3])
    print("  ".join("-" * w for w in widths) + "  " + "-" * 22)
    for t in table:
        print("  ".join(c.ljust(w) for c, w in zip(t[:3], widths)) + "  " + t[3])
    notes = [r for r in rows if r.status != "passed"]
    if notes:
        print("\nwhy (failed and skipped checks):")
        for r in notes:
            print(f"  {r.kind} {r.name} {r.check} [{r.status}]: {_cut(r.reason, 400)}")
    counts = {s: sum(r.status == s for r in rows) for s in ("passed", "failed", "skipped")}
    print(f"\n{len(rows)} checks in {elapsed:.1f} s: {counts['passed']} passed, {counts['failed']} failed, "
          f"{counts['skipped']} skipped")

    print("\nbroken doubles (each must be caught):")
    ok = counts["failed"] == 0
    broken = [
        ("PeekingGenerator", "check_no_peeking", lambda: check_no_peeking(PeekingGenerator, seed=args.seed)),
        ("PeekingGenerator", "check_normalized", lambda: check_normalized(PeekingGenerator, seed=args.seed)),
        ("UnnormalizedGenerator", "check_normalized", lambda: check_normalized(UnnormalizedGenerator, seed=args.seed)),
    ]
    for who, check, run in broken:
        try:
            run()
        except AssertionError as exc:
            print(f"  {who:22s} {check:17s} caught: {_cut(str(exc), 300)}")
        else:
            ok = False
            print(f"  {who:22s} {check:17s} NOT CAUGHT")
    try:
        summary = check_no_peeking(PeekingGenerator, config=PeekingConfig(peek=0), seed=args.seed)
        print(f"  {'PeekingGenerator(peek=0)':22s} {'check_no_peeking':17s} passes (honest control; "
              f"{summary['sensitive']} perturbations did move later scores)")
    except AssertionError as exc:
        ok = False
        print(f"  PeekingGenerator(peek=0) check_no_peeking FALSE ALARM: {exc}")
    print(f"\ntotal {time.perf_counter() - start:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
