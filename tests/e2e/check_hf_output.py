#!/usr/bin/python3
"""Check a converted Hugging Face folder against a fixture's expected truth and config.

    check_hf_output.py --output OUT_DIR --expected FIXTURE/expected/iter_0000100
                       [--dtype source|bf16|fp16|fp32] [--vocab-size N] [--expect-sharded]
                       [--max-shard-size BYTES] [--ignore-config-key KEY ...]

What is checked, and why:
  * every .safetensors file is read by the reader below, which rejects what the reference Rust reader rejects
    (docs/formats.md §6.4), so a file that passes here also loads in `safetensors`/transformers;
  * the reference WRITER's conventions (§6.3) are enforced as well (data order dtype-descending then byte-wise name,
    compact JSON with __metadata__ {"format":"pt"} first, space padding to a multiple of 8), because the engine
    promises byte-identical output to the Python tools;
  * file layout (§5.6): a single model.safetensors and no index, or with --expect-sharded model-%05d-of-%05d files
    plus an index whose weight_map names every tensor exactly once (no ghosts) and whose total_size is right;
    with --max-shard-size the split must be the huggingface_hub split of the HF state-dict order;
  * the SET of tensor names, and each tensor's dtype, shape and exact bytes, equal the truth after the requested
    cast (torch round-to-nearest-even) and vocab trim (rows [0, N) of embed_tokens / lm_head);
  * config.json equals the expected config field by field (_name_or_path ignored).

Exit status 0 and `OK: N tensors, B bytes` on success; a readable diff and exit status 1 otherwise.
"""

import argparse
import collections
import json
import os
import re
import struct
import sys

import torch

# dtype string -> bits per element (docs/formats.md §6.2). Sub-byte types are valid for the reader.
ST_DTYPE_BITS = {"BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8,
                 "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
                 "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64}
ST_DTYPE_RANK = {name: i for i, name in enumerate(ST_DTYPE_BITS)}  # dict order == Rust enum order
ST_TO_TORCH = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
               "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
               "BOOL": torch.bool}
TORCH_TO_ST = {v: k for k, v in ST_TO_TORCH.items()}
CAST = {"source": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
CONFIG_DTYPE = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}
MAX_HEADER_SIZE = 100_000_000
SHARD_RE = re.compile(r"^model-(\d{5})-of-(\d{5})\.safetensors$")


class SafetensorsError(Exception):
    """A file the reference reader would reject (or that breaks the reference writer's conventions)."""


# ---------------------------------------------------------------------------------------------------------------
# safetensors reader
# ---------------------------------------------------------------------------------------------------------------

def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    dups = sorted({k for k in keys if keys.count(k) > 1})
    if dups:
        raise SafetensorsError(f"duplicate JSON keys {dups}")
    return collections.OrderedDict(pairs)


def _is_uint(x):
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def parse_header(raw, file_len, path):
    """Validate the header the way `SafeTensors::read_metadata` + `Metadata::validate` do (formats.md §6.4).

    Returns (metadata, [(name, dtype, shape, begin, end)] in header order, header_len N)."""
    if len(raw) < 8:
        raise SafetensorsError(f"{path}: HeaderTooSmall (file shorter than 8 bytes)")
    n = struct.unpack("<Q", raw[:8])[0]
    if n > MAX_HEADER_SIZE:
        raise SafetensorsError(f"{path}: HeaderTooLarge ({n} > {MAX_HEADER_SIZE})")
    if 8 + n > file_len:
        raise SafetensorsError(f"{path}: InvalidHeaderLength (8 + {n} > file size {file_len})")
    try:
        text = raw[8:8 + n].decode("utf-8")
    except UnicodeDecodeError as e:
        raise SafetensorsError(f"{path}: InvalidHeader (not UTF-8: {e})")
    if not text.startswith("{"):
        raise SafetensorsError(f"{path}: InvalidHeaderStart (header must begin with '{{')")
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as e:
        raise SafetensorsError(f"{path}: InvalidHeaderDeserialization ({e})")
    if not isinstance(obj, dict):
        raise SafetensorsError(f"{path}: InvalidHeaderDeserialization (not a JSON object)")
    meta = obj.get("__metadata__")
    if meta is not None and (not isinstance(meta, dict) or
                             not all(isinstance(v, str) for v in meta.values())):
        raise SafetensorsError(f"{path}: InvalidHeaderDeserialization (__metadata__ must map strings to strings)")
    entries = []
    for name, info in obj.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise SafetensorsError(f"{path}: InvalidHeaderDeserialization ({name}: need exactly dtype, shape, "
                                   f"data_offsets; got {info!r})")
        dtype, shape, offs = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in ST_DTYPE_BITS:
            raise SafetensorsError(f"{path}: InvalidHeaderDeserialization ({name}: unknown dtype {dtype!r})")
        if not isinstance(shape, list) or not all(_is_uint(d) for d in shape):
            raise SafetensorsError(f"{path}: InvalidHeaderDeserialization ({name}: bad shape {shape!r})")
        if not isinstance(offs, list) or len(offs) != 2 or not all(_is_uint(o) for o in offs):
            raise SafetensorsError(f"{path}: InvalidHeaderDeserialization ({name}: bad data_offsets {offs!r})")
        entries.append((name, dtype, tuple(shape), offs[0], offs[1]))
    _validate_offsets(entries, file_len, n, path)
    return meta, entries, n


def _validate_offsets(entries, file_len, n, path):
    """Offsets must tile [0, data_len) exactly once, and each span must be exactly the tensor's byte size."""
    end = 0
    for name, dtype, shape, b, e in sorted(entries, key=lambda x: (x[3], x[4])):
        if b != end or e < b:
            raise SafetensorsError(f"{path}: InvalidOffset({name}): [{b},{e}) after previous end {end}")
        numel = 1
        for d in shape:
            numel *= d
        bits = numel * ST_DTYPE_BITS[dtype]
        if bits % 8:
            raise SafetensorsError(f"{path}: MisalignedSlice({name})")
        if e - b != bits // 8:
            raise SafetensorsError(f"{path}: TensorInvalidInfo({name}): {e - b} bytes for {dtype}{list(shape)}")
        end = e
    if 8 + n + end != file_len:
        raise SafetensorsError(f"{path}: MetadataIncompleteBuffer (8 + {n} + {end} != file size {file_len})")


def check_writer_conventions(raw, meta, entries, n, path):
    """The reference writer's exact layout (formats.md §6.3), needed for byte parity with the Python tools.
    Returns a list of problems."""
    problems = []
    if meta != {"format": "pt"}:
        problems.append(f"__metadata__ is {meta!r}, expected {{'format': 'pt'}}")
    if n % 8:
        problems.append(f"header length {n} is not a multiple of 8")
    text = raw[8:8 + n].decode("utf-8")
    body = text.rstrip(" ")
    if len(text) - len(body) >= 8:
        problems.append(f"{len(text) - len(body)} padding spaces (expected fewer than 8)")
    by_offset = sorted(entries, key=lambda x: x[3])
    want_data_order = sorted(entries, key=lambda x: (-ST_DTYPE_RANK[x[1]], x[0].encode()))
    if [x[0] for x in by_offset] != [x[0] for x in want_data_order]:
        problems.append("data order is not (dtype descending, name byte-wise ascending)")
    compact = collections.OrderedDict([("__metadata__", meta)] if meta is not None else [])
    for name, dtype, shape, b, e in by_offset:
        compact[name] = collections.OrderedDict([("dtype", dtype), ("shape", list(shape)), ("data_offsets", [b, e])])
    want = json.dumps(compact, separators=(",", ":"), ensure_ascii=False)
    if body != want:
        i = next((k for k in range(min(len(body), len(want))) if body[k] != want[k]), min(len(body), len(want)))
        problems.append(f"header JSON is not the compact form (metadata first, tensors in offset order, fields "
                        f"dtype/shape/data_offsets); first difference at char {i}: "
                        f"got {body[max(0, i - 30):i + 30]!r}, want {want[max(0, i - 30):i + 30]!r}")
    return [f"{path}: {p}" for p in problems]


def read_safetensors(path, convention_problems=None):
    """Read and validate one file. Returns OrderedDict name -> (dtype string, shape, bytes), in header order.

    Raises SafetensorsError for what the reference reader rejects. Writer-convention violations do not make the
    file unreadable, so they are appended to `convention_problems` (when given) and the tensors still returned."""
    with open(path, "rb") as f:
        raw = f.read()
    meta, entries, n = parse_header(raw, len(raw), path)
    if convention_problems is not None:
        convention_problems.extend(check_writer_conventions(raw, meta, entries, n, path))
    base = 8 + n
    return collections.OrderedDict((name, (dtype, shape, raw[base + b:base + e]))
                                   for name, dtype, shape, b, e in entries)


def to_torch(dtype, shape, data):
    """Tensor view of a stored tensor (copied, so the file buffer can be dropped)."""
    if dtype not in ST_TO_TORCH:
        raise SafetensorsError(f"dtype {dtype} has no torch equivalent here")
    if not data:
        return torch.empty(shape, dtype=ST_TO_TORCH[dtype])
    return torch.frombuffer(bytearray(data), dtype=ST_TO_TORCH[dtype]).reshape(shape)


def tensor_bytes(t):
    t = t.detach().contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


# ---------------------------------------------------------------------------------------------------------------
# Folder layout
# ---------------------------------------------------------------------------------------------------------------

def load_hf_folder(out_dir, expect_sharded, errors):
    """Read every weight file of an HF folder, enforcing the single-file / sharded layout rules.

    Returns (name -> (dtype, shape, bytes), name -> file name, index dict or None)."""
    files = sorted(f for f in os.listdir(out_dir) if f.endswith(".safetensors"))
    index_path = os.path.join(out_dir, "model.safetensors.index.json")
    has_index = os.path.exists(index_path)
    index = None
    if not expect_sharded:
        if files != ["model.safetensors"]:
            errors.append(f"expected exactly one weight file model.safetensors, found {files}")
        if has_index:
            errors.append("model.safetensors.index.json must not exist for single-file output")
        files = [f for f in files if f == "model.safetensors"]
    else:
        if not has_index:
            errors.append("sharded output needs model.safetensors.index.json")
        shard_ids = [SHARD_RE.match(f) for f in files]
        if not files or not all(shard_ids):
            errors.append(f"sharded output must contain only model-%05d-of-%05d.safetensors files, found {files}")
        else:
            n = int(shard_ids[0].group(2))
            want = [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
            if files != want or n < 2:
                errors.append(f"shard files {files} are not exactly {want} (n >= 2)")
        if has_index:
            with open(index_path) as f:
                index = json.load(f, object_pairs_hook=_no_duplicates)
    tensors, where = collections.OrderedDict(), {}
    for fname in files:
        try:
            content = read_safetensors(os.path.join(out_dir, fname), errors)
        except SafetensorsError as e:
            errors.append(str(e))
            continue
        for name, val in content.items():
            if name in tensors:
                errors.append(f"tensor {name} appears in both {where[name]} and {fname}")
            tensors[name] = val
            where[name] = fname
    if index is not None:
        check_index(index, tensors, where, errors)
    return tensors, where, index


def check_index(index, tensors, where, errors):
    """weight_map must name every stored tensor exactly once with its real file, and nothing else (no ghosts)."""
    if set(index) - {"metadata", "weight_map"} or "weight_map" not in index:
        errors.append(f"index keys are {sorted(index)}, expected metadata and weight_map")
        return
    wm = index["weight_map"]
    for name in sorted(set(wm) - set(tensors)):
        errors.append(f"index weight_map names {name} ({wm[name]}) which no shard contains (ghost entry)")
    for name in sorted(set(tensors) - set(wm)):
        errors.append(f"tensor {name} in {where[name]} is missing from the index weight_map")
    for name in sorted(set(tensors) & set(wm)):
        if wm[name] != where[name]:
            errors.append(f"index maps {name} to {wm[name]} but it is stored in {where[name]}")
    total = sum(len(v[2]) for v in tensors.values())
    got = (index.get("metadata") or {}).get("total_size")
    if got != total:
        errors.append(f"index metadata.total_size is {got}, the shards hold {total} tensor bytes")


def check_shard_split(expected, where, max_shard_size, errors):
    """With a known --max-shard-size, the partition must be huggingface_hub's split of the state-dict order."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
    from write_reference_hf import shard_file_names, split_into_shards
    shards = split_into_shards(expected, max_shard_size)
    found = len(set(where.values()))
    if found != len(shards):
        errors.append(f"{found} shard files, the huggingface_hub split for {max_shard_size} bytes gives {len(shards)}")
    for fname, members in zip(shard_file_names(len(shards)), shards):
        for name in members:
            if name in where and where[name] != fname:
                errors.append(f"{name} is in {where[name]}, the huggingface_hub split puts it in {fname}")


# ---------------------------------------------------------------------------------------------------------------
# Tensors and config against the truth
# ---------------------------------------------------------------------------------------------------------------

def expected_tensors(truth, dtype, vocab_size):
    """The truth after the converter's cast and vocab trim."""
    out = collections.OrderedDict()
    for name, t in truth.items():
        if vocab_size is not None and name in ("model.embed_tokens.weight", "lm_head.weight"):
            t = t[:vocab_size]
        if CAST[dtype] is not None:
            t = t.to(CAST[dtype])
        out[name] = t.contiguous()
    return out


def first_difference(want, got):
    """Multi-index and values of the first differing element, plus the count of differing elements."""
    w, g = want.reshape(-1), got.reshape(-1)
    diff = w != g
    if w.is_floating_point():
        diff &= ~(torch.isnan(w) & torch.isnan(g))
    count = int(diff.sum())
    idx = int(diff.nonzero()[0][0]) if count else 0
    pos, rem = [], idx
    for d in reversed(want.shape):
        pos.insert(0, rem % d)
        rem //= d
    return pos, w[idx].item(), g[idx].item(), count


def compare_tensors(expected, got, errors):
    names_e, names_g = set(expected), set(got)
    for name in sorted(names_e - names_g):
        errors.append(f"missing tensor {name}")
    for name in sorted(names_g - names_e):
        errors.append(f"unexpected tensor {name}")
    for name in [n for n in expected if n in names_g]:
        want = expected[name]
        dtype, shape, data = got[name]
        wdt = TORCH_TO_ST[want.dtype]
        if dtype != wdt or shape != tuple(want.shape):
            errors.append(f"{name}: got {dtype}{list(shape)}, want {wdt}{list(want.shape)}")
            continue
        if data != tensor_bytes(want):
            pos, wv, gv, count = first_difference(want, to_torch(dtype, shape, data))
            errors.append(f"{name}: bytes differ ({count} elements); first at {pos}: got {gv!r}, want {wv!r}")


def _same_json_value(a, b):
    """JSON equality where 1e-05 == 1e-5 and 10000 == 10000.0, but True != 1 and null != 0."""
    if isinstance(a, dict) or isinstance(b, dict):
        return isinstance(a, dict) and isinstance(b, dict) and set(a) == set(b) and \
            all(_same_json_value(a[k], b[k]) for k in a)
    if isinstance(a, list) or isinstance(b, list):
        return isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and \
            all(_same_json_value(x, y) for x, y in zip(a, b))
    numeric = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool)
    if numeric(a) and numeric(b):
        return a == b
    return type(a) is type(b) and a == b


def compare_config(expected, got, ignore, errors):
    for key in sorted(set(expected) | set(got)):
        if key in ignore:
            continue
        if key not in got:
            errors.append(f"config.json: missing {key!r} (want {json.dumps(expected[key])})")
        elif key not in expected:
            errors.append(f"config.json: unexpected {key!r} = {json.dumps(got[key])}")
        elif not _same_json_value(expected[key], got[key]):
            errors.append(f"config.json: {key!r} is {json.dumps(got[key])}, want {json.dumps(expected[key])}")


def run_checks(a):
    errors = []
    truth = torch.load(os.path.join(a.expected, "truth.pt"))
    with open(os.path.join(a.expected, "config.json")) as f:
        want_cfg = json.load(f)
    if a.vocab_size is not None:
        want_cfg["vocab_size"] = a.vocab_size
    if CAST[a.dtype] is not None:
        want_cfg["torch_dtype"] = CONFIG_DTYPE[CAST[a.dtype]]
    expected = expected_tensors(truth, a.dtype, a.vocab_size)

    got, where, _ = load_hf_folder(a.output, a.expect_sharded, errors)
    compare_tensors(expected, got, errors)
    if a.expect_sharded and a.max_shard_size:
        check_shard_split(expected, where, a.max_shard_size, errors)
    cfg_path = os.path.join(a.output, "config.json")
    if not os.path.exists(cfg_path):
        errors.append("config.json is missing")
    else:
        with open(cfg_path) as f:
            try:
                got_cfg = json.load(f, object_pairs_hook=_no_duplicates)
                compare_config(want_cfg, got_cfg, set(a.ignore_config_key) | {"_name_or_path"}, errors)
            except (json.JSONDecodeError, SafetensorsError) as e:
                errors.append(f"config.json is not valid JSON: {e}")
    total = sum(len(v[2]) for v in got.values())
    return errors, len(got), total


def main(argv=None):
    ap = argparse.ArgumentParser(description="Check an HF output folder against a fixture's expected truth.",
                                 epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", required=True, help="the converter's HF output folder")
    ap.add_argument("--expected", required=True, help="FIXTURE/expected/iter_XXXXXXX (truth.pt + config.json)")
    ap.add_argument("--dtype", choices=sorted(CAST), default="source",
                    help="cast the converter was asked for (source = no cast)")
    ap.add_argument("--vocab-size", type=int, default=None, help="the converter trimmed the vocabulary to N rows")
    ap.add_argument("--expect-sharded", action="store_true", help="expect model-%%05d-of-%%05d files + index")
    ap.add_argument("--max-shard-size", type=int, default=None,
                    help="with --expect-sharded: also require the huggingface_hub split for this size")
    ap.add_argument("--ignore-config-key", action="append", default=[],
                    help="config.json key not compared (repeatable); _name_or_path is always ignored")
    a = ap.parse_args(argv)
    errors, n, total = run_checks(a)
    if errors:
        print(f"FAIL: {len(errors)} problem(s) in {a.output}:", file=sys.stderr)
        for e in errors[:200]:
            print("  - " + e, file=sys.stderr)
        if len(errors) > 200:
            print(f"  ... and {len(errors) - 200} more", file=sys.stderr)
        return 1
    print(f"OK: {n} tensors, {total} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
