"""Helpers for the Injective tests: real tokenizer layouts and tiny causal LMs built on the spot."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def digits_corpus(seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    text = [" ".join(f"{x:.3f}" for x in rng.normal(0, 100, 50)) for _ in range(200)]
    text += [" " + " , ".join(" ".join(str(abs(int(x)))) for x in rng.normal(0, 1000, 30)) + " , - 1 ,"
             for _ in range(100)]
    text += ["the quick brown fox jumps over the lazy dog, 1999 - 2024, -7"] * 20
    return text


def gpt2_like_tokenizer(path: Path) -> Path:
    """Byte-level BPE trained with `tokenizers` on digits text: merges digit runs (as GPT-2 does)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"], show_progress=False,
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(digits_corpus(), tr)
    tok.save(str(path))
    return path


def llama_like_tokenizer(path: Path) -> Path:
    """SentencePiece-style BPE (metaspace, byte fallback) that splits digits one by one (as LLaMA does)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split("\u2581", "merged_with_next"),
                                                 pre_tokenizers.Digits(individual_digits=True)])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tr = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    tok.train_from_iterator(digits_corpus(), tr)
    tok.save(str(path))
    return path


def letters_tokenizer(path: Path) -> Path:
    """A byte-level BPE over letters only: no digit, comma or minus tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {"<|endoftext|>": 0}
    for c in "abcdefghijklmnopqrstuvwxyz\u0120":
        vocab[c] = len(vocab)
    vocab["\u0120a"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("\u0120", "a")]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.save(str(path))
    return path


def tiny_numeric_gpt2(folder: Path, seed: int = 0, n_embd: int = 32, n_layer: int = 2, n_positions: int = 256) -> Path:
    """A random tiny GPT-2 with the numeric LM's vocabulary, saved as a Hugging Face folder."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from alignts.export.numeric_lm import EOS_ID, VOCAB_SIZE, write_hf_tokenizer

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=VOCAB_SIZE, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=2,
                     bos_token_id=EOS_ID, eos_token_id=EOS_ID)
    model = GPT2LMHeadModel(cfg)
    with torch.no_grad():  # larger logits than the init's, so samples are not uniform noise
        model.lm_head.weight.mul_(8.0)
    model.save_pretrained(folder)
    write_hf_tokenizer(folder)
    return folder


class RandomLogits:
    """A numpy stand-in for a causal LM backend: seeded random logits over ``n_vocab`` tokens."""

    def __init__(self, n_vocab: int, seed: int = 0, scale: float = 3.0):
        self.n_vocab = n_vocab
        self.rng = np.random.default_rng(seed)
        self.scale = scale
        self.steps = 0

    def prefill(self, prompt_ids, n_parallel=1):
        self.live = np.arange(n_parallel)
        return self.rng.normal(0, self.scale, (n_parallel, self.n_vocab)).astype(np.float32)

    def step(self, tokens, seq_ids=None):
        tokens = np.asarray(tokens)
        assert seq_ids is None or len(seq_ids) == len(tokens)
        self.steps += 1
        return self.rng.normal(0, self.scale, (len(tokens), self.n_vocab)).astype(np.float32)
