"""Text datasets for the sequence network: IMDB reviews and WikiText-2, held as token-id tensors.

Lookup order, as for the images (:mod:`dynalay_env.data.images`): the user's ``data_dir``, then the
project's cache (``<cache>/data``), then, only when ``download=True``, Hugging Face ``datasets``
(an optional extra: ``pip install 'dynalay[text]'``), whose copy is written into the cache in the
standard layout, so later runs are offline. Nothing else needs ``datasets``. When nothing is
found a :class:`~dynalay_env.data.splits.DataNotFoundError` lists every place looked at and what to run.

Standard layouts read:

- IMDB (Maas et al., 2011): ``aclImdb/{train,test}/{pos,neg}/*.txt``, one review per file.
- WikiText-2 (Merity et al., 2016): ``wikitext-2/{train,valid,test}.txt`` (PyTorch's
  word-language-model example) or ``wikitext-2/wiki.{train,valid,test}.tokens`` (the official
  archive), already tokenized: words split on spaces, ``<eos>`` appended to every line.

Episodes (one sample each):

- ``IMDB``: one review, lower-cased and tokenized, cut to its first T tokens or padded with
  ``<pad>`` after its end; label 1 = positive, 0 = negative.
- ``WikiText2``: one window of T tokens of the split's token stream (non-overlapping windows);
  the labels are the T next tokens, so the answer is a next-token prediction at every position.

The vocabulary is built from the training split alone (most frequent first, ties in alphabetical
order, at most ``max_vocab`` tokens; others become ``<unk>``) and saved with the model; a model
and data encoded with another vocabulary are refused (:meth:`TextSplit.model_mismatch`).

WikiText-2 without its ``train`` file (the offline copy here holds ``valid`` and ``test``): the
``valid`` split is trained on instead, with a warning, and the split records it
(``TextSplit.source``); every reported number must then say "trained on valid".
"""

from __future__ import annotations

import collections
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dynalay_env.data.splits import DataNotFoundError, cache_dir, carve_rows, training_provenance

PAD, UNK, EOS = "<pad>", "<unk>", "<eos>"


@dataclass(frozen=True)
class TextSpec:
    """What DynaLay needs to know about a text dataset.

    Attributes:
        name: DynaLay's name (the env id's middle part): ``IMDB`` or ``WikiText2``.
        task: ``classify`` (one label per sequence) or ``lm`` (next token at every position).
        num_classes: labels for ``classify`` (for ``lm`` the vocabulary size decides).
        seq_len: default T, tokens per episode.
        max_vocab: default cap on the vocabulary (None: every training token).
        holdout_size: default number of training sequences kept unseen for the agent.
        folder: the standard layout's folder under a data root.
        hub: Hugging Face ``datasets`` name and configuration of the download.
    """

    name: str
    task: str
    num_classes: int
    seq_len: int
    max_vocab: int | None
    holdout_size: int
    folder: str
    hub: tuple[str, str | None]

    @property
    def install_hint(self) -> str:
        return (
            f"pip install 'dynalay[text]' (Hugging Face datasets), then pass download=True "
            f"(run_rl.py --download) to fetch {self.name} into the cache; or put the files in "
            f"DATA_DIR/{self.folder}/ in the standard layout (dynalay_env/data/text.py) and pass "
            f"data_dir=DATA_DIR (--data-dir)"
        )


TEXT_DATASETS: dict[str, TextSpec] = {
    "IMDB": TextSpec(
        "IMDB", "classify", 2, 256, 20000, 2500, "aclImdb", ("stanfordnlp/imdb", None)
    ),
    "WikiText2": TextSpec(
        "WikiText2", "lm", 0, 32, None, 1000, "wikitext-2", ("Salesforce/wikitext", "wikitext-2-v1")
    ),
}


# ----- tokens and vocabulary ----------------------------------------------------------------------
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[!?.,;:()\"-]")


def tokenize_review(text: str) -> list[str]:
    """An IMDB review as lower-case words and punctuation marks (HTML line breaks dropped)."""
    return _WORD.findall(text.replace("<br />", " ").lower())


def tokenize_wikitext_line(line: str) -> list[str]:
    """A WikiText line (already tokenized, words separated by spaces) plus ``<eos>``."""
    return line.split() + [EOS]


def build_vocabulary(
    sequences: Iterable[Sequence[str]], specials: Sequence[str], max_size: int | None = None
) -> tuple[str, ...]:
    """``specials`` first, then the tokens of ``sequences`` by falling count (ties alphabetical),
    at most ``max_size`` tokens in all: deterministic for the same text."""
    counts = collections.Counter(token for sequence in sequences for token in sequence)
    for special in specials:
        counts.pop(special, None)
    ranked = sorted(counts, key=lambda token: (-counts[token], token))
    vocabulary = tuple(specials) + tuple(ranked)
    return vocabulary if max_size is None else vocabulary[:max_size]


def encode(tokens: Sequence[str], vocabulary: dict[str, int]) -> list[int]:
    """Token ids; tokens outside the vocabulary become ``<unk>``."""
    unknown = vocabulary[UNK]
    return [vocabulary.get(token, unknown) for token in tokens]


# ----- splits -------------------------------------------------------------------------------------
@dataclass
class TextSplit:
    """One split of a text dataset, in memory.

    Attributes:
        tokens: (N, T) int64 token ids, the model's inputs.
        labels: (N,) int64 classes (``classify``) or (N, T) int64 next-token ids (``lm``).
        indices: (N,) int64 index of each sequence in its source (review, or window, number).
        spec: the dataset's :class:`TextSpec`.
        vocabulary: the V tokens, in id order (built from the training split).
        source: the file or folder the sequences came from (e.g. ``valid.txt`` for a
            WikiText-2 ``train`` split made of its validation text).
    """

    tokens: Tensor
    labels: Tensor
    indices: Tensor
    spec: TextSpec
    vocabulary: tuple[str, ...]
    source: str = ""

    def __post_init__(self) -> None:
        n = self.tokens.shape[0]
        if self.tokens.dim() != 2 or self.tokens.dtype != torch.long:
            raise ValueError(
                f"tokens must be (N, T) int64, got {self.tokens.dtype} {self.tokens.shape}"
            )
        label_shape = (n,) if self.spec.task == "classify" else tuple(self.tokens.shape)
        if tuple(self.labels.shape) != label_shape or self.indices.shape != (n,):
            raise ValueError(f"labels must have shape {label_shape} and indices ({n},)")
        if n == 0:
            raise ValueError(f"the {self.spec.name} split is empty")

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def seq_len(self) -> int:
        return self.tokens.shape[1]

    @property
    def num_classes(self) -> int:
        """Classes of the head: the labels' (``classify``) or the vocabulary's (``lm``)."""
        return self.spec.num_classes if self.spec.task == "classify" else len(self.vocabulary)

    @property
    def device(self) -> torch.device:
        return self.tokens.device

    def to(self, device: str | torch.device) -> TextSplit:
        return TextSplit(
            self.tokens.to(device),
            self.labels.to(device),
            self.indices.to(device),
            self.spec,
            self.vocabulary,
            self.source,
        )

    def normalized(self, rows: Tensor | slice) -> Tensor:
        """(B, T) int64 token ids of ``rows``: the model's input (the images' counterpart of
        normalised pixels; token ids need no normalisation)."""
        if isinstance(rows, Tensor):
            return self.tokens.index_select(0, rows.to(self.tokens.device))
        return self.tokens[rows]

    def subset(self, rows: Tensor) -> TextSplit:
        return TextSplit(
            self.tokens[rows],
            self.labels[rows],
            self.indices[rows],
            self.spec,
            self.vocabulary,
            self.source,
        )

    def training_provenance(self) -> dict:
        """What a main model trained on this split records (which sequences it saw)."""
        return training_provenance(self)

    def model_mismatch(self, model: Any) -> str | None:
        """Why ``model`` cannot run on this split (None when it can)."""
        config = model.config
        expected = {
            "task": self.spec.task,
            "seq_len": self.seq_len,
            "num_classes": self.num_classes,
            "vocab_size": len(self.vocabulary),
        }
        found = {key: getattr(config, key, None) for key in expected}
        if found != expected:
            return (
                f"main model expects {found}, but the {self.spec.name} data has {expected}; use a "
                f"checkpoint trained on {self.spec.name} with these settings"
            )
        if tuple(getattr(model, "vocabulary", None) or ()) != self.vocabulary:
            return (
                f"the main model's vocabulary is not the one this {self.spec.name} data was "
                f"encoded with (built from its training split): a model only reads text encoded "
                f"with the vocabulary saved in its checkpoint"
            )
        return None


def get_text_spec(name: str) -> TextSpec | None:
    """The :class:`TextSpec` of ``name`` (case-insensitive), or None for other datasets."""
    for key, spec in TEXT_DATASETS.items():
        if key.lower() == name.lower():
            return spec
    return None


# ----- reading the standard layouts ---------------------------------------------------------------
_WIKITEXT_FILES = {
    split: (f"{split}.txt", f"wiki.{split}.tokens") for split in ("train", "valid", "test")
}


def _wikitext_files(root: Path) -> dict[str, Path]:
    """The WikiText-2 split files found under ``root`` (``root/wikitext-2`` or ``root``)."""
    found = {}
    for folder in (root / "wikitext-2", root):
        for split, names in _WIKITEXT_FILES.items():
            for name in names:
                if split not in found and (folder / name).is_file():
                    found[split] = folder / name
    return found


def _imdb_folder(root: Path) -> Path | None:
    folder = root / "aclImdb"
    complete = all(
        (folder / split / label).is_dir() for split in ("train", "test") for label in ("pos", "neg")
    )
    return folder if complete else None


def _read_imdb(folder: Path, split: str) -> tuple[list[list[str]], list[int]]:
    """Tokenized reviews and labels (negative 0, positive 1) of ``aclImdb/<split>``, file order."""
    reviews, labels = [], []
    for label, name in enumerate(("neg", "pos")):
        for path in sorted((folder / split / name).glob("*.txt")):
            reviews.append(tokenize_review(path.read_text(encoding="utf-8")))
            labels.append(label)
    return reviews, labels


def _read_wikitext(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return [token for line in handle for token in tokenize_wikitext_line(line)]


def _download(spec: TextSpec, target: Path) -> None:
    """Fetch ``spec`` with Hugging Face ``datasets`` and write it to ``target`` in the standard
    layout (files written under temporary names, then renamed)."""
    try:
        import datasets  # optional: only a download needs it
    except ImportError as error:
        raise DataNotFoundError(
            f"downloading {spec.name} needs Hugging Face datasets: pip install 'dynalay[text]'"
        ) from error
    name, configuration = spec.hub
    loaded = datasets.load_dataset(name, configuration)
    folder = target / spec.folder
    if spec.task == "lm":
        folder.mkdir(parents=True, exist_ok=True)
        for split, hub_split in (("train", "train"), ("valid", "validation"), ("test", "test")):
            temporary = folder / f".{split}.txt.tmp"
            temporary.write_text("".join(loaded[hub_split]["text"]), encoding="utf-8")
            temporary.replace(folder / f"{split}.txt")
        return
    staging = target / f".{spec.folder}.tmp"
    for split in ("train", "test"):
        for number, row in enumerate(loaded[split]):
            out = staging / split / ("pos" if row["label"] == 1 else "neg") / f"{number}.txt"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(row["text"], encoding="utf-8")
    staging.replace(folder)


def _locate(spec: TextSpec, data_dir: str | os.PathLike | None, download: bool) -> Path:
    """The data root holding ``spec``'s files (see the module docstring for the order)."""
    looked: list[str] = []
    roots = ([Path(data_dir)] if data_dir is not None else []) + [cache_dir() / "data"]

    def usable(root: Path) -> bool:
        if spec.task == "lm":
            files = _wikitext_files(root)
            return "test" in files and ("train" in files or "valid" in files)
        return _imdb_folder(root) is not None

    for root in roots:
        if usable(root):
            return root
        looked.append(f"{root}/{spec.folder}/ (standard {spec.name} layout)")
    if download:
        target = cache_dir() / "data"
        try:
            _download(spec, target)
            if usable(target):
                return target
            looked.append(f"download into {target} gave no usable files")
        except Exception as error:  # network and hub errors come in many types
            looked.append(f"Hugging Face download into {target} failed: {error}")
    else:
        looked.append("Hugging Face download (not attempted: download=False)")
    raise DataNotFoundError(
        f"{spec.name} data not found. Looked in:\n  - "
        + "\n  - ".join(looked)
        + f"\nTo get it: {spec.install_hint}."
    )


# ----- splits -------------------------------------------------------------------------------------
def _carve_holdout(
    train: TextSplit, holdout_size: int, seed: int, train_size: int | None
) -> tuple[TextSplit, TextSplit]:
    """A seeded ``holdout`` out of the training sequences, the rest (or ``train_size`` of it,
    by another permutation with the same seed) for training; as the image datasets do."""
    n = len(train)
    what = f"{train.spec.name} ({n} training sequences of {train.seq_len} tokens)"
    holdout_rows, train_rows = carve_rows(n, holdout_size, seed, train_size, what)
    return train.subset(train_rows), train.subset(holdout_rows)


def _windows(stream: Tensor, seq_len: int) -> tuple[Tensor, Tensor]:
    """Non-overlapping windows of ``seq_len`` tokens and their next tokens: (N, T) each."""
    n = (stream.numel() - 1) // seq_len
    if n < 1:
        raise ValueError(f"a text of {stream.numel()} tokens has no window of {seq_len} + 1 tokens")
    inputs = stream[: n * seq_len].view(n, seq_len)
    targets = stream[1 : n * seq_len + 1].view(n, seq_len)
    return inputs.clone(), targets.clone()


def load_text_splits(
    name: str,
    data_dir: str | os.PathLike | None = None,
    holdout_size: int | None = None,
    seed: int = 0,
    download: bool = False,
    train_size: int | None = None,
    seq_len: int | None = None,
    max_vocab: int | None = None,
) -> dict[str, TextSplit]:
    """``train``, ``holdout`` and ``test`` splits of text dataset ``name`` (on the CPU).

    ``seq_len`` (T), ``max_vocab`` and ``holdout_size`` default to the dataset's
    (:data:`TEXT_DATASETS`). The same arguments and files always give the same splits.
    """
    spec = get_text_spec(name)
    if spec is None:
        raise ValueError(f"unknown text dataset {name!r}; choose one of {sorted(TEXT_DATASETS)}")
    seq_len = spec.seq_len if seq_len is None else int(seq_len)
    max_vocab = spec.max_vocab if max_vocab is None else int(max_vocab)
    holdout_size = spec.holdout_size if holdout_size is None else int(holdout_size)
    root = _locate(spec, data_dir, download)
    if spec.task == "lm":
        files = _wikitext_files(root)
        train_file = files.get("train")
        if train_file is None:
            train_file = files["valid"]
            warnings.warn(
                f"WikiText-2 has no train split in {train_file.parent}: training on its valid "
                f"split ({train_file.name}) instead; report results as trained on valid",
                stacklevel=2,
            )
        train_tokens = _read_wikitext(train_file)
        vocabulary = build_vocabulary([train_tokens], (UNK, EOS), max_vocab)
        ids = {token: index for index, token in enumerate(vocabulary)}

        def split_of(path: Path) -> TextSplit:
            tokens = _read_wikitext(path) if path != train_file else train_tokens
            inputs, targets = _windows(torch.tensor(encode(tokens, ids)), seq_len)
            indices = torch.arange(len(inputs))
            return TextSplit(inputs, targets, indices, spec, vocabulary, path.name)

        train, test = split_of(train_file), split_of(files["test"])
    else:
        folder = _imdb_folder(root)
        train_reviews, train_labels = _read_imdb(folder, "train")
        vocabulary = build_vocabulary(train_reviews, (PAD, UNK), max_vocab)
        ids = {token: index for index, token in enumerate(vocabulary)}

        def split_of(reviews: list[list[str]], labels: list[int], source: str) -> TextSplit:
            tokens = torch.full((len(reviews), seq_len), ids[PAD], dtype=torch.long)
            for row, review in enumerate(reviews):
                encoded = encode(review[:seq_len], ids)
                tokens[row, : len(encoded)] = torch.tensor(encoded, dtype=torch.long)
            indices = torch.arange(len(reviews))
            return TextSplit(tokens, torch.tensor(labels), indices, spec, vocabulary, source)

        train = split_of(train_reviews, train_labels, "aclImdb/train")
        test = split_of(*_read_imdb(folder, "test"), "aclImdb/test")
    train, holdout = _carve_holdout(train, holdout_size, seed, train_size)
    return {"train": train, "holdout": holdout, "test": test}
