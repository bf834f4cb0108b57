#!/usr/bin/python3
"""A corpus of damaged Megatron checkpoints for megatron2hf, generated from one real fixture.

One base fixture (tests/fixtures/megatron_fixture.py, TP 2 x PP 2, legacy and torch_dist, real torch.save) is
written once; every case copies the checkpoint it needs and damages it by code: offsets come from parsing the zip
archives (central directory, ZIP64 records, local headers), pickle edits are made at opcode boundaries found with
pickletools, checkpoint-level damage goes through torch.load / torch.save, and DCP damage through pickle.load /
pickle.dump of `.metadata` with the fixture's stand-in DCP classes. Nothing is a hand-picked byte offset.

Each case names the regex its single error line must match and the file(s) that line must name. run_corpus.py
runs the engine over every case; this script alone writes the corpus (for inspection or for other tools):

    /usr/bin/python3 tests/damaged/make_corpus.py --out /tmp/corpus [--only REGEX]
"""
import argparse
import dataclasses
import io
import json
import os
import pickle
import pickletools
import re
import shutil
import struct
import sys
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SRC, "tests", "fixtures"))

import megatron_fixture as mf  # noqa: E402  (registers the DCP stand-in classes under the real module names)
import torch  # noqa: E402

ITER = "iter_0000100"
FIXTURE = dict(arch="opensci", tp=2, pp=2, layers=4, hidden=64, heads=4, kv_heads=4, ffn=128, padded_vocab=256,
               dtype="bf16", format="both")
# The checkpoint whose .metadata is planted into the base one: same layout, another hidden size.
OTHER_FIXTURE = dict(FIXTURE, hidden=128, format="torch_dist", seed=99)


def rank_file(t, p):
    return f"mp_rank_{t:02d}_{p:03d}/model_optim_rng.pt"


# ---------------------------------------------------------------------------------------------------------------
# Zip structures, parsed independently of the engine (APPNOTE 4.3.7-4.3.16, docs/formats.md §2.2)
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class ZipEntry:
    name: str
    cd_pos: int        # file offset of the central directory header
    method: int
    csize: int
    usize: int
    lh_offset: int     # local header offset
    data_offset: int   # first data byte, from the local header's own name/extra lengths
    zip64_extra: bool


@dataclasses.dataclass
class ZipLayout:
    size: int
    eocd: int
    locator: int       # -1 when absent
    zip64_eocd: int    # -1 when absent
    cd_offset: int
    cd_size: int
    count: int
    entries: list

    def entry(self, suffix):
        hits = [e for e in self.entries if e.name.endswith("/" + suffix)]
        assert len(hits) == 1, (suffix, [e.name for e in self.entries][:5])
        return hits[0]


def zip_layout(data):
    eocd = data.rfind(b"PK\x05\x06", max(0, len(data) - 22 - 65535))
    assert eocd >= 0, "no EOCD"
    _, _, _, count, cd_size, cd_offset, _ = struct.unpack_from("<HHHHIIH", data, eocd + 4)
    locator = zip64 = -1
    if eocd >= 20 and data[eocd - 20:eocd - 16] == b"PK\x06\x07":
        locator = eocd - 20
        zip64 = struct.unpack_from("<Q", data, locator + 8)[0]
        assert data[zip64:zip64 + 4] == b"PK\x06\x06"
        count, cd_size, cd_offset = struct.unpack_from("<QQQ", data, zip64 + 32)
    entries, p = [], cd_offset
    for _ in range(count):
        assert data[p:p + 4] == b"PK\x01\x02", p
        method, = struct.unpack_from("<H", data, p + 10)
        csize, usize, n, e, c = struct.unpack_from("<IIHHH", data, p + 20)
        lh, = struct.unpack_from("<I", data, p + 42)
        name = data[p + 46:p + 46 + n].decode()
        x, has64 = p + 46 + n, False
        while x < p + 46 + n + e:
            hid, hlen = struct.unpack_from("<HH", data, x)
            if hid == 1:
                has64, q = True, x + 4
                if usize == 0xFFFFFFFF:
                    usize, q = struct.unpack_from("<Q", data, q)[0], q + 8
                if csize == 0xFFFFFFFF:
                    csize, q = struct.unpack_from("<Q", data, q)[0], q + 8
                if lh == 0xFFFFFFFF:
                    lh = struct.unpack_from("<Q", data, q)[0]
            x += 4 + hlen
        assert data[lh:lh + 4] == b"PK\x03\x04", name
        ln, le = struct.unpack_from("<HH", data, lh + 26)
        entries.append(ZipEntry(name, p, method, csize, usize, lh, lh + 30 + ln + le, has64))
        p += 46 + n + e + c
    return ZipLayout(len(data), eocd, locator, zip64, cd_offset, cd_size, count, entries)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def patch(path, offset, new):
    data = bytearray(read(path))
    assert 0 <= offset and offset + len(new) <= len(data), (path, offset, len(new), len(data))
    data[offset:offset + len(new)] = new
    write(path, bytes(data))


def truncate(path, n):
    with open(path, "r+b") as f:
        f.truncate(n)


def rewrite_zip(path, replace=None, drop=()):
    """The same records in the same order, stored (Python's zipfile; the engine does not need torch's 64-byte
    alignment), with some replaced or dropped."""
    replace = replace or {}
    with zipfile.ZipFile(path) as z:
        records = [(i.filename, z.read(i)) for i in z.infolist()]
    names = [n for n, _ in records]
    for suffix in list(replace) + list(drop):
        assert sum(n.endswith("/" + suffix) for n in names) == 1, suffix
    with zipfile.ZipFile(path + ".tmp", "w", zipfile.ZIP_STORED) as z:
        for name, data in records:
            rec = name.split("/", 1)[1]
            if rec in drop:
                continue
            z.writestr(zipfile.ZipInfo(name), replace.get(rec, data))
    os.replace(path + ".tmp", path)


def data_pkl(path):
    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.endswith("/data.pkl"))
        return z.read(name)


def opcodes(pkl):
    """[(name, arg, offset)] of a pickle, from pickletools."""
    return [(op.name, arg, pos) for op, arg, pos in pickletools.genops(pkl)]


def edit_pickle(path, fn):
    """Rewrites data.pkl of the torch.save archive at `path` with fn(old bytes)."""
    rewrite_zip(path, replace={"data.pkl": fn(data_pkl(path))})


def after_proto(pkl, inserted):
    """Splices opcodes right after the leading PROTO, leaving the rest of the real pickle intact."""
    assert pkl[0] == 0x80
    return pkl[:2] + inserted + pkl[2:]


def binunicode(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def global_call(module, name, arg):
    """GLOBAL module name, (arg,), REDUCE, POP: what a malicious pickle uses to run a command on load."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n" + binunicode(arg) + b"\x85R0"


def stack_global_call(module, name, arg):
    return binunicode(module) + binunicode(name) + b"\x93" + binunicode(arg) + b"\x85R0"


# ---------------------------------------------------------------------------------------------------------------
# torch.save level and DCP level helpers
# ---------------------------------------------------------------------------------------------------------------

def edit_state(path, fn):
    sd = torch.load(path, map_location="cpu")
    fn(sd)
    torch.save(sd, path)


def rename_key(od, old, new):
    items = [(new if k == old else k, v) for k, v in od.items()]
    assert any(k == new for k, _ in items), old
    od.clear()
    od.update(items)


def load_metadata(it):
    mf.dcp_classes()
    with open(os.path.join(it, ".metadata"), "rb") as f:
        return pickle.load(f)


def dump_metadata(it, md):
    mf.pickle_dcp_metadata(md, os.path.join(it, ".metadata"))


def storage_entry(md, fqn, offsets):
    for k, v in md.storage_data.items():
        if k.fqn == fqn and getattr(k, "offset", None) is not None and tuple(k.offset) == tuple(offsets):
            return k, v
    raise KeyError((fqn, offsets))


def move_chunk(md, fqn, chunk_no, dim, delta):
    """Moves one chunk by `delta` along `dim`, in state_dict_metadata and in its storage_data key alike."""
    D = mf.dcp_classes()
    chunk = md.state_dict_metadata[fqn].chunks[chunk_no]
    old = tuple(chunk.offsets)
    new = list(old)
    new[dim] += delta
    chunk.offsets = torch.Size(new)
    key, info = storage_entry(md, fqn, old)
    md.storage_data = {(D.MetadataIndex(fqn, new, key.index) if k is key else k): v for k, v in md.storage_data.items()}
    return old, tuple(new)


def drop_storage(md, fqn, offsets):
    key, _ = storage_entry(md, fqn, offsets)
    del md.storage_data[key]


class DuplicatingPickler(pickle._Pickler):
    """Python's own pickler, except that one dict is written with an extra (key, value) pair appended: a Python
    dict cannot hold two equal keys, but a pickle can."""

    dispatch = dict(pickle._Pickler.dispatch)

    def __init__(self, f, target, extra, **kw):
        super().__init__(f, **kw)
        self.target, self.extra = target, extra

    def save_dict(self, obj):
        if obj is not self.target:
            return pickle._Pickler.save_dict(self, obj)
        self.write(pickle.EMPTY_DICT)
        self.memoize(obj)
        self._batch_setitems(iter(list(obj.items()) + [self.extra]))

    dispatch[dict] = save_dict


# Names used by several cases.
QKV = "decoder.layers.self_attention.linear_qkv.weight"    # stacked DCP key: [4, 192, 64], chunks of 96 rows
EMB = "embedding.word_embeddings.weight"


# ---------------------------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Case:
    name: str
    source: str        # "torch" (legacy rank files) or "dist" (torch_dist)
    expect: str        # regex for the one error line; None: a control that must convert
    damage: object     # fn(Ctx) -> path substrings (relative to the iteration folder) of which one must be named
    ranks: int = 0     # 2 or 3; 0: alternate by position


class Ctx:
    def __init__(self, it, other_it):
        self.it = it                # the copied iteration folder to damage
        self.other_it = other_it    # the other fixture's torch_dist iteration folder (read only)

    def path(self, rel):
        return os.path.join(self.it, rel)


CASES = []


def case(name, source, expect, ranks=0):
    def deco(fn):
        CASES.append(Case(name, source, expect, fn, ranks))
        return fn
    return deco


# ---- controls: the same checkpoints undamaged convert (so no case passes only because everything is refused) ----

@case("control_legacy_intact", "torch", None)
def _(ctx):
    return []


@case("control_dist_intact", "dist", None)
def _(ctx):
    return []


@case("control_legacy_saturated_eocd", "torch", None)
def _(ctx):
    # Every EOCD field a placeholder, as above 4 GiB: still valid, the ZIP64 record alone is read.
    for t in range(2):
        for p in range(2):
            saturate_eocd(ctx.path(rank_file(t, p)))
    return []


# ---- legacy zip: truncations, at points found by parsing the archive --------------------------------------------

TRUNC_FILE = rank_file(1, 0)


def truncation_points(z):
    pkl = z.entry("data.pkl")
    big = max((e for e in z.entries if "/data/" in e.name), key=lambda e: e.usize)
    last_cd = max(e.cd_pos for e in z.entries)
    return {
        "zero_bytes": 0,
        "in_first_local_header": z.entries[0].lh_offset + 26,
        "in_data_pkl": pkl.data_offset + pkl.usize // 2,
        "in_storage_record": big.data_offset + big.usize // 2,
        "at_central_directory": z.cd_offset,
        "in_central_directory": z.cd_offset + z.cd_size // 2,
        "in_last_cd_entry": last_cd + 20,
        "in_zip64_eocd": z.zip64_eocd + 30,
        "in_zip64_locator": z.locator + 10,
        "in_eocd": z.eocd + 10,
        "one_byte_short": z.size - 1,
    }


def _truncation_case(point):
    @case(f"zip_truncated_{point}", "torch", r"model_optim_rng\.pt: zip: not a zip archive")
    def _(ctx):
        path = ctx.path(TRUNC_FILE)
        truncate(path, truncation_points(zip_layout(read(path)))[point])
        return [TRUNC_FILE]


for _point in ("zero_bytes", "in_first_local_header", "in_data_pkl", "in_storage_record", "at_central_directory",
               "in_central_directory", "in_last_cd_entry", "in_zip64_eocd", "in_zip64_locator", "in_eocd",
               "one_byte_short"):
    _truncation_case(_point)


# ---- legacy zip: headers, central directory, ZIP64 fields -------------------------------------------------------

ZIP_FILE = rank_file(0, 1)


@case("zip_cd_signature_flipped", "torch", r"zip: bad central directory signature at entry 3\b")
def _(ctx):
    path = ctx.path(ZIP_FILE)
    z = zip_layout(read(path))
    patch(path, z.entries[3].cd_pos + 1, bytes([read(path)[z.entries[3].cd_pos + 1] ^ 0xFF]))
    return [ZIP_FILE]


@case("zip_cd_local_offset_past_end", "torch", r"zip: record '[^']*data\.pkl': local header offset \d+ is outside")
def _(ctx):
    path = ctx.path(ZIP_FILE)
    z = zip_layout(read(path))
    patch(path, z.entry("data.pkl").cd_pos + 42, struct.pack("<I", z.size + 4096))
    return [ZIP_FILE]


@case("zip_cd_saturated_offset_without_zip64_extra", "torch", r"saturated size or offset without a ZIP64 extra")
def _(ctx):
    path = ctx.path(ZIP_FILE)
    z = zip_layout(read(path))
    e = z.entry("data.pkl")
    assert not e.zip64_extra
    patch(path, e.cd_pos + 42, struct.pack("<I", 0xFFFFFFFF))
    return [ZIP_FILE]


def saturate_eocd(path):
    """Sets every EOCD count, size and offset to its ZIP64 placeholder, as for an archive above 4 GiB: the ZIP64
    record alone then describes the central directory."""
    patch(path, zip_layout(read(path)).eocd + 8, struct.pack("<HHII", 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF))


@case("zip64_eocd_cd_offset_disagrees_with_eocd", "torch",
      r"zip: end-of-central-directory central directory offset \d+ disagrees with the ZIP64 record's \d+")
def _(ctx):
    path = ctx.path(ZIP_FILE)
    z = zip_layout(read(path))
    patch(path, z.zip64_eocd + 48, struct.pack("<Q", z.cd_offset - 46))
    return [ZIP_FILE]


@case("zip64_eocd_cd_offset_absurd", "torch", r"zip: central directory \(offset 4611686018427387904, .*outside")
def _(ctx):
    path = ctx.path(ZIP_FILE)
    saturate_eocd(path)
    patch(path, zip_layout(read(path)).zip64_eocd + 48, struct.pack("<Q", 1 << 62))
    return [ZIP_FILE]


@case("zip64_eocd_cd_size_beyond_file", "torch", r"zip: central directory \(offset \d+, \d+ bytes\) lies outside")
def _(ctx):
    path = ctx.path(ZIP_FILE)
    saturate_eocd(path)
    z = zip_layout(read(path))
    patch(path, z.zip64_eocd + 40, struct.pack("<Q", 2 * z.size))
    return [ZIP_FILE]


@case("zip64_eocd_entry_count_absurd", "torch", r"zip: central directory of \d+ bytes cannot hold 4611686018427387904 entries")
def _(ctx):
    path = ctx.path(ZIP_FILE)
    saturate_eocd(path)
    patch(path, zip_layout(read(path)).zip64_eocd + 24, struct.pack("<QQ", 1 << 62, 1 << 62))
    return [ZIP_FILE]


@case("zip64_locator_offset_absurd", "torch", r"zip: ZIP64 end-of-central-directory offset 4611686018427387904 is outside")
def _(ctx):
    path = ctx.path(ZIP_FILE)
    saturate_eocd(path)
    patch(path, zip_layout(read(path)).locator + 8, struct.pack("<Q", 1 << 62))
    return [ZIP_FILE]


@case("zip64_eocd_signature_flipped", "torch", r"zip: bad ZIP64 end-of-central-directory signature")
def _(ctx):
    path = ctx.path(ZIP_FILE)
    z = zip_layout(read(path))
    patch(path, z.zip64_eocd + 2, bytes([read(path)[z.zip64_eocd + 2] ^ 0xFF]))
    return [ZIP_FILE]


@case("zip_eocd_count_zero_but_zip64_says_n", "torch",
      r"zip: end-of-central-directory entry count( on this disk)? 0 disagrees with the ZIP64 record's \d+")
def _(ctx):
    path = ctx.path(ZIP_FILE)
    z = zip_layout(read(path))
    assert z.count > 0
    patch(path, z.eocd + 8, struct.pack("<HH", 0, 0))
    return [ZIP_FILE]


@case("zip_local_signature_flipped_data_pkl", "torch", r"zip: record '[^']*data\.pkl': bad local header signature")
def _(ctx):
    path = ctx.path(ZIP_FILE)
    lh = zip_layout(read(path)).entry("data.pkl").lh_offset
    patch(path, lh, b"\0")
    return [ZIP_FILE]


@case("zip_cd_storage_size_too_small", "torch", r"storage record 'data/0' holds \d+ bytes but its persistent id says \d+")
def _(ctx):
    path = ctx.path(ZIP_FILE)
    e = zip_layout(read(path)).entry("data/0")
    assert not e.zip64_extra
    patch(path, e.cd_pos + 20, struct.pack("<II", e.usize - 64, e.usize - 64))
    return [ZIP_FILE]


@case("zip_cd_method_deflate", "torch", r"zip: record '[^']*data\.pkl': is compressed \(method 8\)")
def _(ctx):
    path = ctx.path(ZIP_FILE)
    patch(path, zip_layout(read(path)).entry("data.pkl").cd_pos + 10, struct.pack("<H", 8))
    return [ZIP_FILE]


@case("zip_cd_name_climbs_out", "torch", r"zip: refusing entry name '\.\./[^']*': contains a '\.\.' component")
def _(ctx):
    path = ctx.path(ZIP_FILE)
    e = zip_layout(read(path)).entry("data/1")
    patch(path, e.cd_pos + 46, ("../" + e.name[3:]).encode())
    return [ZIP_FILE]


@case("zip_cd_duplicate_entry_name", "torch", r"zip: duplicate entry '[^']*/data/0'")
def _(ctx):
    path = ctx.path(ZIP_FILE)
    z = zip_layout(read(path))
    e1 = z.entry("data/1")
    patch(path, e1.cd_pos + 46, z.entry("data/0").name.encode())
    return [ZIP_FILE]


# ---- legacy pickle: data.pkl rewritten inside the archive -------------------------------------------------------

PKL_FILE = rank_file(1, 1)
PKL = r"model_optim_rng\.pt \([^)]*data\.pkl\): pickle: "


@case("pickle_unknown_opcode", "torch", PKL + r"unknown opcode 0xff at offset \d+")
def _(ctx):
    def fn(pkl):
        ops = opcodes(pkl)
        pos = ops[len(ops) // 2][2]
        return pkl[:pos] + b"\xff" + pkl[pos:]
    edit_pickle(ctx.path(PKL_FILE), fn)
    return [PKL_FILE]


@case("pickle_unsupported_opcode_ext1", "torch", PKL + r"unsupported opcode EXT1")
def _(ctx):
    edit_pickle(ctx.path(PKL_FILE), lambda pkl: after_proto(pkl, b"\x82\x01"))
    return [PKL_FILE]


@case("pickle_binget_unset_memo", "torch", PKL + r"memo index 999999 was never set")
def _(ctx):
    def fn(pkl):
        pos = next(p for name, _, p in opcodes(pkl) if name == "BINGET")
        return pkl[:pos] + b"j" + struct.pack("<I", 999999) + pkl[pos + 2:]
    edit_pickle(ctx.path(PKL_FILE), fn)
    return [PKL_FILE]


@case("pickle_nested_list_bomb", "torch", PKL + r"(containers nested deeper|stack deeper) than \d+")
def _(ctx):
    n = 100_000  # [[[...]]]: valid pickle, 100k levels deep
    edit_pickle(ctx.path(PKL_FILE), lambda pkl: after_proto(pkl, b"]" * n + b"a" * (n - 1) + b"0"))
    return [PKL_FILE]


@case("pickle_mark_bomb", "torch", PKL + r"stack deeper than \d+")
def _(ctx):
    n = 2_000_000  # MARK x n, POP_MARK x n: valid, but more open marks than any real pickle
    edit_pickle(ctx.path(PKL_FILE), lambda pkl: after_proto(pkl, b"(" * n + b"1" * n))
    return [PKL_FILE]


@case("pickle_shared_list_args_bomb", "torch", r"`args` expand to more than \d+ MiB|pickle: .*copies shared values")
def _(ctx):
    # args.bomb = l9 with l(k+1) = [l(k)] * 10 through the memo: 300 bytes that expand to 10^9 elements.
    def fn(pkl):
        ops = opcodes(pkl)
        # The args Namespace's BUILD dict: the first EMPTY_DICT after GLOBAL 'argparse Namespace'.
        g = next(i for i, (n, a, _) in enumerate(ops) if n == "GLOBAL" and a == "argparse Namespace")
        d = next(i for i in range(g, len(ops)) if ops[i][0] == "EMPTY_DICT")
        pos = ops[d + 1][2]
        put = lambda k: b"r" + struct.pack("<I", 900000 + k)  # LONG_BINPUT
        get = lambda k: b"j" + struct.pack("<I", 900000 + k)  # LONG_BINGET
        bomb = binunicode("bomb") + binunicode("x") + put(0) + b"0"
        for k in range(9):
            bomb += b"](" + get(k) * 10 + b"e" + put(k + 1) + (b"0" if k < 8 else b"")
        bomb += b"s"  # SETITEM args.bomb = l9
        return pkl[:pos] + bomb + pkl[pos:]
    edit_pickle(ctx.path(PKL_FILE), fn)
    return [PKL_FILE]


def _global_case(name, module, attr, stack=False):
    @case(name, "torch", PKL + rf"refusing global {re.escape(module)}\.{re.escape(attr)}\b")
    def _(ctx):
        marker = os.path.join(os.path.dirname(ctx.it), "PWNED")
        call = (stack_global_call if stack else global_call)(module, attr, f"touch {marker}")
        edit_pickle(ctx.path(PKL_FILE), lambda pkl: after_proto(pkl, call))
        return [PKL_FILE]


_global_case("pickle_global_os_system", "os", "system")
_global_case("pickle_global_builtins_eval", "builtins", "eval")
_global_case("pickle_global_subprocess_popen", "subprocess", "Popen")
_global_case("pickle_stack_global_posix_system", "posix", "system", stack=True)


@case("pickle_storage_record_missing", "torch", r"storage record 'data/0' is missing")
def _(ctx):
    rewrite_zip(ctx.path(PKL_FILE), drop=("data/0",))
    return [PKL_FILE]


@case("pickle_tensor_offset_past_storage", "torch",
      r"model_optim_rng\.pt: tensor '[^']+\.weight': elements run past the end of storage '\d+'")
def _(ctx):
    def fn(pkl):
        ops = opcodes(pkl)
        # The first tensor of the state dict: its BINPERSID is followed by the storage offset (elements).
        i = next(i for i, (n, _, _) in enumerate(ops) if n == "BINPERSID") + 1
        assert ops[i][0].startswith("BININT") and ops[i][1] == 0, ops[i]
        return pkl[:ops[i][2]] + b"J" + struct.pack("<i", 1 << 20) + pkl[ops[i + 1][2]:]
    edit_pickle(ctx.path(PKL_FILE), fn)
    return [PKL_FILE]


@case("pickle_long1_100_bytes", "torch", PKL + r"LONG1 of 100 bytes is too large")
def _(ctx):
    edit_pickle(ctx.path(PKL_FILE), lambda pkl: after_proto(pkl, b"\x8a\x64" + b"\x01" * 100 + b"0"))
    return [PKL_FILE]


@case("pickle_no_stop", "torch", PKL + r"input ended before STOP")
def _(ctx):
    def fn(pkl):
        name, _, pos = opcodes(pkl)[-1]
        assert name == "STOP" and pos == len(pkl) - 1
        return pkl[:pos]
    edit_pickle(ctx.path(PKL_FILE), fn)
    return [PKL_FILE]


@case("pickle_truncated_in_string", "torch", PKL + r"truncated ")
def _(ctx):
    def fn(pkl):
        longest = max((p for n, a, p in opcodes(pkl) if n == "BINUNICODE"),
                      key=lambda p: struct.unpack_from("<I", pkl, p + 1)[0])
        return pkl[:longest + 5 + struct.unpack_from("<I", pkl, longest + 1)[0] // 2]
    edit_pickle(ctx.path(PKL_FILE), fn)
    return [PKL_FILE]


@case("pickle_protocol_6", "torch", PKL + r"unsupported protocol 6")
def _(ctx):
    edit_pickle(ctx.path(PKL_FILE), lambda pkl: b"\x80\x06" + pkl[2:])
    return [PKL_FILE]


@case("pickle_stack_underflow", "torch", PKL + r"stack underflow")
def _(ctx):
    edit_pickle(ctx.path(PKL_FILE), lambda pkl: after_proto(pkl, b"0"))
    return [PKL_FILE]


# ---- legacy checkpoint level ------------------------------------------------------------------------------------

@case("rank_file_missing", "torch", r"mp_rank_01_001/model_optim_rng\.pt: missing rank file")
def _(ctx):
    os.remove(ctx.path(rank_file(1, 1)))
    return [rank_file(1, 1)]


@case("rank_folder_missing", "torch", r"mp_rank_00_001/model_optim_rng\.pt: missing rank file \(TP 2 x PP 2")
def _(ctx):
    shutil.rmtree(ctx.path("mp_rank_00_001"))
    return [rank_file(0, 1)]


@case("rank_file_outside_grid", "torch", r"mp_rank_02_000/model_optim_rng\.pt: rank \(tp 2, pp 0\) is outside the TP 2 x PP 2 grid")
def _(ctx):
    shutil.copytree(ctx.path("mp_rank_01_000"), ctx.path("mp_rank_02_000"))
    return [rank_file(2, 0)]


@case("rank_file_duplicate_dp_alias", "torch",
      r"mp_rank_00_000_dp_000/model_optim_rng\.pt: duplicate rank file: tp 0, pp 0 is also .*/mp_rank_00_000/model_optim_rng\.pt")
def _(ctx):
    shutil.copytree(ctx.path("mp_rank_00_000"), ctx.path("mp_rank_00_000_dp_000"))
    return ["mp_rank_00_000_dp_000/model_optim_rng.pt"]


@case("args_hidden_size_disagree", "torch", r"mp_rank_01_001/model_optim_rng\.pt: args\.hidden_size is 128 but 64")
def _(ctx):
    edit_state(ctx.path(rank_file(1, 1)), lambda sd: setattr(sd["args"], "hidden_size", 128))
    return [rank_file(1, 1)]


@case("args_num_layers_disagree", "torch", r"mp_rank_00_001/model_optim_rng\.pt: args\.num_layers is 6 but 4")
def _(ctx):
    edit_state(ctx.path(rank_file(0, 1)), lambda sd: setattr(sd["args"], "num_layers", 6))
    return [rank_file(0, 1)]


@case("tensor_shape_disagree", "torch", r"mp_rank_01_000/model_optim_rng\.pt.*linear_fc2\.weight.*shape")
def _(ctx):
    key = "decoder.layers.1.mlp.linear_fc2.weight"
    edit_state(ctx.path(rank_file(1, 0)), lambda sd: sd["model"].__setitem__(key, sd["model"][key][1:].clone()))
    return [rank_file(1, 0)]


@case("tensor_dtype_disagree", "torch", r"mp_rank_00_001/model_optim_rng\.pt.*linear_qkv\.weight.*(dtype|float32)")
def _(ctx):
    key = "decoder.layers.0.self_attention.linear_qkv.weight"
    edit_state(ctx.path(rank_file(0, 1)), lambda sd: sd["model"].__setitem__(key, sd["model"][key].float()))
    return [rank_file(0, 1)]


@case("model_key_unknown", "torch", r"mp_rank_01_001/model_optim_rng\.pt.*linear_fc3\.bias.*unknown Megatron tensor")
def _(ctx):
    edit_state(ctx.path(rank_file(1, 1)), lambda sd: rename_key(
        sd["model"], "decoder.layers.1.mlp.linear_fc2.bias", "decoder.layers.1.mlp.linear_fc3.bias"))
    return [rank_file(1, 1)]


@case("tied_embedding_missing_in_stage_0", "torch", r"mp_rank_01_000/model_optim_rng\.pt.*word_embeddings.*missing|missing.*word_embeddings.*mp_rank_01_000")
def _(ctx):
    edit_state(ctx.path(rank_file(1, 0)), lambda sd: sd["model"].pop(EMB))
    return [rank_file(1, 0)]


@case("model_value_not_a_tensor", "torch", r"mp_rank_00_000/model_optim_rng\.pt: decoder\.layers\.0\.mlp\.linear_fc1\.bias: expected a tensor, found")
def _(ctx):
    edit_state(ctx.path(rank_file(0, 0)),
               lambda sd: sd["model"].__setitem__("decoder.layers.0.mlp.linear_fc1.bias", "not a tensor"))
    return [rank_file(0, 0)]


@case("rank_file_is_a_directory", "torch", r"mp_rank_00_001/model_optim_rng\.pt: ")
def _(ctx):
    os.remove(ctx.path(rank_file(0, 1)))
    os.mkdir(ctx.path(rank_file(0, 1)))
    return [rank_file(0, 1)]


def symlink_loop(path):
    """Replaces a file by a symbolic link to itself (ELOOP on every access)."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)
    os.symlink(os.path.basename(path), path)


@case("rank_file_symlink_loop", "torch", r"mp_rank_01_000/model_optim_rng\.pt: .*(symbolic links|cannot access)")
def _(ctx):
    symlink_loop(ctx.path(rank_file(1, 0)))
    return [rank_file(1, 0)]


@case("rank_folder_symlink_loop", "torch", r"mp_rank_00_001: .*(symbolic links|cannot access)")
def _(ctx):
    symlink_loop(ctx.path("mp_rank_00_001"))
    return ["mp_rank_00_001"]


@case("tracker_file_symlink_loop", "torch", r"latest_checkpointed_iteration\.txt: .*(symbolic links|cannot access)")
def _(ctx):
    symlink_loop(os.path.join(os.path.dirname(ctx.it), "latest_checkpointed_iteration.txt"))
    return ["latest_checkpointed_iteration.txt"]


@case("rank_file_without_args", "torch", r"mp_rank_01_001/model_optim_rng\.pt: no `args` entry")
def _(ctx):
    edit_state(ctx.path(rank_file(1, 1)), lambda sd: sd.pop("args"))
    return [rank_file(1, 1)]


@case("tracker_file_garbage", "torch", r"latest_checkpointed_iteration\.txt: ")
def _(ctx):
    write(os.path.join(os.path.dirname(ctx.it), "latest_checkpointed_iteration.txt"), b"\x00\xffnot a number\n")
    return ["latest_checkpointed_iteration.txt"]


# ---- torch_dist ---------------------------------------------------------------------------------------------------

META = ".metadata"
MD = r"\.metadata: DCP metadata: "


@case("dist_chunks_overlap", "dist", MD + rf"'{re.escape(QKV)}': the chunks at offsets .* overlap")
def _(ctx):
    md = load_metadata(ctx.it)
    move_chunk(md, QKV, 1, 1, -1)  # rows 95..190 of layer 0 overlap rows 0..95
    dump_metadata(ctx.it, md)
    return [META]


@case("dist_chunk_gap", "dist", MD + rf"'{re.escape(QKV)}': the chunks cover \d+ of the \d+ elements .*\(a hole\)")
def _(ctx):
    md = load_metadata(ctx.it)
    chunk = md.state_dict_metadata[QKV].chunks.pop(1)
    drop_storage(md, QKV, chunk.offsets)
    dump_metadata(ctx.it, md)
    return [META]


@case("dist_chunk_outside_tensor", "dist", MD + rf"'{re.escape(QKV)}'\.chunks\[\d+\]: the chunk at offsets .* lies outside the tensor size")
def _(ctx):
    md = load_metadata(ctx.it)
    move_chunk(md, QKV, len(md.state_dict_metadata[QKV].chunks) - 1, 1, +1)
    dump_metadata(ctx.it, md)
    return [META]


@case("dist_chunk_without_storage_entry", "dist", MD + rf"'{re.escape(EMB)}': no storage_data entry for the chunk at offsets \[128, 0\]")
def _(ctx):
    md = load_metadata(ctx.it)
    drop_storage(md, EMB, (128, 0))
    dump_metadata(ctx.it, md)
    return [META]


@case("dist_duplicate_storage_key", "dist", MD + rf"storage_data\['{re.escape(EMB)}'\]: two entries for offsets \[0, 0\]")
def _(ctx):
    D = mf.dcp_classes()
    md = load_metadata(ctx.it)
    key, info = storage_entry(md, EMB, (0, 0))
    extra = (D.MetadataIndex(EMB, (0, 0), 7), D.StorageInfo(info.relative_path, info.offset, info.length))
    with open(ctx.path(META), "wb") as f:
        DuplicatingPickler(f, md.storage_data, extra, protocol=4).dump(md)
    return [META]


def _storage_case(name, expect, edit, data_file_too=False):
    """Edits the _StorageInfo of the first embedding chunk. The error may name its data file instead of .metadata
    where the damage is only visible there (a slice past the end, a transform applied to the item)."""
    @case(name, "dist", expect)
    def _(ctx):
        md = load_metadata(ctx.it)
        _, info = storage_entry(md, EMB, (0, 0))
        data_file = info.relative_path
        edit(ctx, info)
        dump_metadata(ctx.it, md)
        return [META] + ([data_file] if data_file_too else [])


_storage_case("dist_relative_path_parent", MD + r".*relative_path '\.\./__\d+_\d+\.distcp' is not a plain relative file name",
              lambda ctx, info: setattr(info, "relative_path", "../" + info.relative_path))
_storage_case("dist_relative_path_absolute", MD + r".*relative_path '/[^']*/__\d+_\d+\.distcp' is not a plain relative file name",
              lambda ctx, info: setattr(info, "relative_path", ctx.path(info.relative_path)))
_storage_case("dist_transform_rot13", rf"{re.escape(EMB)}: unsupported stream transform 'stream\.rot13/1'",
              lambda ctx, info: setattr(info, "transform_descriptors", ["stream.rot13/1"]),
              data_file_too=True)
_storage_case("dist_transform_malformed", MD + r".*transform descriptor 'zstd' is not of the form name\[@domain\]/version",
              lambda ctx, info: setattr(info, "transform_descriptors", ["zstd"]))
_storage_case("dist_item_offset_past_end", r"__\d+_\d+\.distcp: region of \d+ bytes at offset \d+ does not fit in the file",
              lambda ctx, info: setattr(info, "offset", os.path.getsize(ctx.path(info.relative_path)) - 10),
              data_file_too=True)
_storage_case("dist_item_length_past_end", r"__\d+_\d+\.distcp: region of \d+ bytes at offset \d+ does not fit in the file",
              lambda ctx, info: setattr(info, "length", 2 * os.path.getsize(ctx.path(info.relative_path))),
              data_file_too=True)
_storage_case("dist_item_offset_huge", r"__\d+_\d+\.distcp: region of \d+ bytes at offset 9223372036854775800 does not fit",
              lambda ctx, info: setattr(info, "offset", (1 << 63) - 8),
              data_file_too=True)


@case("dist_chunk_dtype_differs", "dist", rf"__\d+_\d+\.distcp: {re.escape(QKV)}: chunk dtype float32 but \.metadata says bfloat16")
def _(ctx):
    # The embedded archive of one chunk is saved again as fp32 and appended to its data file.
    md = load_metadata(ctx.it)
    chunk = md.state_dict_metadata[QKV].chunks[2]
    _, info = storage_entry(md, QKV, chunk.offsets)
    path = ctx.path(info.relative_path)
    blob = read(path)[info.offset:info.offset + info.length]
    tensor = torch.load(io.BytesIO(blob))
    assert tensor.dtype == torch.bfloat16
    buf = io.BytesIO()
    torch.save(tensor.float(), buf)
    info.offset, info.length = os.path.getsize(path), len(buf.getvalue())
    with open(path, "ab") as f:
        f.write(buf.getvalue())
    dump_metadata(ctx.it, md)
    return [info.relative_path]


@case("dist_item_not_a_zip", "dist", r"__\d+_\d+\.distcp \[bytes \d+\.\.\d+\): zip: not a zip archive")
def _(ctx):
    md = load_metadata(ctx.it)
    _, info = storage_entry(md, EMB, (0, 0))
    info.length -= 1  # the slice now ends one byte before its archive's end-of-central-directory record does
    dump_metadata(ctx.it, md)
    return [META, info.relative_path]


@case("dist_metadata_from_other_checkpoint", "dist", r"(\.distcp|\.metadata).*(zip: |chunk holds|does not fit|hidden_size|shape|elements)")
def _(ctx):
    shutil.copyfile(os.path.join(ctx.other_it, META), ctx.path(META))
    return [META, ".distcp"]


@case("dist_metadata_truncated", "dist", MD + r"|\.metadata: pickle: ")
def _(ctx):
    path = ctx.path(META)
    truncate(path, os.path.getsize(path) // 2)
    return [META]


@case("dist_metadata_empty", "dist", MD + r"the file is empty")
def _(ctx):
    truncate(ctx.path(META), 0)
    return [META]


@case("dist_metadata_global_eval", "dist", r"\.metadata: pickle: refusing global builtins\.eval")
def _(ctx):
    path = ctx.path(META)
    marker = os.path.join(os.path.dirname(ctx.it), "PWNED")
    md = read(path)
    assert md[:2] == b"\x80\x04"
    write(path, after_proto(md, stack_global_call("builtins", "eval", f"__import__('os').system('touch {marker}')")))
    return [META]


@case("dist_metadata_is_a_directory", "dist", r"\.metadata: ")
def _(ctx):
    os.remove(ctx.path(META))
    os.mkdir(ctx.path(META))
    return [META]


@case("dist_unknown_fqn", "dist", r"decoder\.layers\.mlp\.linear_fc3\.bias.*unknown Megatron tensor")
def _(ctx):
    D = mf.dcp_classes()
    old, new = "decoder.layers.mlp.linear_fc2.bias", "decoder.layers.mlp.linear_fc3.bias"
    md = load_metadata(ctx.it)
    md.state_dict_metadata = {(new if k == old else k): v for k, v in md.state_dict_metadata.items()}
    md.storage_data = {(D.MetadataIndex(new, k.offset, k.index) if k.fqn == old else k): v
                       for k, v in md.storage_data.items()}
    dump_metadata(ctx.it, md)
    return [META, ".distcp"]


@case("dist_model_tensor_missing", "dist", r"\.metadata.*decoder\.final_layernorm\.weight.*missing|decoder\.final_layernorm\.weight.*missing.*\.metadata")
def _(ctx):
    md = load_metadata(ctx.it)
    fqn = "decoder.final_layernorm.weight"
    del md.state_dict_metadata[fqn]
    md.storage_data = {k: v for k, v in md.storage_data.items() if k.fqn != fqn}
    dump_metadata(ctx.it, md)
    return [META]


@case("dist_common_args_disagree_with_chunks", "dist", r"(common\.pt|\.distcp|\.metadata).*hidden|shape")
def _(ctx):
    edit_state(ctx.path("common.pt"), lambda common: setattr(common["args"], "ffn_hidden_size", 192))
    return ["common.pt", ".distcp", META]


@case("dist_metadata_json_symlink_loop", "dist", r"metadata\.json: .*(symbolic links|cannot access)")
def _(ctx):
    symlink_loop(ctx.path("metadata.json"))
    return ["metadata.json"]


@case("dist_common_pt_symlink_loop", "dist", r"common\.pt: .*(symbolic links|cannot access)")
def _(ctx):
    symlink_loop(ctx.path("common.pt"))
    return ["common.pt"]


@case("dist_metadata_symlink_loop", "dist", r"\.metadata: .*(symbolic links|cannot access)")
def _(ctx):
    symlink_loop(ctx.path(META))
    return [META]


@case("dist_data_file_symlink_loop", "dist", r"__1_1\.distcp: .*(symbolic links|cannot access|missing data file)")
def _(ctx):
    symlink_loop(ctx.path("__1_1.distcp"))
    return ["__1_1.distcp"]


@case("dist_metadata_json_missing", "dist", r"iter_0000100: save in progress: Megatron has not written metadata\.json yet")
def _(ctx):
    os.remove(ctx.path("metadata.json"))
    return ["metadata.json"]


@case("dist_data_file_missing", "dist", r"__2_1\.distcp: missing data file")
def _(ctx):
    os.remove(ctx.path("__2_1.distcp"))
    return ["__2_1.distcp"]


@case("dist_data_file_truncated", "dist", r"__1_0\.distcp.*(does not fit|zip: )")
def _(ctx):
    path = ctx.path("__1_0.distcp")
    truncate(path, os.path.getsize(path) // 3)
    return ["__1_0.distcp"]


@case("dist_common_pt_missing", "dist", r"no common\.pt and no common_state item")
def _(ctx):
    os.remove(ctx.path("common.pt"))
    return ["common.pt", ITER]


@case("dist_common_pt_truncated", "dist", r"common\.pt: zip: not a zip archive")
def _(ctx):
    path = ctx.path("common.pt")
    truncate(path, os.path.getsize(path) - 7)
    return ["common.pt"]


# ---------------------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------------------

def make_base(workdir):
    """Writes the base fixture and the other checkpoint whose .metadata one case plants (about a second)."""
    base, other = os.path.join(workdir, "base"), os.path.join(workdir, "other")
    for out, kw in ((base, FIXTURE), (other, OTHER_FIXTURE)):
        shutil.rmtree(out, ignore_errors=True)
        mf.write_fixture(mf.FixtureSpec(**kw), out)
    return base, other


def selected(only=None):
    cases = [c for c in CASES if not only or re.search(only, c.name)]
    for i, c in enumerate(CASES):
        if not c.ranks:
            c.ranks = 2 + i % 2
    return cases


def make_case(c, base, other, casedir):
    """Copies the checkpoint the case needs into casedir and damages it. Returns (checkpoint root, names)."""
    shutil.rmtree(casedir, ignore_errors=True)
    os.makedirs(casedir)
    src = "checkpoint" if c.source == "torch" else "checkpoint_dist"
    root = os.path.join(casedir, src)
    shutil.copytree(os.path.join(base, src), root)
    names = c.damage(Ctx(os.path.join(root, ITER), os.path.join(other, "checkpoint_dist", ITER)))
    return root, names


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", help="regex over case names")
    a = ap.parse_args()
    base, other = make_base(a.out)
    manifest = []
    for c in selected(a.only):
        root, names = make_case(c, base, other, os.path.join(a.out, "cases", c.name))
        manifest.append(dict(name=c.name, checkpoint=root, ranks=c.ranks, expect=c.expect, names=names))
    with open(os.path.join(a.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"wrote {len(manifest)} damaged checkpoints under {a.out}/cases (manifest.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
