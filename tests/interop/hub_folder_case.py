#!/usr/bin/python3
"""A converted folder is ready to publish: real transformers (the interop base environment) builds a tokenizer,
the fixture's args name it, and the output must carry it, with config.json and generation_config.json holding its
special-token ids (GenerationConfig.from_pretrained, AutoTokenizer, AutoModelForCausalLM), and a model card
whose front matter huggingface_hub and YAML read, whose numbers come from the checkpoint's args (read with torch,
not by the engine), and which matches the committed golden card. Also: the tokenizer found in a Hugging Face cache
by its Hub id, --assets winning over the args' tokenizer, a tokenizer that cannot be found (a warning),
--no-model-card, and --model-card with --model-card-field.

    hub_folder_case.py --engine build/bin/megatron2hf --workdir DIR [--interop-dir build/interop] [--update-golden]
"""
import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
SRC = HERE.parent.parent
DEBIAN_PY = "/usr/bin/python3"
GOLDEN = HERE / "golden_model_card.md"
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
MODEL = ["--arch", "llama", "--layers", "2", "--hidden", "64", "--heads", "4", "--kv-heads", "2", "--ffn", "128",
         "--padded-vocab", "256", "--tp", "2", "--dtype", "bf16"]
failures = []

# Runs in the interop base environment: a WordLevel tokenizer whose special tokens sit at ids no family default
# has, saved the way transformers saves one.
MAKE_TOKENIZER = r"""
import sys
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast
out, first = sys.argv[1], int(sys.argv[2])
vocab = {f"w{i}": i for i in range(240)}
vocab.update({"<unk>": 240, "<|begin|>": first, "<|end|>": first + 1, "<|pad|>": first + 2})
tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
tok.pre_tokenizer = pre_tokenizers.Whitespace()
PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin|>", eos_token="<|end|>", pad_token="<|pad|>",
                        unk_token="<unk>").save_pretrained(out)
"""

# Runs in the interop base environment: what transformers and huggingface_hub make of the folder.
INSPECT = r"""
import json, sys, warnings
import yaml
from huggingface_hub import ModelCard
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig
out = sys.argv[1]
g = GenerationConfig.from_pretrained(out)
c = AutoConfig.from_pretrained(out)
t = AutoTokenizer.from_pretrained(out)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    AutoModelForCausalLM.from_pretrained(out)
text = open(out + "/README.md").read()
front = yaml.safe_load(text.split("---\n")[1])
card = ModelCard.load(out + "/README.md")
print(json.dumps({
    "generation": {k: getattr(g, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")},
    "config": {k: getattr(c, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")},
    "tokenizer": {"bos": t.bos_token_id, "eos": t.eos_token_id, "pad": t.pad_token_id,
                  "encoded": t("w1 w7 w239")["input_ids"]},
    "front_matter": front, "hub_metadata": card.data.to_dict(),
    "load_warnings": [str(w.message) for w in caught if "generation" in str(w.message).lower()],
}))
"""

# Runs with Debian's torch: the numbers the card should show, from the checkpoint's own args.
READ_ARGS = r"""
import glob, json, sys, torch
f = sorted(glob.glob(sys.argv[1] + "/mp_rank_*/model_optim_rng.pt"))[0]
a = vars(torch.load(f, map_location="cpu", weights_only=False)["args"])
print(json.dumps({k: a.get(k) for k in ("consumed_train_samples", "seq_length", "global_batch_size", "train_iters",
                                        "lr", "min_lr", "lr_decay_style", "data_path")}))
"""


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)


def engine(a, *args):
    p = subprocess.run(["mpirun", "-np", "2", "--oversubscribe", a.engine, *args], env=ENV, capture_output=True,
                       text=True, timeout=300)
    check(p.returncode == 0, f"engine {' '.join(args[-3:])}: exit {p.returncode}\n{p.stderr[-1500:]}")
    return p


def inspect(py, out):
    p = subprocess.run([py, "-c", INSPECT, str(out)], capture_output=True, text=True, timeout=300)
    if p.returncode:
        failures.append(f"{out}: transformers could not read it\n{p.stderr[-2000:]}")
        return None
    return json.loads(p.stdout.strip().splitlines()[-1])


def fixture(work, name, tokenizer_model):
    d = work / name
    subprocess.run([DEBIAN_PY, str(SRC / "tests/fixtures/megatron_fixture.py"), "--out", str(d), *MODEL,
                    "--tokenizer-model", tokenizer_model], check=True, stdout=subprocess.DEVNULL)
    return d / "checkpoint"


def normalised(card, work):
    """The card with this run's work folder (the checkpoint's and the tokenizer's paths) as WORK."""
    return card.replace(str(work), "WORK")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", required=True)
    ap.add_argument("--workdir", required=True, type=pathlib.Path)
    ap.add_argument("--interop-dir", type=pathlib.Path, default=SRC / "build" / "interop")
    ap.add_argument("--update-golden", action="store_true", help="rewrite the golden card from this run")
    a = ap.parse_args()
    py = a.interop_dir / "base" / "bin" / "python"
    if not py.exists():
        raise SystemExit(f"hub_folder_case: {py} is missing: run ci/interop-env.sh first")
    work = a.workdir.resolve() / "hub_folder_case"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    tok, other_tok = work / "tokenizer", work / "assets"
    subprocess.run([str(py), "-c", MAKE_TOKENIZER, str(tok), "250"], check=True)
    subprocess.run([str(py), "-c", MAKE_TOKENIZER, str(other_tok), "245"], check=True)

    # The args name a local tokenizer folder.
    root = fixture(work, "local", str(tok))
    out = work / "out" / "llama-tiny"
    engine(a, "--input", str(root), "--output", str(out))
    got = inspect(py, out)
    args = json.loads(subprocess.run([DEBIAN_PY, "-c", READ_ARGS, str(root / "iter_0000100")], capture_output=True,
                                     text=True, check=True).stdout)
    if got:
        ids = {"bos_token_id": 250, "eos_token_id": 251, "pad_token_id": 252}
        check(got["generation"] == ids, f"generation_config.json has the tokenizer's ids: {got['generation']}")
        check(got["config"] == ids, f"config.json has the tokenizer's ids: {got['config']}")
        check(got["tokenizer"]["encoded"] == [1, 7, 239] and got["tokenizer"]["bos"] == 250,
              f"the output's tokenizer is the run's: {got['tokenizer']}")
        check(not got["load_warnings"], f"loading raises no generation-config warning: {got['load_warnings']}")
        front, meta = got["front_matter"], got["hub_metadata"]
        check(front.get("library_name") == "transformers" and front.get("pipeline_tag") == "text-generation"
              and "llama" in front.get("tags", []) and "base_model" not in front,
              f"front matter: {front}")
        check(meta.get("library_name") == "transformers", f"huggingface_hub reads the card's metadata: {meta}")
    card = (out / "README.md").read_text()
    samples = args["consumed_train_samples"]
    tokens = samples * args["seq_length"]
    check(f"| tokens seen | {tokens:,} (" in card and f"| samples seen | {samples:,} (" in card,
          f"the card's tokens and samples are consumed_train_samples ({samples}) x seq_length from the args")
    check(f"| iteration | 100 of {args['train_iters']} iterations |" in card, "the card gives the iteration of train_iters")
    check(f"{args['lr_decay_style']} decay from {args['lr']} to {args['min_lr']}" in card, "the card's learning rate")
    check(f"`{args['data_path'][1]}` (weight {args['data_path'][0]})" in card, "the card's data paths")
    if a.update_golden:
        GOLDEN.write_text(normalised(card, work))
    check(normalised(card, work) == GOLDEN.read_text(), f"README.md matches {GOLDEN.relative_to(SRC)} (paths replaced)")

    # A Hub id found in a Hugging Face cache (HF_HOME): the snapshot refs/main names.
    cache = work / "hf_home" / "hub" / "models--org--tiny"
    snapshot = cache / "snapshots" / "0123abcd"
    shutil.copytree(tok, snapshot)
    (cache / "refs").mkdir()
    (cache / "refs" / "main").write_text("0123abcd")
    root = fixture(work, "cached", "org/tiny")
    out = work / "out" / "cached"
    p = subprocess.run(["mpirun", "-np", "2", "--oversubscribe", "-x", f"HF_HOME={work / 'hf_home'}", a.engine,
                        "--input", str(root), "--output", str(out)], env=ENV, capture_output=True, text=True, timeout=300)
    check(p.returncode == 0 and (out / "tokenizer.json").read_bytes() == (tok / "tokenizer.json").read_bytes(),
          "the tokenizer named by a Hub id comes from the HF_HOME cache")

    # --assets wins over the args' tokenizer; its ids go into config.json.
    out = work / "out" / "assets"
    engine(a, "--input", str(work / "local" / "checkpoint"), "--output", str(out), "--assets", str(other_tok))
    got = inspect(py, out)
    if got:
        check(got["config"]["bos_token_id"] == 245 and got["tokenizer"]["bos"] == 245,
              f"--assets' tokenizer wins: {got['config']}")

    # A tokenizer that cannot be found: a warning naming where it was looked for, the conversion goes on.
    root = fixture(work, "missing", str(work / "no-such-tokenizer"))
    out = work / "out" / "missing"
    p = engine(a, "--input", str(root), "--output", str(out))
    check("[warning] tokenizer" in p.stderr and str(work / "no-such-tokenizer") in p.stderr
          and not (out / "tokenizer.json").exists(), "a missing tokenizer is a warning naming the path")

    # --no-model-card; --model-card TEMPLATE with --model-card-field.
    out = work / "out" / "no-card"
    engine(a, "--input", str(work / "local" / "checkpoint"), "--output", str(out), "--no-model-card")
    check(not (out / "README.md").exists() and (out / "generation_config.json").exists(), "--no-model-card")
    template = work / "card.md"
    template.write_text("---\nbase_model: {{base_model|yaml}}\nlicense: {{license}}\n---\n# {{model_name}} at {{iteration}}\n"
                        "{{#nothing}}\nhidden\n{{/nothing}}\n")
    out = work / "out" / "custom"
    engine(a, "--input", str(work / "local" / "checkpoint"), "--output", str(out), "--model-card", str(template),
           "--model-card-field", "base_model=org/base: v1", "--model-card-field", "license=apache-2.0")
    got = inspect(py, out)
    if got:
        check(got["front_matter"] == {"base_model": "org/base: v1", "license": "apache-2.0"},
              f"--model-card renders the template: {got['front_matter']}")
    check((out / "README.md").read_text().endswith("# custom at 100\n"), "--model-card's body")

    print("\n".join(f"FAIL: {f}" for f in failures) or "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
