"""
nanochat's tokenizer for temporal-ckpt: converts the tiktoken encoding nanochat saves (tokenizer.pkl) into a
JSON file the project reads (model/bpe.ts), so that the project never unpickles anything.

    python scripts/nanochat-tokenizer.py convert TOKENIZER_DIR tokenizer.json
    python scripts/nanochat-tokenizer.py fixture NANOCHAT_CHECKOUT test/fixtures/nanochat-tokenizer

`convert` unpickles TOKENIZER_DIR/tokenizer.pkl (a tiktoken Encoding; needs tiktoken): run it only on a file
you trust. The JSON holds the split pattern, the special tokens, and every mergeable token's bytes (base64)
in rank order: rank = id.

`fixture` (not run by CI; fetches nothing) trains a small tokenizer with nanochat's own code
(nanochat/tokenizer.py: rustbpe to train, tiktoken to encode) on data/tiny-corpus.txt, converts it, and
writes a test text with the ids tiktoken gives for it (and a digest of the ids of the whole corpus);
test/model/bpe.test.ts checks that the project's encoder gives the same ids and decodes them back. Needs
rustbpe and tiktoken.
"""

import argparse
import base64
import hashlib
import json
import os
import pickle
import sys

FORMAT = "tiktoken-bpe"
VOCAB_SIZE = 512  # of the fixture tokenizer, special tokens included
TEST_TEXT = (
    "The worker's checkpoint WASN'T lost: it'll resume at step 1234567, they've said.\n"
    "  Indented line\twith a tab,\r\nCRLF, trailing spaces   \n\n\n"
    "Ünïcödé: naïve café, Ελληνικά, 日本語のテキスト, emoji 🚀🔥 and 3.14159 or 42%!\n"
    "<|bos|> is not special in ordinary text; neither is <|user_start|>.\n"
    "I'M, YOU'RE, WE'LL, THEY'D; can't, won't... ---> $100 ~~ [x] {y} (z)\n"
)


def encoding_to_json(enc):
    """The JSON document for a tiktoken Encoding."""
    ranks = enc._mergeable_ranks
    by_rank = sorted(ranks.items(), key=lambda kv: kv[1])
    if [rank for _, rank in by_rank] != list(range(len(by_rank))):
        sys.exit("the mergeable ranks are not 0..N-1: this converter expects ids equal to ranks")
    return {
        "format": FORMAT,
        "version": 1,
        "name": enc.name,
        "pattern": enc._pat_str,
        "special_tokens": dict(sorted(enc._special_tokens.items(), key=lambda kv: kv[1])),
        "bos": "<|bos|>" if "<|bos|>" in enc._special_tokens else None,
        "ranks": [base64.b64encode(token).decode("ascii") for token, _ in by_rank],
    }


def write_json(doc, path):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")


def convert(args):
    with open(os.path.join(args.tokenizer_dir, "tokenizer.pkl"), "rb") as f:
        enc = pickle.load(f)
    doc = encoding_to_json(enc)
    write_json(doc, args.out)
    print(f"wrote {args.out}: {len(doc['ranks'])} tokens, {len(doc['special_tokens'])} special")


def fixture(args):
    sys.path.insert(0, os.path.abspath(args.nanochat))
    from nanochat.tokenizer import RustBPETokenizer

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "data", "tiny-corpus.txt"), encoding="utf-8") as f:
        corpus = f.read()
    chunks = [corpus[i : i + 4096] for i in range(0, len(corpus), 4096)]
    tokenizer = RustBPETokenizer.train_from_iterator(iter(chunks), VOCAB_SIZE)
    enc = tokenizer.enc
    os.makedirs(args.out, exist_ok=True)
    write_json(encoding_to_json(enc), os.path.join(args.out, "tokenizer.json"))
    ids = tokenizer.encode(TEST_TEXT)
    assert ids == enc.encode_ordinary(TEST_TEXT)
    assert tokenizer.decode(ids) == TEST_TEXT
    corpus_ids = tokenizer.encode(corpus)
    write_json(
        {
            "text": TEST_TEXT,
            "ids": ids,
            # the whole corpus too, as the count and the sha256 of the ids written as "[1,2,3]"
            "corpus_ids": len(corpus_ids),
            "corpus_ids_sha256": hashlib.sha256(json.dumps(corpus_ids, separators=(",", ":")).encode()).hexdigest(),
            "bos": tokenizer.get_bos_token_id(),
            "vocab_size": tokenizer.get_vocab_size(),
        },
        os.path.join(args.out, "expected.json"),
    )
    print(f"wrote {args.out}: vocab {tokenizer.get_vocab_size()}, {len(ids)} ids for the test text")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", help="tokenizer.pkl -> tokenizer.json")
    c.add_argument("tokenizer_dir")
    c.add_argument("out")
    c.set_defaults(run=convert)
    x = sub.add_parser("fixture", help="train a small tokenizer with nanochat's code and write the test fixture")
    x.add_argument("nanochat")
    x.add_argument("out")
    x.set_defaults(run=fixture)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
