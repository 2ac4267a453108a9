"""The real CLIP BPE tokenizer, built offline from the vocabulary that ``open_clip`` ships."""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

from transformers import CLIPTokenizer

#: Number of BPE merges in OpenAI CLIP's vocabulary (49408 = 2*256 bytes + merges + 2 specials).
NUM_MERGES = 49152 - 256 - 2


def _bpe_file() -> Path:
    import open_clip

    return Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"


def write_clip_vocab(directory: str | Path) -> tuple[Path, Path]:
    """Write ``vocab.json`` and ``merges.txt`` of OpenAI CLIP's BPE tokenizer into ``directory``."""
    from open_clip.tokenizer import bytes_to_unicode

    lines = gzip.open(_bpe_file()).read().decode("utf-8").split("\n")
    merges = lines[1 : NUM_MERGES + 1]
    byte_symbols = list(bytes_to_unicode().values())
    tokens = byte_symbols + [s + "</w>" for s in byte_symbols] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab_file, merges_file = directory / "vocab.json", directory / "merges.txt"
    vocab_file.write_text(json.dumps({tok: i for i, tok in enumerate(tokens)}, ensure_ascii=False))
    merges_file.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return vocab_file, merges_file


def build_clip_tokenizer(*, model_max_length: int = 77) -> CLIPTokenizer:
    """OpenAI CLIP's tokenizer (vocabulary 49408, the one SD1.x uses), with no download."""
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file, merges_file = write_clip_vocab(tmp)
        return CLIPTokenizer(vocab=str(vocab_file), merges=str(merges_file), model_max_length=model_max_length)
