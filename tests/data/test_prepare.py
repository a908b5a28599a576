"""`moelab data prepare`: streamed, resumable after SIGKILL, Megatron-readable; bad input is one line, exit 2."""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from moelab.data.indexed import IndexedDataset
from moelab.data.prepare import MANIFEST, is_val
from moelab.data.tokenizer import bos_eos_ids, load_tokenizer, save_tokenizer, train_tokenizer

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}


def _docs(n, seed=0):
    rng = np.random.default_rng(seed)
    words = ["alpha", "beta", "gamma", "delta", "the", "fox", "runs", "12", "7", "über"]
    return [f"doc {i}: " + " ".join(rng.choice(words, size=int(rng.integers(3, 40)))) for i in range(n)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    docs = _docs(4000)
    with open(root / "c.jsonl", "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"text": d}) + "\n")
    save_tokenizer(train_tokenizer(docs[:300], 320), root / "tok")
    save_tokenizer(train_tokenizer(docs[300:600], 330), root / "other-tok")
    return root, docs


def _cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "moelab", *map(str, args)], env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def _shard_docs(out, split):
    manifest = json.loads((out / MANIFEST).read_text())
    docs = []
    for src in manifest["sources"].values():
        for shard in src["shards"]:
            if shard.get(split):
                ds = IndexedDataset(out / shard[split])
                docs += [ds[i].tolist() for i in range(len(ds))]
    return docs


def test_prepare_writes_the_documents_as_bos_ids_eos_split_by_identity(corpus, tmp_path):
    root, docs = corpus
    out = tmp_path / "prep"
    proc = _cli("data", "prepare", root / "c.jsonl", "--tokenizer", root / "tok", "--out", out,
                "--shard-tokens", 5000, "--quiet")
    assert proc.returncode == 0, proc.stderr
    tok = load_tokenizer(root / "tok")
    bos, eos = bos_eos_ids(tok)
    want = {"train": [], "val": []}
    for d in docs:
        want["val" if is_val(d, 0.05) else "train"].append([bos, *tok.encode(d, add_special_tokens=False), eos])
    assert _shard_docs(out, "train") == want["train"]
    assert _shard_docs(out, "val") == want["val"]
    assert 100 < len(want["val"]) < 300  # ~5 % of 4000
    manifest = json.loads((out / MANIFEST).read_text())
    (entry,) = manifest["sources"].values()
    assert entry["state"] == "done" and len(entry["shards"]) > 3 and entry["docs"] == len(docs)
    assert manifest["tokenizer"]["dtype"] == "uint16"
    words = proc.stdout.split()  # Megatron's --data-path: weight prefix weight prefix …
    assert len(words) == 2 * len(entry["shards"]) and sum(map(int, words[::2])) == entry["train_tokens"]

    # an unchanged source is not tokenized again (the shards are not rewritten)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.bin")}
    assert _cli("data", "prepare", root / "c.jsonl", "--tokenizer", root / "tok", "--out", out,
                "--quiet").returncode == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.bin")} == before


def test_megatron_reads_the_prepared_shards(corpus, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mcore = pytest.importorskip("megatron.core.datasets.indexed_dataset")
    root, _ = corpus
    out = tmp_path / "prep"
    proc = _cli("data", "prepare", root / "c.jsonl", "--tokenizer", root / "tok", "--out", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    prefix = proc.stdout.split()[1]
    theirs, ours = mcore.IndexedDataset(prefix), IndexedDataset(prefix)
    assert len(theirs) == len(ours) > 3000
    assert all(theirs[i].tolist() == ours[i].tolist() for i in range(0, len(ours), 97))


def test_sigkill_during_prepare_then_rerun_continues(corpus, tmp_path, sigkill_when):
    root, _ = corpus
    big = tmp_path / "big.jsonl"
    with open(big, "w", encoding="utf-8") as f:
        for d in _docs(60_000, seed=1):
            f.write(json.dumps({"text": d}) + "\n")
    args = ["data", "prepare", big, "--tokenizer", root / "tok", "--shard-tokens", 40_000, "--quiet"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "moelab", *map(str, args), "--out", str(killed)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def three_shards_listed() -> bool:
        try:
            return len(next(iter(json.loads((killed / MANIFEST).read_text())["sources"].values()))["shards"]) >= 3
        except (OSError, ValueError, StopIteration):
            return False

    sigkill_when(proc, three_shards_listed)
    manifest = json.loads((killed / MANIFEST).read_text())
    (entry,) = manifest["sources"].values()
    assert entry["state"] == "partial" and len(entry["shards"]) >= 3
    for shard in entry["shards"]:  # every listed shard is whole
        IndexedDataset(killed / shard["train"])
    # a run refuses the unfinished folder rather than train on part of it
    from moelab.config import DataConfig
    from moelab.data.prepared import PreparedData
    from moelab.errors import UserError

    with pytest.raises(UserError, match="not fully prepared"):
        PreparedData(DataConfig(sources=[{"kind": "prepared", "path": str(killed)}]), load_tokenizer(root / "tok"))

    assert _cli(*args, "--out", killed).returncode == 0  # continues
    entry_after = next(iter(json.loads((killed / MANIFEST).read_text())["sources"].values()))
    assert entry_after["shards"][: len(entry["shards"])] == entry["shards"]  # the listed shards were kept
    clean = tmp_path / "clean"
    assert _cli(*args, "--out", clean).returncode == 0
    assert _shard_docs(killed, "train") == _shard_docs(clean, "train")
    assert _shard_docs(killed, "val") == _shard_docs(clean, "val")
    assert not list(killed.rglob("*.tmp"))  # the killed writer's partial shard was overwritten


@pytest.mark.parametrize("case", ["missing source", "unreadable source", "garbage parquet", "not utf-8",
                                  "missing tokenizer", "other tokenizer", "bad json"])
def test_bad_input_is_one_line_exit_2_and_nothing_written(corpus, tmp_path, case):
    root, _ = corpus
    out, source, tok = tmp_path / "out", root / "c.jsonl", root / "tok"
    if case == "missing source":
        source = tmp_path / "nope.jsonl"
    elif case == "unreadable source":
        if os.geteuid() == 0:
            pytest.skip("root reads every file")
        source = tmp_path / "locked.jsonl"
        source.write_text('{"text": "a"}\n')
        source.chmod(0)
    elif case == "garbage parquet":  # unreadable for root too
        source = tmp_path / "garbage.parquet"
        source.write_bytes(np.random.default_rng(0).bytes(5000))
    elif case == "not utf-8":
        source = tmp_path / "latin.txt"
        source.write_bytes("caf\xe9 cr\xe8me\n".encode("latin-1"))
    elif case == "missing tokenizer":
        tok = tmp_path / "no-tokenizer"
    elif case == "bad json":
        source = tmp_path / "bad.jsonl"
        source.write_text('{"text": "fine"}\n' * 50 + "{not json\n")
    elif case == "other tokenizer":
        assert _cli("data", "prepare", source, "--tokenizer", root / "other-tok", "--out", out,
                    "--quiet").returncode == 0
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    proc = _cli("data", "prepare", source, "--tokenizer", tok, "--out", out, "--quiet")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("moelab: error:"), proc.stderr
    assert {"other tokenizer": "another tokenizer", "bad json": "invalid JSON", "missing tokenizer": "no-tokenizer",
            "missing source": "nope.jsonl", "unreadable source": "not readable",
            "garbage parquet": "garbage.parquet: not a Parquet file", "not utf-8": "latin.txt: not UTF-8"}[case] in lines[0]
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
