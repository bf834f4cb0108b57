#!/usr/bin/env python3
"""One end-to-end case: make a Megatron checkpoint with real torch.save, convert it with megatron2hf under
mpirun, then check the output independently (tensors against the global truth, config fields, and a forward
pass written from Megatron's conventions against one written from Hugging Face's).

With --expect-error, the checkpoint is first damaged (--mutate) and the case checks that every rank exits
non-zero, that exactly one error line names the problem, and that no output folder is left behind."""
import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
PY = "/usr/bin/python3"


def run(cmd, **kw):
    print("+", " ".join(shlex.quote(c) for c in cmd), flush=True)
    return subprocess.run(cmd, **kw)


def mpirun(ranks, engine, args, timeout):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    cmd = ["mpirun", "-np", str(ranks), "--oversubscribe", engine] + args
    start = time.time()
    p = run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    print(p.stdout, end="")
    print(p.stderr, end="", file=sys.stderr)
    print(f"(engine exit {p.returncode} after {time.time() - start:.1f}s)")
    return p


def case_setup(name, fixture_args):
    """A process-level test's command line (--engine, --workdir) and a fresh work folder WORKDIR/NAME holding a
    fixture written with FIXTURE_ARGS. Returns (args, work, checkpoint root, expected iteration folder)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--ranks", type=int, default=3)
    a = ap.parse_args()
    work = os.path.join(a.workdir, name)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    subprocess.run([PY, os.path.join(SRC, "tests/fixtures/megatron_fixture.py"), "--out", work] + fixture_args,
                   check=True, stdout=subprocess.DEVNULL)
    expected = [os.path.join(work, "expected", n) for n in os.listdir(os.path.join(work, "expected"))]
    return a, work, os.path.join(work, "checkpoint"), expected[0]


def mutate(checkpoint, spec):
    kind, _, rest = spec.partition(":")
    if kind == "delete":
        os.remove(os.path.join(checkpoint, rest))
    elif kind == "truncate":
        rel, _, size = rest.rpartition(":")
        path = os.path.join(checkpoint, rel)
        n = int(size)
        with open(path, "r+b") as f:
            f.truncate(n if n >= 0 else os.path.getsize(path) + n)
    elif kind == "flip":
        rel, _, offset = rest.rpartition(":")
        path = os.path.join(checkpoint, rel)
        off = int(offset)
        with open(path, "r+b") as f:
            f.seek(off if off >= 0 else os.path.getsize(path) + off)
            b = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([b[0] ^ 0xFF]))
    elif kind in ("shrink", "arg"):
        # Rewritten with real torch.save: a tensor one row short, or one saved argument changed.
        import glob
        import torch
        sys.path.insert(0, os.path.join(SRC, "tests", "fixtures"))
        import megatron_fixture
        megatron_fixture.megatron_enums()  # for args that hold Megatron enums (--mcore 0.16 and later)
        rel, _, what = rest.partition(":")
        for path in sorted(glob.glob(os.path.join(checkpoint, rel))):
            sd = torch.load(path, map_location="cpu")
            if isinstance(getattr(sd["args"], "exit_signal", None), int):  # re-pickled as the fixture pickled it
                sd["args"].exit_signal = megatron_fixture.PickledSignal(sd["args"].exit_signal)
            if kind == "shrink":
                for key in [k for k in sd if k.startswith("model")]:
                    if what in sd[key]:
                        sd[key][what] = sd[key][what][1:].clone()
            else:
                name, _, value = what.partition("=")
                setattr(sd["args"], name, eval(value, {}))
            torch.save(sd, path)
    elif kind == "copy":
        src, _, dst = rest.partition(":")
        shutil.copyfile(os.path.join(checkpoint, src), os.path.join(checkpoint, dst))
    else:
        raise SystemExit(f"unknown mutation {spec}")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--name", required=True)
    ap.add_argument("--engine", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--fixture", default="", help="arguments for tests/fixtures/megatron_fixture.py")
    ap.add_argument("--engine-args", default="", help="extra megatron2hf arguments")
    ap.add_argument("--check-args", default="", help="extra check_hf_output.py arguments")
    ap.add_argument("--iteration", default="latest")
    ap.add_argument("--source", choices=["torch", "torch_dist"], default="torch",
                    help="which checkpoint of the fixture to convert (torch_dist needs --format both|torch_dist)")
    ap.add_argument("--compare-legacy", action="store_true",
                    help="also convert the fixture's legacy checkpoint and require byte-identical output files")
    ap.add_argument("--max-read-ratio", type=float,
                    help="bytes read from disk / model bytes, from the engine's summary line, must not exceed this")
    ap.add_argument("--min-streamed-share", type=float,
                    help="share of the source bytes its writers must stream (the debug 'moved:' line; pass "
                         "--log-level debug in --engine-args)")
    ap.add_argument("--sent-over-mpi", choices=["none", "some"],
                    help="whether output bytes must cross MPI (the debug 'moved:' line)")
    ap.add_argument("--no-forward", action="store_true")
    ap.add_argument("--swap-check", action="store_true",
                    help="also show the forward test fails on the output with gate/up or q/k swapped")
    ap.add_argument("--assets", action="store_true", help="pass an --assets folder and check its files are copied")
    ap.add_argument("--mutate", action="append", default=[], help="delete:REL | truncate:REL:BYTES | flip:REL:OFFSET | shrink:GLOB:KEY | arg:GLOB:NAME=VALUE | copy:SRC:DST")
    ap.add_argument("--expect-error", help="regex the single error line must match")
    ap.add_argument("--timeout", type=int, default=120)
    a = ap.parse_args()

    work = os.path.join(a.workdir, a.name)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    r = run([PY, os.path.join(SRC, "tests/fixtures/megatron_fixture.py"), "--out", work] + shlex.split(a.fixture))
    if r.returncode:
        return 1
    checkpoint = os.path.join(work, "checkpoint_dist" if a.source == "torch_dist" else "checkpoint")
    with open(os.path.join(checkpoint, "latest_checkpointed_iteration.txt")) as f:
        latest = f.read().strip()
    it = latest if a.iteration == "latest" else a.iteration
    iter_name = "release" if it == "release" else f"iter_{int(it):07d}"
    for m in a.mutate:
        mutate(checkpoint, m.replace("{iter}", iter_name))

    out = os.path.join(work, "hf", iter_name)
    args = ["--input", checkpoint, "--output", out, "--iteration", a.iteration] + shlex.split(a.engine_args)
    assets = {}
    if a.assets:
        adir = os.path.join(work, "assets")
        os.makedirs(adir)
        assets = {"modeling_opensci.py": b"# modeling code\n", "configuration_opensci.py": b"# config code\n",
                  "tokenizer.json": b'{"version": "1.0"}', "special_tokens_map.json": b"{}"}
        for name, data in assets.items():
            with open(os.path.join(adir, name), "wb") as f:
                f.write(data)
        args += ["--assets", adir]
    p = mpirun(a.ranks, a.engine, args, a.timeout)

    if a.expect_error:
        errors = [l for l in p.stderr.splitlines() if l.startswith("megatron2hf: error:")]
        problems = []
        if p.returncode == 0:
            problems.append("the engine exited 0")
        if len(errors) != 1:
            problems.append(f"expected exactly one error line, got {len(errors)}")
        elif not re.search(a.expect_error, errors[0]):
            problems.append(f"error line does not match /{a.expect_error}/: {errors[0]}")
        if "internal error" in p.stderr or "Segmentation" in p.stderr or "signal" in p.stderr.lower():
            problems.append("crash or internal error reported")
        leftovers = [n for n in os.listdir(os.path.dirname(out))] if os.path.isdir(os.path.dirname(out)) else []
        if leftovers:
            problems.append(f"output left behind: {leftovers}")
        for pr in problems:
            print("FAIL:", pr)
        return 1 if problems else 0

    if p.returncode:
        print("FAIL: the engine failed")
        return 1
    if a.min_streamed_share is not None or a.sent_over_mpi:
        m = re.search(r"moved: (\d+) of (\d+) source bytes streamed by their writers, (\d+) output bytes sent over MPI",
                      p.stderr + p.stdout)
        if not m:
            print("FAIL: no 'moved:' line in the engine's output")
            return 1
        streamed, read, sent = (int(x) for x in m.groups())
        print(f"streamed {streamed} of {read} source bytes, {sent} bytes over MPI")
        if a.min_streamed_share is not None and streamed < a.min_streamed_share * read:
            print(f"FAIL: writers streamed less than {a.min_streamed_share:.0%} of the bytes read")
            return 1
        if (sent > 0) != (a.sent_over_mpi == "some"):
            print(f"FAIL: expected {a.sent_over_mpi} bytes over MPI")
            return 1
    if a.max_read_ratio:
        m = re.search(r"(\d+) bytes read from disk for (\d+) model bytes", p.stderr + p.stdout)
        if not m:
            print("FAIL: no read summary in the engine's output")
            return 1
        ratio = int(m.group(1)) / int(m.group(2))
        print(f"bytes read / model bytes = {ratio:.4f} (limit {a.max_read_ratio})")
        if ratio > a.max_read_ratio:
            print("FAIL: read too much")
            return 1
    if a.compare_legacy:
        legacy_out = os.path.join(work, "hf_legacy", iter_name)
        q = mpirun(a.ranks, a.engine, ["--input", os.path.join(work, "checkpoint"), "--output", legacy_out,
                                       "--iteration", a.iteration] + shlex.split(a.engine_args), a.timeout)
        if q.returncode:
            print("FAIL: the legacy conversion failed")
            return 1
        names = sorted(os.listdir(out))
        if names != sorted(os.listdir(legacy_out)):
            print(f"FAIL: different files: {names} vs {sorted(os.listdir(legacy_out))}")
            return 1
        for n in names:
            with open(os.path.join(out, n), "rb") as f1, open(os.path.join(legacy_out, n), "rb") as f2:
                a_bytes, b_bytes = f1.read(), f2.read()
            if n == "megatron2hf.manifest.json":
                # The provenance names different sources; the tensors' checksums must agree.
                import json
                a_bytes = json.dumps([json.loads(a_bytes)[k] for k in ("files", "tensors")]).encode()
                b_bytes = json.dumps([json.loads(b_bytes)[k] for k in ("files", "tensors")]).encode()
            if n == "README.md":  # the model card names its source and its folder; the rest must agree
                a_bytes, b_bytes = (b"".join(x for x in c.splitlines(True) if not x.startswith((b"| checkpoint |", b"# ")))
                                    for c in (a_bytes, b_bytes))
            if a_bytes != b_bytes:
                print(f"FAIL: {n} differs between the torch_dist and the legacy conversion")
                return 1
        print(f"OK: byte-identical to the legacy conversion ({len(names)} files)")
    expected = os.path.join(work, "expected", iter_name)
    r = run([PY, os.path.join(SRC, "tests/e2e/check_hf_output.py"), "--output", out, "--expected", expected]
            + shlex.split(a.check_args))
    if r.returncode:
        return 1
    for name, data in assets.items():
        with open(os.path.join(out, name), "rb") as f:
            if f.read() != data:
                print(f"FAIL: asset {name} not copied verbatim")
                return 1
    # The forward pass is written over legacy rank files; a torch_dist fixture made with --format both has them.
    forward = [PY, os.path.join(SRC, "tests/e2e/forward_equivalence.py"), "--megatron",
               os.path.join(work, "checkpoint", iter_name), "--hf", out]
    if not a.no_forward and run(forward).returncode:
        return 1
    if a.swap_check:
        for swap in ("gate_up", "qk"):
            if run(forward + ["--swap", swap, "--expect-mismatch"]).returncode:
                print(f"FAIL: the forward test did not notice swapped {swap}")
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
