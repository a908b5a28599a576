"""``moelab data prepare``: the data commands of the CLI (wired in ``moelab/cli.py``'s ``build_parser``)."""

from __future__ import annotations

from moelab.cli_args import positive_int, probability


def cmd_prepare(args) -> int:
    from moelab.data.prepare import infer_source, prepare
    from moelab.ui import console

    sources = [infer_source(s, args.kind, args.text_field, args.split) for s in args.sources]
    manifest = prepare(sources, args.tokenizer, args.out, val_fraction=args.val_fraction,
                       shard_tokens=args.shard_tokens, progress=not args.quiet)
    train = sum(s.get("train_tokens", 0) for s in manifest["sources"].values())
    val = sum(s.get("val_tokens", 0) for s in manifest["sources"].values())
    docs = sum(s["docs"] for s in manifest["sources"].values())
    if not args.quiet:
        console.print(f"{args.out}: {docs:,} documents, {train:,} training and {val:,} validation tokens "
                      f"({manifest['tokenizer']['dtype']}); train with data.sources: "
                      f"[{{kind: prepared, path: {args.out}}}]")
    print(manifest["megatron_data_path"])  # Megatron's --data-path for the training shards
    return 0


def add_data_commands(subparsers) -> None:
    data = subparsers.add_parser("data", help="prepare corpora: tokenize once into Megatron indexed shards")
    sub = data.add_subparsers(dest="data_command", required=True, parser_class=subparsers._parser_class)
    s = sub.add_parser("prepare", help="tokenize text/jsonl/parquet/Hugging Face sources into --out (resumable)")
    s.add_argument("sources", nargs="+", metavar="SOURCE", help="a file, a folder of them, or a Hub dataset name")
    s.add_argument("--tokenizer", required=True, help="a Hugging Face tokenizer directory")
    s.add_argument("--out", required=True, help="prepared directory (re-running resumes it)")
    s.add_argument("--kind", choices=("text", "jsonl", "parquet", "hf"), help="default: from the suffix")
    s.add_argument("--text-field", default="text")
    s.add_argument("--split", default="train", help="hf sources: the split to read")
    s.add_argument("--val-fraction", type=probability, default=0.05)
    s.add_argument("--shard-tokens", type=positive_int, default=256 * 2**20, help="tokens per shard")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_prepare)
