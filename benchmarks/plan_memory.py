"""Check :func:`kidneyseg.planning.estimate_memory_gb` against measured memory.

    python benchmarks/plan_memory.py [--budgets 1.5 3 6] [--spacing 1.99]

Plans are made from the geometry of the 10 real KiTS19 masks (``../shared/data/kits_masks``,
fingerprint of headers only) at several memory budgets. For each plan a fresh process builds
the plan's DynUNet (``kidneyseg.models.unet.build_dynunet``, 4 output classes, deep
supervision), runs two SGD steps (Nesterov, momentum 0.99) on a random batch of the plan's
patch and batch size on CPU, and reports its peak resident memory (``ru_maxrss``). Writes
``benchmarks/results/plan_memory.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

STEP = r"""
import json, resource, sys, time, torch
sys.path.insert(0, sys.argv[2])
from kidneyseg.planning import Plan
from kidneyseg.models.unet import build_dynunet
torch.set_num_threads(2)
plan = Plan.from_dict(json.loads(sys.argv[1]))
net = build_dynunet(plan, 1, 4)
opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.99, nesterov=True)
x = torch.randn(plan.batch_size, 1, *plan.patch_size)
t = time.perf_counter()
for _ in range(2):
    out = net(x)
    out.float().mean().backward()
    opt.step()
    opt.zero_grad()
print(json.dumps({"peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
                  "step_s": (time.perf_counter() - t) / 2}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budgets", nargs="+", type=float, default=[1.5, 3.0, 6.0])
    ap.add_argument("--spacing", type=float, default=None, help="isotropic target spacing override (mm)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "plan_memory.md")
    args = ap.parse_args()

    from kidneyseg.datasets.layouts import kits_cases
    from kidneyseg.planning import fingerprint, make_plan

    fp = fingerprint(kits_cases(ROOT.parent / "shared" / "data" / "kits_masks" / "kits19", require_images=False),
                     read_labels=False, read_images=False)
    rows = []
    for spacing in ([None] if args.spacing is None else [None, args.spacing]):
        for budget in args.budgets:
            plan = make_plan(fp, budget, target_spacing_mm=None if spacing is None else (spacing,) * 3,
                             normalisation="case_percentile")
            r = subprocess.run([sys.executable, "-c", STEP, json.dumps(plan.to_dict()), str(ROOT / "src")],
                               capture_output=True, text=True, check=True)
            m = json.loads(r.stdout.strip().splitlines()[-1])
            rows.append((plan, m))
            print(plan.target_spacing_mm, plan.patch_size, plan.batch_size, plan.estimated_memory_gb, m, flush=True)
    lines = ["# Planner memory estimate vs measured (benchmarks/plan_memory.py)", "",
             f"Run {dt.date.today().isoformat()} on {platform.machine()} CPU, torch threads 2. Plans from the 10 "
             "KiTS19 masks' geometry; DynUNet with deep supervision, two SGD steps, peak resident memory of the "
             "whole process.", "",
             "| target spacing mm | patch | levels | batch | budget GB | estimated GB | measured GB | error | s / step |",
             "|---|---|---|---|---|---|---|---|---|"]
    for plan, m in rows:
        err = (plan.estimated_memory_gb - m["peak_gb"]) / m["peak_gb"]
        lines.append(f"| {plan.target_spacing_mm} | {plan.patch_size} | {len(plan.strides)} | {plan.batch_size} | "
                     f"{plan.memory_budget_gb:g} | {plan.estimated_memory_gb:.2f} | {m['peak_gb']:.2f} | {err:+.0%} | "
                     f"{m['step_s']:.1f} |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
