#!/usr/bin/python3
"""End-to-end cases for `--format hdf5` (docs/hdf5.md), under mpirun, read back with Debian's h5py.

    hdf5_case.py --name N --engine BIN --plugin-dir DIR --workdir W --ranks R --fixture "..." [--scenario ...]

Scenarios:
  convert     (default) convert the fixture's latest iteration to safetensors (checked against the truth with
              check_hf_output.py) and to HDF5 once per --compress variant, then require, for every variant:
              one dataset per safetensors tensor with the same name and shape, bit-identical data read through
              h5py (HDF5_PLUGIN_PATH = the project's plugin folder), the element type convention (bf16 -> uint16
              with dtype="bfloat16", fp16/fp32 native), chunking, the group's config/provenance attributes, and
              for zstd: filter 32015 with the level as its one parameter, every raw chunk (read_direct_chunk) one
              plain zstd frame that Debian's python3-zstandard decodes to the chunk's bytes, h5dump reading the
              data with the plugin path (and failing without it), and the compression ratio in the summary.
  iterations  two iterations into one file (default group names), a third conversion into an existing group
              refused without --overwrite and replacing only that group with it, a nested --group, and a
              failure in the middle of the transfers leaving neither a new file nor a staging group behind.
  errors      a bad --compress level, a non-HDF5 file at --output (left untouched), a folder at --output, and a
              read-only output (a folder and an existing file without write permission; as root the engine runs
              as `nobody` through setpriv, since root ignores permission bits): every rank exits non-zero, one
              error line names the problem, nothing is left behind.
"""
import argparse
import glob
import json
import os
import re
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
PY = "/usr/bin/python3"
ZSTD_ID = 32015
ST_ITEMSIZE = {"BF16": 2, "F16": 2, "F32": 4}
TORCH_NAME = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}
NUMPY_KIND = {"BF16": "uint16", "F16": "float16", "F32": "float32"}

failures = []


def fail(msg):
    print("FAIL:", msg, flush=True)
    failures.append(msg)


def run(cmd, **kw):
    print("+", " ".join(shlex.quote(c) for c in cmd), flush=True)
    return subprocess.run(cmd, **kw)


class Engine:
    def __init__(self, binary, ranks, timeout=180):
        self.binary, self.ranks, self.timeout = binary, ranks, timeout

    def __call__(self, args, as_nobody=False):
        env = dict(os.environ, OMPI_MCA_rmaps_base_oversubscribe="1")
        prefix = []
        if as_nobody:
            env["HOME"] = tempfile.gettempdir()
            prefix = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        else:
            env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        cmd = prefix + ["mpirun", "-np", str(self.ranks), "--oversubscribe", self.binary] + args
        start = time.time()
        p = run(cmd, env=env, capture_output=True, text=True, timeout=self.timeout)
        print(p.stdout, end="")
        print(p.stderr, end="", file=sys.stderr)
        print(f"(engine exit {p.returncode} after {time.time() - start:.1f}s)", flush=True)
        return p


def read_safetensors_folder(folder):
    """name -> (dtype, shape, raw bytes) over every shard of a safetensors folder (parsed by hand)."""
    tensors = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        with open(path, "rb") as f:
            data = f.read()
        n = struct.unpack("<Q", data[:8])[0]
        header = json.loads(data[8:8 + n])
        header.pop("__metadata__", None)
        for name, t in header.items():
            b, e = t["data_offsets"]
            tensors[name] = (t["dtype"], t["shape"], data[8 + n + b:8 + n + e])
    return tensors


def expect_error(p, pattern, what):
    errors = [l for l in p.stderr.splitlines() if l.startswith("megatron2hf: error:")]
    if p.returncode == 0:
        fail(f"{what}: the engine exited 0")
    elif len(errors) != 1:
        fail(f"{what}: expected exactly one error line, got {errors}")
    elif not re.search(pattern, errors[0]):
        fail(f"{what}: error line does not match /{pattern}/: {errors[0]}")
    else:
        print(f"OK: {what}: {errors[0]}")
    if "internal error" in p.stderr or "Segmentation" in p.stderr or "HDF5-DIAG" in p.stderr:
        fail(f"{what}: crash, internal error or an HDF5 error trace on stderr")


def no_leftovers(folder, what):
    left = [n for n in os.listdir(folder) if n.endswith(".m2h-partial")]
    if left:
        fail(f"{what}: staging files left behind: {left}")


def stored_ratio(p):
    m = re.search(r"hdf5: group '([^']+)': (\d+) bytes of tensors stored in (\d+) bytes \(compression ratio ([\d.]+)\)",
                  p.stderr + p.stdout)
    return m and (m.group(1), int(m.group(2)), int(m.group(3)), float(m.group(4)))


def check_group(h5path, group, reference, level, expect_attrs, plugin_dir, dump=True):
    """Every dataset of `group` against the safetensors `reference` (name -> (dtype, shape, raw))."""
    import h5py
    import numpy as np
    import zstandard

    with h5py.File(h5path, "r") as f:
        if group not in f:
            fail(f"{h5path}: no group {group} (has {list(f)})")
            return
        g = f[group]
        for k, v in expect_attrs.items():
            got = g.attrs.get(k)
            if k == "config":
                if json.loads(got) != json.loads(v):
                    fail(f"{group}: config attribute differs from config.json")
            elif got != v:
                fail(f"{group}: attribute {k} = {got!r}, expected {v!r}")
        if not str(g.attrs.get("engine_version", "")).startswith("megatron2hf "):
            fail(f"{group}: engine_version attribute {g.attrs.get('engine_version')!r}")
        names = sorted(g.keys())
        if names != sorted(reference):
            fail(f"{group}: datasets differ from the safetensors tensors: "
                 f"extra {sorted(set(names) - set(reference))}, missing {sorted(set(reference) - set(names))}")
        chunks_checked = 0
        for name in sorted(set(names) & set(reference)):
            st_dtype, shape, raw = reference[name]
            ds = g[name]
            if list(ds.shape) != shape:
                fail(f"{group}/{name}: shape {ds.shape}, safetensors {shape}")
                continue
            if str(ds.dtype) != NUMPY_KIND[st_dtype] or ds.attrs.get("dtype") != TORCH_NAME[st_dtype]:
                fail(f"{group}/{name}: stored as {ds.dtype} with dtype={ds.attrs.get('dtype')!r} for {st_dtype}")
            data = ds[()]
            if data.dtype.byteorder not in ("<", "=", "|") or data.tobytes() != raw:
                fail(f"{group}/{name}: data differs from the safetensors conversion")
            if not raw:
                continue
            if ds.chunks is None or ds.chunks[1:] != ds.shape[1:]:
                fail(f"{group}/{name}: chunks {ds.chunks}, expected whole rows of {ds.shape}")
                continue
            plist = ds.id.get_create_plist()
            filters = [plist.get_filter(i) for i in range(plist.get_nfilters())]
            if level is None:
                if filters:
                    fail(f"{group}/{name}: filters {filters} on an uncompressed output")
                continue
            if len(filters) != 1 or filters[0][0] != ZSTD_ID or list(filters[0][2]) != [level & 0xFFFFFFFF]:
                fail(f"{group}/{name}: filters {filters}, expected [({ZSTD_ID}, level {level})]")
                continue
            # Independently of the project's filter: raw chunks decoded with python3-zstandard.
            row = len(raw) // shape[0] if shape else len(raw)
            rows_per_chunk = ds.chunks[0]
            seen = 0
            for i in range(ds.id.get_num_chunks()):
                info = ds.id.get_chunk_info(i)
                mask, frame = ds.id.read_direct_chunk(info.chunk_offset)
                params = zstandard.get_frame_parameters(frame)
                if mask != 0 or params.content_size != rows_per_chunk * row:
                    fail(f"{group}/{name}: chunk {info.chunk_offset}: mask {mask}, frame content size "
                         f"{params.content_size}, expected {rows_per_chunk * row}")
                    break
                # One frame and nothing after it: the frame's own compressed size is the whole chunk.
                out = zstandard.ZstdDecompressor().decompressobj()
                plain = out.decompress(frame)
                if out.unused_data or not out.eof:
                    fail(f"{group}/{name}: chunk {info.chunk_offset} is not exactly one zstd frame")
                    break
                start = info.chunk_offset[0] * row
                valid = min(len(raw) - start, len(plain))
                if plain[:valid] != raw[start:start + valid]:
                    fail(f"{group}/{name}: chunk {info.chunk_offset} decompresses to other bytes")
                    break
                seen += valid
                chunks_checked += 1
            if seen != len(raw):
                fail(f"{group}/{name}: chunks cover {seen} of {len(raw)} bytes")
        print(f"OK: {h5path}:{group}: {len(names)} datasets bit-exact"
              + (f", {chunks_checked} zstd chunks decoded with python3-zstandard" if level is not None else ""))

    if level is None or not dump:
        return
    # h5dump (the serial HDF5 tools) through the plugin: binary dump equals the bytes; without it, no data.
    biggest = max(reference, key=lambda n: len(reference[n][2]))
    smallest = min(reference, key=lambda n: len(reference[n][2]))
    for name in {biggest, smallest}:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "data.bin")
            env = dict(os.environ, HDF5_PLUGIN_PATH=plugin_dir)
            p = run(["h5dump", "-d", f"/{group}/{name}", "-b", "FILE", "-o", out, h5path], env=env,
                    capture_output=True, text=True)
            if p.returncode or not os.path.exists(out):
                fail(f"h5dump of {group}/{name} failed with the plugin path: {p.stderr.strip()}")
                continue
            with open(out, "rb") as f:
                if f.read() != reference[name][2]:
                    fail(f"h5dump -b FILE of {group}/{name} differs from the safetensors bytes")
            env["HDF5_PLUGIN_PATH"] = tmp  # no filter there: the data must not be readable
            q = run(["h5dump", "-d", f"/{group}/{name}", h5path], env=env, capture_output=True, text=True)
            if q.returncode == 0:
                fail(f"h5dump read {group}/{name} without the plugin: the zstd filter is not in use")
    print(f"OK: h5dump reads {h5path} with HDF5_PLUGIN_PATH={plugin_dir}, and not without it")


def check_foreign_frames(work):
    """The plugin decodes chunks another zstd writer made (python3-zstandard frames, with and without the
    content size, written raw with write_direct_chunk), as it must for files from hdf5plugin."""
    import h5py
    import numpy as np
    import zstandard

    path = os.path.join(work, "foreign.h5")
    data = (np.arange(64 * 100, dtype=np.float32) % 97).reshape(64, 100)
    with h5py.File(path, "w") as f:
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk((16, 100))
        dcpl.set_filter(ZSTD_ID, h5py.h5z.FLAG_MANDATORY, (5,))
        space = h5py.h5s.create_simple((64, 100))
        ds = h5py.h5d.create(f.id, b"x", h5py.h5t.IEEE_F32LE, space, dcpl=dcpl)
        for i in range(4):
            block = np.ascontiguousarray(data[16 * i:16 * (i + 1)]).tobytes()
            frame = zstandard.ZstdCompressor(level=5, write_content_size=i % 2 == 0).compress(block)
            ds.write_direct_chunk((16 * i, 0), frame)
    with h5py.File(path, "r") as f:
        if not np.array_equal(f["x"][()], data):
            fail("the plugin decodes foreign zstd frames wrongly")
        else:
            print("OK: the plugin reads chunks written by python3-zstandard (with and without content size)")


def make_fixture(work, fixture):
    r = run([PY, os.path.join(SRC, "tests/fixtures/megatron_fixture.py"), "--out", work] + shlex.split(fixture))
    if r.returncode:
        raise SystemExit("fixture failed")
    checkpoint = os.path.join(work, "checkpoint")
    with open(os.path.join(checkpoint, "latest_checkpointed_iteration.txt")) as f:
        return checkpoint, int(f.read().strip())


def reference(engine, work, checkpoint, iteration, engine_args):
    """The safetensors conversion of one iteration, checked against the fixture's truth."""
    name = f"iter_{iteration:07d}"
    out = os.path.join(work, "hf", name)
    p = engine(["--input", checkpoint, "--output", out, "--iteration", str(iteration)] + engine_args)
    if p.returncode:
        raise SystemExit("FAIL: the safetensors conversion failed")
    check = [PY, os.path.join(SRC, "tests/e2e/check_hf_output.py"), "--output", out, "--expected",
             os.path.join(work, "expected", name)]
    dtype = next((engine_args[i + 1] for i, a in enumerate(engine_args[:-1]) if a == "--dtype"), None)
    if dtype:
        check += ["--dtype", dtype]
    if run(check).returncode:
        raise SystemExit("FAIL: the safetensors reference does not match the truth")
    with open(os.path.join(out, "config.json")) as f:
        config = f.read()
    return read_safetensors_folder(out), config


def provenance(checkpoint, iteration, config, level):
    return {"config": config, "source_path": os.path.realpath(os.path.join(checkpoint, f"iter_{iteration:07d}")),
            "source_iteration": iteration, "source_format": "torch",
            "compression": "none" if level is None else f"zstd:{level}"}


def storage_sizes(h5, group):
    """(bytes HDF5 stores for the group's datasets, bytes their whole chunks hold): equal when uncompressed, since
    HDF5 allocates edge chunks whole."""
    import h5py
    import math
    stored = grid = 0
    with h5py.File(h5, "r") as f:
        def visit(_, obj):
            nonlocal stored, grid
            if isinstance(obj, h5py.Dataset):
                stored += obj.id.get_storage_size()
                chunks = obj.chunks or obj.shape
                n = math.prod(math.ceil(s / c) for s, c in zip(obj.shape, chunks)) if obj.size else 0
                grid += n * math.prod(chunks) * obj.dtype.itemsize
        f[group].visititems(visit)
    return stored, grid


def parse_level(variant):
    if variant == "none":
        return None
    return 3 if variant == "zstd" else int(variant.split(":", 1)[1])


def scenario_convert(a, engine, work):
    checkpoint, latest = make_fixture(work, a.fixture)
    extra = shlex.split(a.engine_args)
    ref, config = reference(engine, work, checkpoint, latest, extra)
    for variant in a.compress.split(","):
        level = parse_level(variant)
        h5 = os.path.join(work, f"out_{variant.replace(':', '_')}.h5")
        args = ["--input", checkpoint, "--output", h5, "--format", "hdf5"] + extra
        if level is not None:
            args += ["--compress", variant]
        p = engine(args)
        if p.returncode:
            fail(f"the hdf5 conversion ({variant}) failed")
            continue
        summary = stored_ratio(p)
        total = sum(len(t[2]) for t in ref.values())
        if not summary or summary[0] != f"iter_{latest:07d}" or summary[1] != total:
            fail(f"no or wrong hdf5 summary line: {summary}")
        else:
            print(f"OK: summary: {summary[1]} bytes stored in {summary[2]} (ratio {summary[3]})")
            stored, grid = storage_sizes(h5, f"iter_{latest:07d}")
            if summary[2] != stored:
                fail(f"the summary says {summary[2]} bytes stored, h5py says {stored}")
            if level is None and stored != grid:
                fail(f"uncompressed datasets occupy {stored} bytes, their chunk grids {grid}")
        check_group(h5, f"iter_{latest:07d}", ref, level, provenance(checkpoint, latest, config, level), a.plugin_dir)
        no_leftovers(work, variant)
        if level is not None:
            check_foreign_frames(work)


def damage_replica(checkpoint, iteration):
    """Change one element of a replicated tensor on TP rank 1: the writer notices during the transfers."""
    import torch
    paths = sorted(glob.glob(os.path.join(checkpoint, f"iter_{iteration:07d}", "mp_rank_01*", "model_optim_rng.pt")))
    sd = torch.load(paths[0], map_location="cpu")
    model = sd["model"] if "model" in sd else sd[sorted(k for k in sd if k.startswith("model"))[0]]
    key = next(k for k in model if "layer_norm_weight" in k or "layernorm.weight" in k)
    model[key][0] += 1
    torch.save(sd, paths[0])
    return key


def scenario_iterations(a, engine, work):
    checkpoint, latest = make_fixture(work, a.fixture)
    its = sorted(int(n[len("iter_"):]) for n in os.listdir(checkpoint) if n.startswith("iter_"))
    if len(its) < 2:
        raise SystemExit("the iterations scenario needs a fixture with --iterations A,B")
    first, second = its[0], its[-1]
    extra = shlex.split(a.engine_args)
    refs = {it: reference(engine, work, checkpoint, it, extra) for it in (first, second)}
    h5 = os.path.join(work, "run.h5")
    zstd = ["--compress", "zstd:5"]
    for it in (first, second):
        p = engine(["--input", checkpoint, "--iteration", str(it), "--output", h5, "--format", "hdf5"] + zstd + extra)
        if p.returncode:
            fail(f"converting iteration {it} into {h5} failed")
    for it in (first, second):
        ref, config = refs[it]
        check_group(h5, f"iter_{it:07d}", ref, 5, provenance(checkpoint, it, config, 5), a.plugin_dir, dump=False)

    # An existing group: refused without --overwrite (file untouched), replaced with it (the other kept).
    before = open(h5, "rb").read()
    p = engine(["--input", checkpoint, "--iteration", str(first), "--output", h5, "--format", "hdf5"] + extra)
    expect_error(p, rf"run\.h5: group 'iter_{first:07d}' already exists.*--overwrite", "existing group")
    if open(h5, "rb").read() != before:
        fail("a refused conversion changed the file")
    p = engine(["--input", checkpoint, "--iteration", str(first), "--output", h5, "--format", "hdf5", "--overwrite"]
               + extra)
    if p.returncode:
        fail("--overwrite of an existing group failed")
    ref, config = refs[first]
    check_group(h5, f"iter_{first:07d}", ref, None, provenance(checkpoint, first, config, None), a.plugin_dir)
    ref, config = refs[second]
    check_group(h5, f"iter_{second:07d}", ref, 5, provenance(checkpoint, second, config, 5), a.plugin_dir, dump=False)

    # A nested --group in the same file.
    p = engine(["--input", checkpoint, "--iteration", str(second), "--output", h5, "--format", "hdf5",
                "--group", "runs/b", "--compress", "zstd"] + extra)
    if p.returncode:
        fail("a nested --group failed")
    ref, config = refs[second]
    check_group(h5, "runs/b", ref, 3, provenance(checkpoint, second, config, 3), a.plugin_dir)

    # A failure during the transfers: no staging group in the existing file, no new file.
    key = damage_replica(checkpoint, first)
    p = engine(["--input", checkpoint, "--iteration", str(first), "--output", h5, "--format", "hdf5",
                "--group", "damaged"] + zstd + extra)
    expect_error(p, re.escape(key) + r".*differs between TP ranks", "failure while writing into an existing file")
    import h5py
    with h5py.File(h5, "r") as f:
        groups = sorted(f)
    if groups != sorted([f"iter_{first:07d}", f"iter_{second:07d}", "runs"]):
        fail(f"groups after a failed conversion: {groups}")
    fresh = os.path.join(work, "fresh.h5")
    p = engine(["--input", checkpoint, "--iteration", str(first), "--output", fresh, "--format", "hdf5"] + zstd + extra)
    expect_error(p, r"differs between TP ranks", "failure while writing a new file")
    if os.path.exists(fresh):
        fail("a failed conversion left a new file behind")
    no_leftovers(work, "iterations")


def scenario_errors(a, engine, work):
    checkpoint, _ = make_fixture(work, a.fixture)
    base = ["--input", checkpoint, "--format", "hdf5"]
    out = os.path.join(work, "out")
    os.makedirs(out)

    for bad, pattern in [("zstd:99", r"--compress: zstd level 99 is out of range"),
                         ("zstd:fast", r"--compress: zstd level 'fast' is not an integer"),
                         ("lz4", r"--compress: expected zstd, zstd:LEVEL or none, got 'lz4'")]:
        p = engine(base + ["--output", os.path.join(out, "a.h5"), "--compress", bad])
        expect_error(p, pattern, f"--compress {bad}")
    p = engine(["--input", checkpoint, "--output", os.path.join(out, "st"), "--compress", "zstd"])
    expect_error(p, r"--compress: needs --format hdf5", "--compress without --format hdf5")

    notes = os.path.join(out, "notes.h5")
    with open(notes, "w") as f:
        f.write("not an HDF5 file\n")
    p = engine(base + ["--output", notes])
    expect_error(p, r"notes\.h5: exists and is not an HDF5 file", "non-HDF5 file at --output")
    with open(notes) as f:
        if f.read() != "not an HDF5 file\n":
            fail("the non-HDF5 file was changed")
    p = engine(base + ["--output", out])
    expect_error(p, r"out: is a folder", "folder at --output")

    # Read-only: a folder and an existing HDF5 file without write permission.
    as_nobody = os.geteuid() == 0
    if as_nobody:  # nobody must be able to read the checkpoint and reach the work folder
        for d in [work] + [os.path.dirname(work)]:
            os.chmod(d, 0o755)
        for root, dirs, files in os.walk(work):
            for n in dirs:
                os.chmod(os.path.join(root, n), 0o755)
            for n in files:
                os.chmod(os.path.join(root, n), 0o644)
    ro = os.path.join(work, "readonly")
    os.makedirs(ro)
    good = os.path.join(out, "good.h5")
    p = engine(base + ["--output", good])
    if p.returncode:
        fail("a plain hdf5 conversion failed")
    ro_file = os.path.join(work, "readonly_file.h5")
    shutil.copyfile(good, ro_file)
    os.chmod(ro_file, 0o444)
    os.chmod(ro, 0o555)
    try:
        p = engine(base + ["--output", os.path.join(ro, "x.h5")], as_nobody=as_nobody)
        expect_error(p, r"readonly/x\.h5: cannot create the output file: Permission denied", "read-only folder")
        if os.listdir(ro):
            fail(f"files left in the read-only folder: {os.listdir(ro)}")
        p = engine(base + ["--output", ro_file, "--group", "more"], as_nobody=as_nobody)
        expect_error(p, r"readonly_file\.h5: cannot open for writing: Permission denied", "read-only file")
    finally:
        os.chmod(ro, 0o755)
    no_leftovers(out, "errors")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True)
    ap.add_argument("--engine", required=True)
    ap.add_argument("--plugin-dir", required=True, help="the folder holding the zstd HDF5 plugin")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--fixture", default="", help="arguments for tests/fixtures/megatron_fixture.py")
    ap.add_argument("--engine-args", default="", help="extra megatron2hf arguments for every conversion")
    ap.add_argument("--compress", default="none,zstd", help="comma-separated: none, zstd, zstd:LEVEL")
    ap.add_argument("--scenario", choices=["convert", "iterations", "errors"], default="convert")
    a = ap.parse_args()

    a.plugin_dir = os.path.abspath(a.plugin_dir)
    if not glob.glob(os.path.join(a.plugin_dir, "lib*.so")):
        raise SystemExit(f"FAIL: no plugin library in {a.plugin_dir}")
    # Before h5py loads HDF5: the library reads the plugin path when it first needs a filter.
    os.environ["HDF5_PLUGIN_PATH"] = a.plugin_dir
    work = os.path.join(a.workdir, a.name)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    engine = Engine(a.engine, a.ranks)
    {"convert": scenario_convert, "iterations": scenario_iterations, "errors": scenario_errors}[a.scenario](
        a, engine, work)
    if failures:
        print(f"{len(failures)} failure(s)")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
