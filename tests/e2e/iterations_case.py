#!/usr/bin/env python3
"""Several iterations in one engine run (--iteration N,M / A-B / all): a run of four saves, the last one with a
different layout (TP 1 where the others are TP 2, as after a resharded restart), and one whose tensors sit
elsewhere in its files (its args pickle is longer), converted into one folder per iteration and into one HDF5
file, the plan made once per layout; a damaged iteration in the middle of the run fails alone (one error line, no
folder) while the others are converted; and the command-line errors of several iterations."""
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
PY = "/usr/bin/python3"
sys.path.insert(0, HERE)
import hdf5_case  # noqa: E402
from e2e_case import case_setup  # noqa: E402

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
MODEL = ["--arch", "llama", "--layers", "2", "--hidden", "64", "--heads", "4", "--kv-heads", "2", "--ffn", "128",
         "--padded-vocab", "256", "--pp", "1", "--dtype", "bf16"]
problems = []


def engine(a, *args, expect=0):
    p = subprocess.run(["mpirun", "-np", "2", "--oversubscribe", a.engine, *args], env=ENV, capture_output=True,
                       text=True, timeout=300)
    errors = [line for line in p.stderr.splitlines() if line.startswith("megatron2hf: error:")]
    print(f"{' '.join(args)}: exit {p.returncode}; {errors}", flush=True)
    if p.returncode != expect:
        problems.append(f"{' '.join(args)}: exit {p.returncode}, expected {expect}\n{p.stderr[-2000:]}")
    return p, errors


def bit_exact(out, expected):
    p = subprocess.run([PY, os.path.join(HERE, "check_hf_output.py"), "--output", out, "--expected", expected],
                       capture_output=True, text=True)
    if p.returncode:
        problems.append(f"{out}: {p.stdout.strip()[-500:]}")


def folders(path):
    return sorted(n for n in os.listdir(path)) if os.path.isdir(path) else []


def main():
    a, work, root, _ = case_setup("iterations_case", MODEL + ["--tp", "2", "--iterations", "100,200,300"])
    expected = {it: os.path.join(work, "expected", f"iter_{it:07d}") for it in (100, 200, 300)}
    # Iteration 400 saved with TP 1: another layout, and so another plan, in the same run.
    other = os.path.join(work, "tp1")
    subprocess.run([PY, os.path.join(SRC, "tests/fixtures/megatron_fixture.py"), "--out", other, *MODEL, "--tp", "1",
                    "--iterations", "400", "--seed", "7"], check=True, stdout=subprocess.DEVNULL)
    shutil.copytree(os.path.join(other, "checkpoint", "iter_0000400"), os.path.join(root, "iter_0000400"))
    with open(os.path.join(root, "latest_checkpointed_iteration.txt"), "w") as f:
        f.write("400")
    expected[400] = os.path.join(other, "expected", "iter_0000400")

    # Iteration 250: iteration 200's weights re-saved by torch with a longer args pickle (as after a restart with
    # a longer --save path), so every tensor starts elsewhere in its file while the layout stays the same.
    resave = ("import sys, torch\n"
              "for src, dst in zip(sys.argv[1::2], sys.argv[2::2]):\n"
              "    state = torch.load(src, map_location='cpu')\n"
              "    state['args'].save = '/scratch/' + 'long/' * 300 + 'checkpoints'\n"
              "    state['iteration'] = 250\n"
              "    torch.save(state, dst)\n")
    pairs = []
    for rank in ("mp_rank_00", "mp_rank_01"):
        os.makedirs(os.path.join(root, "iter_0000250", rank))
        pairs += [os.path.join(root, "iter_0000200", rank, "model_optim_rng.pt"),
                  os.path.join(root, "iter_0000250", rank, "model_optim_rng.pt")]
    subprocess.run([PY, "-c", resave, *pairs], check=True)
    expected[250] = expected[200]

    out = os.path.join(work, "list")
    p, _ = engine(a, "--input", root, "--iteration", "300,100", "--output", out)
    if p.stderr.count("(plan reused: the layout of iteration 300)") != 1:
        problems.append("--iteration 300,100: the second iteration did not reuse the first one's plan")
    if folders(out) != ["iter_0000100", "iter_0000300"]:
        problems.append(f"--iteration 300,100 wrote {folders(out)}")
    for it in (100, 300):
        bit_exact(os.path.join(out, f"iter_{it:07d}"), expected[it])

    pattern = os.path.join(work, "range", "{iteration}", "hf")
    p, _ = engine(a, "--input", root, "--iteration", "200-400", "--output", pattern)
    if folders(os.path.join(work, "range")) != ["0000200", "0000250", "0000300", "0000400"]:
        problems.append(f"--iteration 200-400 wrote {folders(os.path.join(work, 'range'))}")
    # 250 and 300 run on 200's plan (250's relocated); 400, saved with TP 1, gets a plan of its own.
    if [p.stderr.count(f"(plan reused: the layout of iteration {it})") for it in (200, 250, 300)] != [1, 1, 0]:
        problems.append("--iteration 200-400: expected the plan reused for 250 and 300 and made anew for 400")
    for it in (200, 250, 300, 400):
        bit_exact(os.path.join(work, "range", f"{it:07d}", "hf"), expected[it])

    h5 = os.path.join(work, "run.h5")
    engine(a, "--input", root, "--iteration", "all", "--output", h5, "--format", "hdf5")
    for it, folder in ((100, os.path.join(out, "iter_0000100")), (200, os.path.join(work, "range", "0000200", "hf")),
                       (400, os.path.join(work, "range", "0000400", "hf"))):
        hdf5_case.check_group(h5, f"iter_{it:07d}", hdf5_case.read_safetensors_folder(folder), None, {}, None, dump=False)
    problems.extend(hdf5_case.failures)

    # A damaged iteration in the middle of the run: it fails alone, the others are converted, exit 1.
    damaged_root = os.path.join(work, "damaged")
    shutil.copytree(root, damaged_root, symlinks=True)
    os.remove(os.path.join(damaged_root, "iter_0000200", "mp_rank_01", "model_optim_rng.pt"))
    out = os.path.join(work, "all")
    p, errors = engine(a, "--input", damaged_root, "--iteration", "all", "--output", out, expect=1)
    if folders(out) != ["iter_0000100", "iter_0000250", "iter_0000300", "iter_0000400"]:
        problems.append(f"with iteration 200 damaged, --iteration all left {folders(out)}")
    if len(errors) != 1 or "iter_0000200" not in errors[0]:
        problems.append(f"expected one error line naming iteration 200, got {errors}")
    if "converted 4 of 5 iteration(s); failed: 200" not in p.stderr:
        problems.append("no summary naming the failed iteration")
    for it in (100, 250, 300, 400):
        bit_exact(os.path.join(out, f"iter_{it:07d}"), expected[it])

    # Command-line errors of several iterations.
    for args, expect in ((["--iteration", "all", "--format", "hdf5", "--group", "g"], "put {iteration} in it"),
                         (["--iteration", "300-200"], "ends before it starts"),
                         (["--iteration", "100,100"], "names an iteration twice"),
                         (["--iteration", "900-999"], "no iter_* folder matches")):
        _, errors = engine(a, "--input", root, "--output", os.path.join(work, "bad.h5"), *args, expect=1)
        if len(errors) != 1 or expect not in errors[0]:
            problems.append(f"{args}: expected one error line with '{expect}', got {errors}")
    for p in problems:
        print("FAIL: " + p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
