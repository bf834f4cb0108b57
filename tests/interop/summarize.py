#!/usr/bin/python3
"""The interop matrix's results in one table: per megatron-core version, case and format, the worst float32 and
native-dtype logit differences against Megatron and whether the greedy tokens agreed.

    tests/interop/summarize.py [build/interop-work]      (after ctest -L interop)"""

import json
import pathlib
import sys


def rows(work):
    for report in sorted(work.glob("*/*/report_*_transformers.json")) + sorted(work.glob("*/*/report_*_megatron.json")):
        r = json.loads(report.read_text())
        case = report.parent
        fmt = report.name.split("_", 1)[1].rsplit("_", 1)[0]
        checker = "transformers" if report.name.endswith("_transformers.json") else "project forward"
        meta = r["megatron"]
        model = meta["model"] if isinstance(meta.get("model"), dict) else meta
        greedy = r["greedy"]
        yield (case.parent.name, case.name, fmt, checker, model["dtype"], r["fp32_max_abs"], r.get("native_max_abs"),
               greedy["megatron"] == greedy.get("transformers", greedy.get("hf")), not r.get("problems"))


def main():
    work = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "build/interop-work")
    table = list(rows(work))
    if not table:
        raise SystemExit(f"summarize: no reports under {work}")
    print("| megatron-core | case | format | checked by | dtype | fp32 max abs | native max abs | greedy equal | pass |")
    print("|---|---|---|---|---|---|---|---|---|")
    for v, case, fmt, checker, dtype, fp32, native, greedy, ok in table:
        native_text = f"{native:.3g}" if native is not None else "-"
        print(f"| {v} | {case} | {fmt} | {checker} | {dtype} | {fp32:.3g} | {native_text} | {greedy} | {ok} |")
    print()
    for checker in ("transformers", "project forward"):
        for dtype in sorted({r[4] for r in table}):
            sel = [r for r in table if r[3] == checker and r[4] == dtype]
            if sel:
                natives = [r[6] for r in sel if r[6] is not None]
                print(f"worst, {checker}, {dtype} checkpoints: fp32 {max(r[5] for r in sel):.3g}"
                      + (f", computed in {dtype} {max(natives):.3g}" if natives else "") + f" over {len(sel)} outputs")


if __name__ == "__main__":
    main()
