#!/usr/bin/env python3
"""--verify and `megatron2hf verify DIR`: a converted folder re-checks clean; a flipped byte, a truncated shard,
a renamed tensor or a ghost index entry is caught with an error naming the file (and the tensor)."""
import argparse
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", required=True)
    ap.add_argument("--workdir", required=True)
    a = ap.parse_args()
    work = os.path.join(a.workdir, "verify_case")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    subprocess.run(["/usr/bin/python3", os.path.join(SRC, "tests/fixtures/megatron_fixture.py"), "--out", work,
                    "--arch", "llama", "--tp", "2", "--pp", "2", "--dtype", "bf16"], check=True)
    out = os.path.join(work, "hf")
    p = subprocess.run(["mpirun", "-np", "3", "--oversubscribe", a.engine, "--input", os.path.join(work, "checkpoint"),
                        "--output", out, "--verify", "--max-shard-size", "60KB"], env=ENV, capture_output=True, text=True)
    print(p.stderr[-2000:])
    if p.returncode or "re-read and matched" not in p.stderr:
        print("FAIL: conversion with --verify")
        return 1
    manifest = json.load(open(os.path.join(out, "megatron2hf.manifest.json")))
    for key in ("engine", "source", "arguments", "files", "tensors"):
        if key not in manifest:
            print(f"FAIL: manifest lacks {key}")
            return 1
    if manifest["source"]["format"] != "torch" or manifest["arguments"]["max_shard_size"] != 60000:
        print("FAIL: manifest provenance")
        return 1

    def verify(folder):
        r = subprocess.run([a.engine, "verify", folder], env=ENV, capture_output=True, text=True, timeout=60)
        return r.returncode, (r.stdout + r.stderr).strip()

    rc, text = verify(out)
    print(text)
    if rc:
        print("FAIL: a fresh folder does not verify")
        return 1
    shards = sorted(n for n in os.listdir(out) if n.endswith(".safetensors"))
    failures = 0

    def damaged(name, damage, pattern):
        nonlocal failures
        copy = os.path.join(work, "damaged_" + name)
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(out, copy)
        damage(copy)
        rc, text = verify(copy)
        ok = rc != 0 and text.startswith("megatron2hf: error:") and pattern in text and len(text.splitlines()) == 1
        print(f"{name}: exit {rc}: {text}")
        if not ok:
            print(f"FAIL: {name} not caught as expected ({pattern!r})")
            failures += 1

    def flip(folder):
        path = os.path.join(folder, shards[1])
        with open(path, "r+b") as f:
            f.seek(-5, 2)
            b = f.read(1)
            f.seek(-5, 2)
            f.write(bytes([b[0] ^ 0x10]))

    def truncate(folder):
        path = os.path.join(folder, shards[0])
        os.truncate(path, os.path.getsize(path) - 2)

    def rename_tensor(folder):
        path = os.path.join(folder, shards[0])
        data = bytearray(open(path, "rb").read())
        i = data.index(b"model.")
        data[i] = ord("M")
        open(path, "wb").write(data)

    def ghost(folder):
        path = os.path.join(folder, "model.safetensors.index.json")
        index = json.load(open(path))
        index["weight_map"]["model.layers.99.mlp.up_proj.weight"] = shards[0]
        json.dump(index, open(path, "w"))

    damaged("flipped_byte", flip, "checksum")
    damaged("truncated_shard", truncate, shards[0])
    damaged("renamed_tensor", rename_tensor, "not in the manifest")
    damaged("ghost_index_entry", ghost, "weight_map")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
