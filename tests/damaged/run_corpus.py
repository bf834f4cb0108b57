#!/usr/bin/python3
"""Runs megatron2hf under mpirun over every damaged checkpoint of make_corpus.py and checks that it refuses each
one properly:

- every rank exits non-zero (each rank's own exit status is recorded by a small shell wrapper), none by a
  signal or MPI_Abort, within a bounded time (60 s per case);
- stderr holds exactly one line starting with `megatron2hf: error:`; it matches the case's regex and names the
  damaged file;
- no "internal error", no sanitizer report (AddressSanitizer, LeakSanitizer, UBSan "runtime error:");
- neither the output folder nor its hidden staging folder `.<name>.m2h-partial` exists afterwards;
- nothing a refused pickle named was run (the injected commands would create a PWNED file).

A few undamaged controls must convert. Prints a table of all cases and exits 1 if any case fails.

    /usr/bin/python3 tests/damaged/run_corpus.py --engine build/bin/megatron2hf --workdir /tmp/damaged [--only RE]
"""
import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_corpus  # noqa: E402

ERROR_PREFIX = "megatron2hf: error:"
BAD_TEXT = ("internal error", "AddressSanitizer", "LeakSanitizer", "ThreadSanitizer", "runtime error:",
            "Segmentation fault", "Aborted", "MPI_ABORT", "terminate called")


def run_engine(engine, ranks, args, rc_dir, timeout):
    """mpirun with each rank wrapped so that its own exit status lands in rc_dir/rank.N."""
    # The wrapper itself exits 0: mpirun would otherwise kill the slower ranks as soon as the first one exits
    # non-zero, and their own statuses would be lost. A rank that is killed (MPI_Abort, a signal) leaves none.
    wrapper = ('"$0" "$@"; rc=$?; echo $rc > ' + shlex.quote(rc_dir) + '/rank.$OMPI_COMM_WORLD_RANK; exit 0')
    cmd = ["mpirun", "-np", str(ranks), "--oversubscribe", "sh", "-c", wrapper, engine] + args
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    start = time.time()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         errors="replace", start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        timed_out = True
    return p.returncode, out, err, time.time() - start, timed_out, cmd


def check_case(c, engine, workdir, base, other, timeout):
    casedir = os.path.join(workdir, "cases", c.name)
    root, names = make_corpus.make_case(c, base, other, casedir)
    rc_dir = os.path.join(casedir, "rc")
    os.makedirs(rc_dir)
    out_parent = os.path.join(casedir, "out")
    output = os.path.join(out_parent, "hf")
    args = ["--input", root, "--output", output]
    rc, out, err, secs, timed_out, cmd = run_engine(engine, c.ranks, args, rc_dir, timeout)

    problems = []
    if timed_out:
        problems.append(f"no exit within {timeout} s")
    if c.expect is None:  # a control: the undamaged checkpoint converts
        return check_control(c, rc_dir, out, err, secs, output, cmd, casedir, problems)
    for r in range(c.ranks):
        path = os.path.join(rc_dir, f"rank.{r}")
        if not os.path.exists(path):
            problems.append(f"rank {r} left no exit status (killed?)")
            continue
        with open(path) as f:
            code = int(f.read().strip() or -1)
        if code == 0:
            problems.append(f"rank {r} exited 0")
        elif code > 128:
            problems.append(f"rank {r} died of signal {code - 128}")
    errors = [line for line in err.splitlines() if line.startswith(ERROR_PREFIX)]
    stray = [line for line in out.splitlines() if line.startswith(ERROR_PREFIX)]
    if stray:
        problems.append(f"{len(stray)} error line(s) on stdout")
    if len(errors) != 1:
        problems.append(f"{len(errors)} error lines on stderr, expected 1")
    line = errors[0] if errors else ""
    if errors:
        if not re.search(c.expect, line):
            problems.append(f"error line does not match /{c.expect}/")
        if not any(n in line for n in names):
            problems.append(f"error line names none of {names}")
    for text in BAD_TEXT:
        if text in err or text in out:
            problems.append(f"output contains {text!r}")
    for leftover in (output, os.path.join(out_parent, ".hf.m2h-partial")):
        if os.path.lexists(leftover):
            problems.append(f"left behind {leftover}")
    if os.path.isdir(out_parent) and os.listdir(out_parent):
        problems.append(f"left behind in {out_parent}: {sorted(os.listdir(out_parent))}")
    if os.path.exists(os.path.join(root, "PWNED")):
        problems.append("a command named in the pickle was executed")
    return dict(name=c.name, ranks=c.ranks, secs=secs, line=line or (err.strip().splitlines() or ["(no stderr)"])[-1],
                problems=problems, cmd=cmd, out=out, err=err, casedir=casedir)


def check_control(c, rc_dir, out, err, secs, output, cmd, casedir, problems):
    for r in range(c.ranks):
        path = os.path.join(rc_dir, f"rank.{r}")
        with open(path) if os.path.exists(path) else open(os.devnull) as f:
            code = f.read().strip()
        if code != "0":
            problems.append(f"rank {r} exit status {code or 'missing'}")
    if not os.path.isfile(os.path.join(output, "model.safetensors")):
        problems.append("no model.safetensors written")
    if os.path.lexists(os.path.join(os.path.dirname(output), ".hf.m2h-partial")):
        problems.append("staging folder left behind")
    for text in BAD_TEXT + (ERROR_PREFIX,):
        if text in err or text in out:
            problems.append(f"output contains {text!r}")
    done = [line for line in (err + out).splitlines() if "] done:" in line]
    line = "(converts) " + (done[-1].split("] done: ", 1)[1] if done else "")
    return dict(name=c.name, ranks=c.ranks, secs=secs, line=line, problems=problems, cmd=cmd, out=out, err=err,
                casedir=casedir)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--only", help="regex over case names")
    ap.add_argument("--timeout", type=int, default=60, help="seconds per case")
    ap.add_argument("--keep", action="store_true", help="keep the damaged checkpoints of passing cases")
    a = ap.parse_args()
    engine = os.path.abspath(a.engine)
    if not os.access(engine, os.X_OK):
        print(f"run_corpus: no engine at {engine}", file=sys.stderr)
        return 2
    os.makedirs(a.workdir, exist_ok=True)
    start = time.time()
    base, other = make_corpus.make_base(a.workdir)
    print(f"base fixtures ready in {time.time() - start:.1f} s", flush=True)
    cases = make_corpus.selected(a.only)
    if not cases:
        print("run_corpus: no case selected", file=sys.stderr)
        return 2
    results = []
    for c in cases:
        r = check_case(c, engine, a.workdir, base, other, a.timeout)
        results.append(r)
        print(f"{'ok  ' if not r['problems'] else 'FAIL'} {r['name']:48s} {r['ranks']}r {r['secs']:5.1f}s  {r['line']}",
              flush=True)
        if not r["problems"] and not a.keep:
            shutil.rmtree(r["casedir"], ignore_errors=True)

    failed = [r for r in results if r["problems"]]
    print()
    print(f"{'case':48s} {'ranks':>5s} {'secs':>5s}  error line")
    for r in results:
        print(f"{r['name']:48s} {r['ranks']:5d} {r['secs']:5.1f}  {r['line']}")
    for r in failed:
        print(f"\nFAIL {r['name']}:")
        for p in r["problems"]:
            print(f"  - {p}")
        print("  command: " + " ".join(shlex.quote(x) for x in r["cmd"]))
        tail = (r["err"] + r["out"]).strip().splitlines()[-15:]
        print("  output:\n    " + "\n    ".join(tail))
    controls = sum(c.expect is None for c in cases)
    print(f"\n{len(results) - len(failed)} of {len(results)} cases passed ({len(results) - controls} damaged "
          f"checkpoints, {controls} undamaged controls) in {time.time() - start:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
