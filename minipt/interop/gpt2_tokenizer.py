r"""GPT-2's ``vocab.json`` + ``merges.txt`` <-> minipt's :class:`~minipt.data.tokenizers.GPT2BPETokenizer`.

GPT-2 writes its byte-level tokens as text: each of the 256 bytes is shown as one printable character
(:func:`byte_characters`: the printable bytes ``!``..``~``, ``¡``..``¬``, ``®``..``ÿ`` as themselves, the other 68,
space and control bytes among them, as the characters 256, 257, ... in byte order; so a leading space shows as
``Ġ``). ``vocab.json`` maps each token's text to its id; line ``k`` of ``merges.txt`` (after the ``#version``
line) is merge ``k``, two token texts separated by a space. Those merges, in that order, are minipt's merges:
BPE applies the earliest learnt merge first in both, so loading is only a renaming of the tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

from minipt.data.tokenizers import FIRST_BYTE_ID, FIRST_MERGE_ID, BPETokenizer, GPT2BPETokenizer
from minipt.errors import MiniptError
from minipt.runs.folder import write_atomic

__all__ = ["byte_characters", "load_gpt2_tokenizer", "save_gpt2_tokenizer"]


def byte_characters() -> dict[int, str]:
    """GPT-2's printable character for each byte, in the order of GPT-2's first 256 ids (printable bytes first)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    characters = {byte: chr(byte) for byte in printable}
    others = [byte for byte in range(256) if byte not in characters]
    characters.update({byte: chr(256 + n) for n, byte in enumerate(others)})
    return characters


def _read_vocab(path: Path) -> dict[str, int]:
    try:
        vocab = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MiniptError(f"{path}: missing (GPT-2's tokenizer is vocab.json + merges.txt)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MiniptError(f"{path}: cannot read JSON ({type(error).__name__}: {error})") from None
    if not isinstance(vocab, dict) or not all(isinstance(i, int) for i in vocab.values()):
        raise MiniptError(f"{path}: expected a JSON object mapping token texts to integer ids")
    return vocab


def _read_merges(path: Path) -> list[tuple[str, str]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise MiniptError(f"{path}: missing (GPT-2's tokenizer is vocab.json + merges.txt)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise MiniptError(f"{path}: cannot read ({type(error).__name__}: {error})") from None
    merges = []
    for number, line in enumerate(lines, start=1):
        if (number == 1 and line.startswith("#version")) or not line:
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise MiniptError(f"{path}: line {number} is not two tokens separated by one space: {line!r}")
        merges.append((parts[0], parts[1]))
    return merges


def load_gpt2_tokenizer(folder: str | Path) -> GPT2BPETokenizer:
    """GPT-2's tokenizer from ``folder/vocab.json`` and ``folder/merges.txt``: the same ids as GPT-2's own."""
    folder = Path(folder)
    vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
    vocab, text_merges = _read_vocab(vocab_path), _read_merges(merges_path)
    minipt_id: dict[str, int] = {}  # token text -> minipt id
    ids: list[int] = []  # GPT-2 id of minipt token 5 + i
    characters = byte_characters()
    for byte in range(256):  # minipt's order: byte b is token 5 + b
        if characters[byte] not in vocab:
            raise MiniptError(f"{vocab_path}: byte {byte} ({characters[byte]!r}) is not in the vocabulary")
        minipt_id[characters[byte]] = FIRST_BYTE_ID + byte
        ids.append(vocab[characters[byte]])
    merges = []
    for k, (first, second) in enumerate(text_merges):
        if first not in minipt_id or second not in minipt_id or first + second not in vocab:
            raise MiniptError(f"{merges_path}: merge {k} ({first} {second}) uses a token missing from vocab.json")
        merges.append((minipt_id[first], minipt_id[second]))
        minipt_id.setdefault(first + second, FIRST_MERGE_ID + k)
        ids.append(vocab[first + second])
    if GPT2BPETokenizer.EOS not in vocab:
        raise MiniptError(f"{vocab_path}: no {GPT2BPETokenizer.EOS} token")
    return GPT2BPETokenizer(merges, ids, vocab[GPT2BPETokenizer.EOS])


def save_gpt2_tokenizer(tokenizer: BPETokenizer, folder: str | Path) -> None:
    """Write a minipt :class:`BPETokenizer` as GPT-2's ``vocab.json`` + ``merges.txt`` in GPT-2's layout: the
    256 bytes first (ids 0..255 in :func:`byte_characters`'s order), then one id per new merged token, then
    ``<|endoftext|>``. :func:`load_gpt2_tokenizer` reads it back (same texts, GPT-2's ids)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    characters = byte_characters()

    def text(index: int) -> str:  # the token's bytes, each as GPT-2's character
        return "".join(characters[byte] for byte in tokenizer.token_bytes[index])

    vocab = {character: index for index, character in enumerate(characters.values())}
    lines = ["#version: 0.2"]
    for a, b in tokenizer.merges:
        vocab.setdefault(text(a) + text(b), len(vocab))
        lines.append(f"{text(a)} {text(b)}")
    vocab[GPT2BPETokenizer.EOS] = len(vocab)
    write_atomic(folder / "vocab.json", json.dumps(vocab, ensure_ascii=False))
    write_atomic(folder / "merges.txt", "\n".join(lines) + "\n")
