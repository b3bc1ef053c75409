"""
Writes the nanochat parity fixture (test/fixtures/nanochat/) by running nanochat's own GPT under PyTorch on
the CPU in float32. Not run by CI: the committed fixture is what the parity tests read.

    python scripts/nanochat-parity.py NANOCHAT_CHECKOUT test/fixtures/nanochat

NANOCHAT_CHECKOUT is a checkout of nanochat (https://github.com/karpathy/nanochat) at PINNED_COMMIT; its
nanochat/gpt.py must hash to PINNED_GPT_PY_SHA256, so a fixture always says which code made it. Needs torch,
safetensors and numpy; it fetches nothing.

What it writes (the layout of a nanochat checkpoint, converted as docs/import.md shows):
- model_000000.safetensors: the model's state_dict as nanochat saves it (padded vocabulary included)
- meta_000000.json: nanochat's meta keys, with model_config as nanochat's GPTConfig has it
- reference.safetensors: the tokens [1, T] (I64) and nanochat's logits for them [1, T, vocab_size] (F32)
- reference.json: where the numbers came from (commit, torch version, seed, noise)

The model: depth 4, grouped-query attention (4 query heads, 2 key/value heads), window pattern SSSL with a
sequence longer than the short window, vocabulary 257 (the byte tokenizer's) padded to 320. nanochat's
initialisation leaves some tensors zero or one (c_proj, smear_lambda, ...), which would hide a missing term,
so every parameter gets seeded Gaussian noise on top of it.
"""

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import sys

PINNED_COMMIT = "92d63d4e8bb4df75c3b71618f31ddde2378b2bcd"
PINNED_GPT_PY_SHA256 = "8cdedc2e418b9d4dc45884e07f59904fcdec066bb3d76664b2adf2d415f704e3"

CONFIG = dict(
    sequence_len=512,
    vocab_size=257,
    n_layer=4,
    n_head=4,
    n_kv_head=2,
    n_embd=32,
    window_pattern="SSSL",
)
TOKENS = 160  # longer than the 128-token window of nanochat's S layers, shorter than half of sequence_len
SEED = 1234
NOISE = 0.05  # std of the noise added to every parameter
NOISE_LM_HEAD = 0.5  # larger on lm_head, so that logits reach the curved part of the softcap
STEP = 0


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("nanochat", help="a nanochat checkout at the pinned commit")
    parser.add_argument("out", help="output directory (e.g. test/fixtures/nanochat)")
    parser.add_argument("--print-hash", action="store_true", help="print the sha256 of nanochat/gpt.py and exit")
    parser.add_argument(
        "--any-commit",
        action="store_true",
        help="run another commit's gpt.py (to check an older architecture; reference.json records its hash)",
    )
    args = parser.parse_args()

    gpt_py = os.path.join(args.nanochat, "nanochat", "gpt.py")
    digest = sha256_file(gpt_py)
    if args.print_hash:
        print(digest)
        return
    if digest != PINNED_GPT_PY_SHA256 and not args.any_commit:
        sys.exit(f"{gpt_py} has sha256 {digest}, not the pinned {PINNED_GPT_PY_SHA256} (commit {PINNED_COMMIT})")

    # nanochat picks its compute dtype when imported: float32 on the CPU, said explicitly all the same.
    os.environ["NANOCHAT_DTYPE"] = "float32"
    sys.path.insert(0, os.path.abspath(args.nanochat))
    import torch
    from safetensors.torch import save_file
    from nanochat.gpt import GPT, GPTConfig

    torch.manual_seed(SEED)
    config = GPTConfig(**CONFIG)
    model = GPT(config)
    model.init_weights()
    generator = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            std = NOISE_LM_HEAD if name == "lm_head.weight" else NOISE
            p.add_(torch.randn(p.shape, generator=generator) * std)
    model.eval()

    tokens = torch.randint(0, config.vocab_size, (1, TOKENS), generator=generator)
    tokens[0, 0] = 256  # the byte tokenizer's BOS
    with torch.no_grad():
        logits = model(tokens)
    assert logits.shape == (1, TOKENS, config.vocab_size) and logits.dtype == torch.float32

    os.makedirs(args.out, exist_ok=True)
    state_dict = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(state_dict, os.path.join(args.out, f"model_{STEP:06d}.safetensors"))
    meta = {"step": STEP, "model_config": dataclasses.asdict(config)}
    with open(os.path.join(args.out, f"meta_{STEP:06d}.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    save_file(
        {"tokens": tokens.to(torch.int64).contiguous(), "logits": logits.contiguous()},
        os.path.join(args.out, "reference.safetensors"),
    )
    provenance = {
        "nanochat_commit": PINNED_COMMIT if digest == PINNED_GPT_PY_SHA256 else "unpinned",
        "nanochat_gpt_py_sha256": digest,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "dtype": "float32",
        "device": "cpu",
        "seed": SEED,
        "noise_std": NOISE,
        "noise_std_lm_head": NOISE_LM_HEAD,
        "tokens": TOKENS,
    }
    with open(os.path.join(args.out, "reference.json"), "w") as f:
        json.dump(provenance, f, indent=2)
        f.write("\n")
    print(f"wrote {args.out}: logits {list(logits.shape)}, max |logit| {logits.abs().max().item():.4f}")


if __name__ == "__main__":
    main()
