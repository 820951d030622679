"""Text: TF-IDF + logistic regression (``tfidf_logreg``), the baseline every text classifier should beat.

Features: scikit-learn's ``TfidfVectorizer`` fitted on the training texts only, ``sublinear_tf``:

- word 1-2-grams when the script separates words with spaces;
- character 1-3-grams (``analyzer="char"``) when it does not (Chinese, Japanese, Thai, Lao, Khmer, Myanmar,
  Tibetan): there, whitespace "words" are whole sentences. ``char`` rather than ``char_wb``: ``char_wb`` only
  builds n-grams inside whitespace tokens and pads them with spaces, which in such text adds nothing but the
  padding, and loses the n-grams across the odd space or punctuation.

The script is read from the training texts (:func:`text_analyzer`): when at least ``CHAR_SCRIPT_SHARE`` of their
non-space characters belong to a script written without spaces, the character analyser is used. Korean (Hangul)
is written with spaces and stays on words.

Pairs (``data.text_pair_column``): one vectorizer fitted on both sides of the training pairs, and the features
``[A, B, A * B]`` (the element-wise product is the n-grams both texts share, what paraphrase and entailment
hinge on) side by side. Then :func:`headstart.baselines.linear.fit_linear` (C, or Ridge's alpha, on val).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from headstart.baselines.base import BaselineOutputs, ClassicBaseline, register_baseline
from headstart.baselines.linear import fit_linear

if TYPE_CHECKING:
    from headstart.config import RunConfig

__all__ = ["CHAR_SCRIPT_SHARE", "TfidfLogreg", "char_script_share", "text_analyzer", "text_features",
           "tfidf_vectorizer"]

CHAR_SCRIPT_SHARE = 0.3
"""Share of non-space characters in scripts without word spaces above which TF-IDF reads characters."""
MAX_FEATURES = 200_000
_SAMPLE_CHARS = 2_000_000  # script detection reads at most this much of the training text

# CJK ideographs (+ extensions, compatibility), kana, Thai, Lao, Tibetan, Myanmar, Khmer: no spaces between words
_NO_SPACE_SCRIPT = re.compile(
    "[\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff"
    "\u0e00-\u0eff\u0f00-\u0fff\u1000-\u109f\u1780-\u17ff]"
)


def char_script_share(texts: Sequence[str]) -> float:
    """Share of the non-space characters of ``texts`` (up to ~2M characters) in scripts without word spaces."""
    sample, size = [], 0
    for text in texts:
        sample.append(str(text))
        size += len(sample[-1])
        if size >= _SAMPLE_CHARS:
            break
    joined = "".join(sample)
    non_space = len(joined) - sum(joined.count(c) for c in (" ", "\t", "\n", "\r", "\u3000"))
    return len(_NO_SPACE_SCRIPT.findall(joined)) / non_space if non_space else 0.0


def text_analyzer(texts: Sequence[str]) -> str:
    """``char`` (character 1-3-grams) for scripts written without spaces, else ``word`` (word 1-2-grams)."""
    return "char" if char_script_share(texts) >= CHAR_SCRIPT_SHARE else "word"


def tfidf_vectorizer(analyzer: str) -> Any:
    """The unfitted vectorizer for ``analyzer`` (``word`` or ``char``)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    if analyzer == "char":
        return TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, max_features=MAX_FEATURES)
    return TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, max_features=MAX_FEATURES)


def _texts(frame: Any, column: str) -> list[str]:
    return frame[column].fillna("").astype(str).tolist()


def text_features(frames: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """TF-IDF matrices per split (fitted on ``frames["train"]``) and what was chosen (analyser, vocabulary size)."""
    from scipy import sparse

    train = frames["train"]
    pairs = "text_pair" in train.columns
    fit_texts = _texts(train, "text") + (_texts(train, "text_pair") if pairs else [])
    analyzer = text_analyzer(fit_texts)
    vectorizer = tfidf_vectorizer(analyzer).fit(fit_texts)
    x: dict[str, Any] = {}
    for name, frame in frames.items():
        a = vectorizer.transform(_texts(frame, "text"))
        if pairs:
            b = vectorizer.transform(_texts(frame, "text_pair"))
            a = sparse.hstack([a, b, a.multiply(b)], format="csr")
        x[name] = a
    info = {"analyzer": analyzer, "ngram_range": [1, 2] if analyzer == "word" else [1, 3],
            "char_script_share": round(char_script_share(fit_texts), 4), "vocabulary": len(vectorizer.vocabulary_),
            "pairs": "[A, B, A*B]" if pairs else None}
    return x, {k: v for k, v in info.items() if v is not None}


class TfidfLogreg(ClassicBaseline):
    name = "tfidf_logreg"
    label = "TF-IDF + logistic regression"
    requires = ("sklearn",)

    def fit_predict(self, cfg: RunConfig, splits: Any) -> BaselineOutputs:
        frames = {"train": splits.train, "val": splits.val, **({"test": splits.test} if splits.test is not None else {})}
        x, info = text_features(frames)
        fitted = fit_linear(cfg, splits, x, {name: frame["label"].to_numpy() for name, frame in frames.items()})
        fitted.params = {"features": f"TF-IDF {info['analyzer']} {info['ngram_range'][0]}-{info['ngram_range'][1]}"
                                     f"-grams", **info, **fitted.params}
        return fitted


register_baseline(TfidfLogreg())
