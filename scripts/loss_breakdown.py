"""Where a trained model's pretraining loss lives in the default world: per document type and part.

    python scripts/loss_breakdown.py runs/sanity-after/runs/D2e06-d64-E1-k1-s0 [more run dirs…] [--docs 400]

For a sample of the world's pretraining documents (the run's own world config and tokenizer), the
summed next-token loss of each part, in nats per document and as a share of the corpus's loss:
biographies, knowledge QA (question / answer), addition problems (question, i.e. the random
operands / worked answer). What a part costs per token tells what more capacity could still win:
the operands of a problem are drawn at random, so their loss can fall only by memorising the
3,000 training problems, while a worked answer is a procedure of the question.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import torch

from moelab.config import load_run_config
from moelab.data.tokenizer import bos_eos_ids
from moelab.data.world import build_world
from moelab.modelio import load_model


def parts(doc: str) -> tuple[str, list[tuple[str, str]]]:
    """The document's type and its text cut into named parts (in order)."""
    if doc.startswith("Question: What is "):
        q, a = doc.split("\nAnswer: ", 1)
        return "addition", [("question", q + "\nAnswer: "), ("answer", a)]
    if doc.startswith("Question: "):
        q, a = doc.split("\nAnswer: ", 1)
        return "knowledge QA", [("question", q + "\nAnswer: "), ("answer", a)]
    if doc.startswith("The ") and " of " in doc and " is " in doc and "." not in doc:  # the implicit family
        head, tail = doc.rsplit(" is ", 1)
        return "implicit fact", [("prompt", head + " is"), ("answer", " " + tail)]
    return "biography", [("text", doc)]


@torch.no_grad()
def breakdown(run_dir: Path, num_docs: int, seed: int = 0) -> dict[tuple[str, str], list[float]]:
    model, tok, _ = load_model(run_dir)
    model.eval()
    docs = build_world(load_run_config(run_dir / "config.yaml").data.world).documents()
    bos, eos = bos_eos_ids(tok)
    out: dict[tuple[str, str], list[float]] = {}
    for doc in random.Random(seed).sample(docs, min(num_docs, len(docs))):
        kind, pieces = parts(doc)
        # Tokenize the whole document as training did; each token belongs to the part its first
        # character is in (cutting the text first would change the BPE merges at the cut).
        enc = tok(doc, add_special_tokens=False, return_offsets_mapping=True)
        ends, at = [], 0
        for name, text in pieces:
            at += len(text)
            ends.append((at, name))
        ids = [bos, *enc["input_ids"], eos]
        owner = [None] + [next(n for end, n in ends if start < end) for start, _ in enc["offset_mapping"]]
        owner.append(pieces[-1][0])  # EOS belongs to the last part
        ids_T = torch.tensor(ids)[None]
        logp_TV = torch.log_softmax(model(ids_T[:, :-1]).logits.float()[0], -1)
        nll_T = -logp_TV.gather(-1, ids_T[0, 1:, None])[:, 0]
        for name in {n for n, _ in pieces}:
            mask = torch.tensor([o == name for o in owner[1:]])
            rec = out.setdefault((kind, name), [0.0, 0, 0])
            rec[0] += float(nll_T[mask].sum())
            rec[1] += int(mask.sum())
            rec[2] += 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--docs", type=int, default=400)
    args = ap.parse_args()
    torch.set_num_threads(1)
    for run in args.runs:
        rows = breakdown(run, args.docs)
        total = sum(r[0] for r in rows.values())
        tokens = sum(r[1] for r in rows.values())
        print(f"{run.name}: {total / tokens:.4f} nats/token over {tokens:,} tokens of {args.docs} documents")
        for (kind, name), (nll, n, docs) in sorted(rows.items()):
            print(f"  {kind:13s} {name:9s} {nll / n:.3f} nats/token  {n / docs:5.1f} tokens/doc  "
                  f"{100 * nll / total:5.1f} % of the loss")


if __name__ == "__main__":
    main()
