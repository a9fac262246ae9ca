"""Every family fed every damaged input of ``tests/test_bad_inputs.py``: a tally of what
happened (a ppgen error, a finite result, another exception), by family and by call.

Run: ``python benchmarks/probe_bad_inputs.py [--seeds 2]``; writes the table to RESULTS.md
(section ``probe_bad_inputs``) and lists any other exception with its traceback's last line.
"""

from __future__ import annotations

import argparse
import collections
import logging
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
from _common import header, table, write_section  # noqa: E402
from test_bad_inputs import DAMAGES, ONE_STEP, damaged  # noqa: E402

import ppgen  # noqa: E402
from ppgen import registry  # noqa: E402


def outcome(call):
    try:
        value = call()
    except ppgen.PpgenError:
        return "ppgen error", None
    except Exception as exc:  # noqa: BLE001 - what the probe counts
        return "other exception", f"{type(exc).__name__}: {str(exc)[:160]}"
    return ("finite result" if value else "silent wrong answer"), None


def fitted_finite(model, data, method):
    """Fit one step; whether every parameter and loss is finite."""
    result = ppgen.fit(model, data, method, seed=0, progress=False)
    return (all(bool(torch.isfinite(v).all()) for v in result.params.values() if v.is_floating_point())
            and all(math.isfinite(loss) for loss in result.losses))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.getLogger("ppgen").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    counts = collections.defaultdict(collections.Counter)
    others = []
    for name in sorted(registry.families()):
        cls = registry.model_class(name)
        for damage in DAMAGES:
            for seed in range(args.seeds):
                model, data = cls.example(seed=0)
                bad = damaged(data, damage, np.random.default_rng(seed))
                method = ONE_STEP[cls.methods[0]]
                calls = {"fit": lambda m=model, b=bad, how=method: fitted_finite(m, b, how)}
                if cls.log_prob_kind != "none":
                    calls["log_prob"] = lambda m=model, b=bad: not bool(torch.isnan(m.log_prob(b)).any())
                for call_name, call in calls.items():
                    result, detail = outcome(call)
                    counts[name][result] += 1
                    counts["(all)"][result] += 1
                    if detail:
                        others.append(f"{name} {call_name} {damage}: {detail}")
    kinds = ["ppgen error", "finite result", "other exception", "silent wrong answer"]
    rows = [[name, sum(c.values())] + [c[k] for k in kinds] for name, c in counts.items()]
    text = ("## Bad inputs to every family (`probe_bad_inputs.py`)\n\n"
            + header(sys.argv, ["torch", "pyro", "ppgen"],
                     [f"damages: {', '.join(DAMAGES)}; seeds 0..{args.seeds - 1} (where the damage falls); "
                      "calls: `model.log_prob(bad)` (where the family has a density) and "
                      "`ppgen.fit(model, bad, <its first method, one step>)`"])
            + "\n\n" + table(["family", "cases"] + kinds, rows)
            + ("\n\nOther exceptions:\n\n" + "\n".join(f"- {line}" for line in others) if others else "") + "\n")
    print(text)
    if not args.no_write:
        write_section("probe_bad_inputs", text)


if __name__ == "__main__":
    main()
