"""What each task's exported SavedModel must answer whatever it is sent, for the contract test
(tests/test_task_contract.py runs these on every task's export) and test_export.py.

From the issue: each exported model accepts empty strings, whitespace-only input, 10,000-token
inputs (truncated as configured), emoji/CJK/RTL/zero-width characters and batches of 0, 1 and
1,000; 8 threads x 500 calls on one loaded SavedModel give the same answers as sequential
calls, without errors. Only ``tf.saved_model.load`` and the exported signatures are used, as TF
Serving would. The answers need not be good, only well-formed and stable.

One ``ServingChecks`` subclass per task (``CHECKS``), built on the loaded export, its run's
config and its metadata; a task without one fails the contract test.
"""

from __future__ import annotations

import concurrent.futures
import functools
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

from nlp_rnn.data import tokenizers, vectorize

ODD = [
    "",
    "   ",
    "\t\n",
    "😀🎉",
    "日本語のテキスト",
    "مرحبا بالعالم",
    "שלום עולם",
    "\u200b\u200c\u200d\ufeff",  # zero-width space / non-joiner / joiner, BOM
    "e\u0301 n\u0303 \u0301\u0301 Z\u0351\u0352\u0357\u035b",  # combining marks, some stray
    # valid UTF-8 that looks broken: NUL, DEL, U+FFFD, a noncharacter, the last code point,
    # private use, a right-to-left override, a ZWJ family, a flag, a variation selector
    "\x00 \x7f \ufffd \uffff \U0010ffff \ue000 \u202eabc \U0001f468\u200d\U0001f469\u200d"
    "\U0001f467 🇯🇵 \u2764\ufe0f",
    "Peter 😀 flew to 東京 with שלום\u200b and caf\u00e9 , not bad at all !",
]
MIX = [
    "good movie",
    "",
    "   ",
    "😀🎉 日本語",
    "مرحبا بالعالم",
    "Peter Blackburn flew to Brussels",
    "not bad at all , i loved it",
    "e\u0301\u200b",
]
THREADS, CALLS_PER_THREAD = 8, 500


def long_text(
    n: int = 10_000, words=("good", "bad", "not", "movie", "Peter", "Paris", "😀", "日本")
) -> str:
    return " ".join(words[i % len(words)] for i in range(n))


def as_numpy(out: dict) -> dict:
    return {k: v.numpy() for k, v in out.items()}


def decode(values) -> list[str]:
    return [v.decode("utf-8") for v in values]


def rows_answered(out: dict) -> int:
    """How many rows every output of one signature call holds (they must agree)."""
    sizes = {len(value) for value in out.values()}
    return sizes.pop() if len(sizes) == 1 else -1


def run_concurrently(call, inputs: list) -> tuple[list, float]:
    """Call ``call(inputs[k % len(inputs)])`` THREADS x CALLS_PER_THREAD times from 8 threads;
    ([(k % len(inputs), answer)], seconds)."""
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        results = list(
            pool.map(
                lambda k: (k % len(inputs), call(inputs[k % len(inputs)])),
                range(THREADS * CALLS_PER_THREAD),
            )
        )
    return results, time.perf_counter() - start


def assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key in want:
        assert got[key].shape == want[key].shape, key
        if want[key].dtype.kind == "f":
            np.testing.assert_allclose(got[key], want[key], rtol=0, atol=1e-6, err_msg=key)
        else:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def concurrent_batches(mix: list[str]) -> list[list[str]]:
    """Batches of 1 to 3 inputs, so concurrent calls also differ in batch size and padding."""
    return [[mix[(i + j) % len(mix)] for j in range(1 + i % 3)] for i in range(len(mix) * 3)]


def sentencepiece_characters(path: Path) -> set[str]:
    """Every character a SentencePiece model's output can hold: its pieces' characters (control
    pieces and the OOV piece left out), the space between words and "⁇", how SentencePiece
    writes the OOV piece."""
    import sentencepiece as spm

    model = spm.SentencePieceProcessor(model_file=str(path))
    characters = {" ", "\u2047"}
    for i in range(model.get_piece_size()):
        if not (model.is_control(i) or model.is_unknown(i)):
            characters |= set(model.id_to_piece(i).replace(tokenizers.WORD_BOUNDARY, ""))
    return characters


class ServingChecks:
    """One task's checks on one loaded export.

    Args:
        loaded: the ``tf.saved_model.load`` of the export's version folder.
        config: the pipeline config the run was trained with.
        metadata: the export's ``nlp_rnn.json``.
        run_dir: the run folder (its ``vocab/``).
    """

    def __init__(self, loaded, config, metadata: dict, run_dir: Path):
        self.loaded, self.config, self.metadata, self.run_dir = loaded, config, metadata, run_dir

    def odd_text(self) -> dict:
        """``ODD`` in one batch: well-formed, and each row as the text alone gets it; returns
        that batch's outputs (a row per text)."""
        raise NotImplementedError

    def long_input(self) -> tuple[int, dict]:
        """A 10,000-token input is cut as configured (a 10,000-character prompt continues);
        returns (inputs in the checked call, its outputs)."""
        raise NotImplementedError

    def batch_of(self, size: int) -> dict:
        """A batch of ``size`` inputs: well-formed, and rows as their texts alone get them;
        returns that batch's outputs."""
        raise NotImplementedError

    def concurrent_calls(self) -> list[Callable[[], dict]]:
        """Calls whose answers must not change when made from several threads at once."""
        raise NotImplementedError


# ---- classification ------------------------------------------------------------------------


def classify(loaded, texts: list[str]) -> dict:
    out = loaded.signatures["serving_default"](text=tf.constant(texts, tf.string))
    return as_numpy(out)


def check_classifier_output(out: dict, n: int, labels: list[str]) -> None:
    assert out["label"].shape == (n,) and out["label"].dtype == object
    assert out["label_id"].shape == (n,) and out["label_id"].dtype == np.int32
    assert out["probabilities"].shape == (n, len(labels))
    assert out["probabilities"].dtype == np.float32
    probabilities = out["probabilities"]
    assert np.all(np.isfinite(probabilities))
    assert np.all((probabilities >= 0) & (probabilities <= 1))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(out["label_id"], probabilities.argmax(axis=1))
    assert decode(out["label"]) == [labels[i] for i in out["label_id"]]


def assert_rows_match_alone(loaded, texts: list[str], batched: dict, rows) -> None:
    """Rows of a batched classification equal the same texts classified one at a time."""
    for i in rows:
        alone = classify(loaded, [texts[i]])
        np.testing.assert_allclose(
            batched["probabilities"][i], alone["probabilities"][0], rtol=0, atol=1e-5
        )
        top = np.sort(alone["probabilities"][0])
        if top[-1] - top[-2] > 1e-4:  # no near-tie that float noise could flip
            assert batched["label"][i] == alone["label"][0]


class ClassificationChecks(ServingChecks):
    @property
    def labels(self) -> list[str]:
        return self.metadata["labels"]

    def odd_text(self) -> dict:
        out = classify(self.loaded, ODD)
        check_classifier_output(out, len(ODD), self.labels)
        # empty and whitespace-only texts are one out-of-vocabulary token, so they agree
        for i in (1, 2):
            np.testing.assert_array_equal(out["probabilities"][i], out["probabilities"][0])
        assert_rows_match_alone(self.loaded, ODD, out, range(len(ODD)))
        return out

    def long_input(self) -> tuple[int, dict]:
        text = long_text(words=("good", "bad", "not", "movie", "日本", "!"))  # each one token
        n = self.config.vectorize.max_length
        assert self.config.vectorize.keep == "first"
        first_n = " ".join(text.split()[:n])
        one_token = "x" * 10_000  # a single 10,000-character token
        out = classify(self.loaded, [text, first_n, one_token])
        check_classifier_output(out, 3, self.labels)
        np.testing.assert_allclose(out["probabilities"][0], out["probabilities"][1], atol=1e-6)
        return 3, out

    def batch_of(self, size: int) -> dict:
        texts = [f"{MIX[i % len(MIX)]} {'not ' * (i % 4)}good" for i in range(size)]
        out = classify(self.loaded, texts)
        check_classifier_output(out, size, self.labels)
        assert_rows_match_alone(self.loaded, texts, out, range(0, size, 97))
        if size == 1000:  # and a batch of 1,000 identical texts is 1,000 identical answers
            same = classify(self.loaded, [MIX[6]] * size)["probabilities"]
            np.testing.assert_allclose(same, np.broadcast_to(same[0], same.shape), atol=1e-6)
        return out

    def concurrent_calls(self) -> list[Callable[[], dict]]:
        return [(lambda b=b: classify(self.loaded, b)) for b in concurrent_batches(MIX)]


# ---- tagging -------------------------------------------------------------------------------


def tag_text(loaded, texts: list[str]) -> dict:
    return as_numpy(loaded.signatures["serving_default"](text=tf.constant(texts, tf.string)))


def tag_tokens(loaded, sentences: list[list[str]], width: int | None = None) -> dict:
    width = max([len(s) for s in sentences] + [0]) if width is None else width
    padded = tf.constant(
        [s + [""] * (width - len(s)) for s in sentences], tf.string, shape=[len(sentences), width]
    )
    return as_numpy(loaded.signatures["tag_tokens"](tokens=padded))


def check_tagger_output(
    out: dict, sentences: list[list[str]], max_length: int, tag_set: set[str]
) -> None:
    """Shapes and dtypes; tokens as given (cut at max_length); tags known; "" beyond lengths."""
    n = len(sentences)
    assert out["lengths"].shape == (n,) and out["lengths"].dtype == np.int32
    assert out["tokens"].shape == out["tags"].shape and out["tokens"].shape[0] == n
    assert out["tokens"].dtype == object and out["tags"].dtype == object
    expected = [min(len(s), max_length) for s in sentences]
    assert out["lengths"].tolist() == expected
    assert out["tokens"].shape[1] == max(expected + [1])  # at least one column, even if empty
    for tokens, tags, length, sentence in zip(out["tokens"], out["tags"], expected, sentences):
        assert decode(tokens[:length]) == sentence[:length]
        assert set(decode(tags[:length])) <= tag_set
        assert all(t == b"" for t in tokens[length:]) and all(t == b"" for t in tags[length:])


class TaggingChecks(ServingChecks):
    @property
    def tag_set(self) -> set[str]:
        return set(self.metadata["tags"])

    def check(self, out: dict, sentences: list[list[str]]) -> None:
        check_tagger_output(out, sentences, self.config.vectorize.max_length, self.tag_set)

    def odd_text(self) -> dict:
        sentences = [text.split() for text in ODD]
        assert [len(s) for s in sentences[:3]] == [0, 0, 0]
        out = tag_text(self.loaded, ODD)
        self.check(out, sentences)
        assert_same(tag_tokens(self.loaded, sentences), out)
        for i, text in enumerate(ODD):  # padding and batch company do not change the tags
            alone = tag_text(self.loaded, [text])
            width = alone["tags"].shape[1]
            np.testing.assert_array_equal(out["tags"][i, :width], alone["tags"][0])
        return out

    def long_input(self) -> tuple[int, dict]:
        n = self.config.vectorize.max_length
        sentence = long_text().split()
        assert len(sentence) == 10_000 and n < 10_000
        out = tag_text(self.loaded, [" ".join(sentence)])
        self.check(out, [sentence])
        assert out["lengths"].tolist() == [n] and out["tags"].shape == (1, n)
        assert_same(tag_tokens(self.loaded, [sentence]), out)
        np.testing.assert_array_equal(
            tag_text(self.loaded, [" ".join(sentence[:n])])["tags"], out["tags"]
        )
        long_word = tag_text(self.loaded, ["x" * 10_000 + " Paris"])  # a 10,000-character token
        self.check(long_word, [["x" * 10_000, "Paris"]])
        return 1, out

    def batch_of(self, size: int) -> dict:
        texts = [f"{MIX[i % len(MIX)]} {'in Paris ' * (i % 4)}" for i in range(size)]
        sentences = [t.split() for t in texts]
        out = tag_text(self.loaded, texts)
        self.check(out, sentences)
        assert_same(tag_tokens(self.loaded, sentences), out)
        for i in range(0, size, 97):
            alone = tag_text(self.loaded, [texts[i]])
            np.testing.assert_array_equal(
                out["tags"][i, : alone["tags"].shape[1]], alone["tags"][0]
            )
        if size == 0:  # tag_tokens also takes [0, 0] and [0, T] batches
            for width in (0, 5):
                self.check(tag_tokens(self.loaded, [], width), [])
        return out

    def concurrent_calls(self) -> list[Callable[[], dict]]:
        batches = concurrent_batches(MIX)
        # serving_default on each batch, and tag_tokens on the same sentences pre-split
        return [(lambda b=b: tag_text(self.loaded, b)) for b in batches] + [
            (lambda b=b: tag_tokens(self.loaded, [t.split() for t in b])) for b in batches
        ]


# ---- translation ---------------------------------------------------------------------------


def translate(loaded, texts: list[str], beam_width: int | None = None) -> dict:
    """``serving_default`` (the exported beam width), or ``translate`` with ``beam_width``."""
    if beam_width is None:
        return as_numpy(loaded.signatures["serving_default"](text=tf.constant(texts, tf.string)))
    out = loaded.signatures["translate"](
        text=tf.constant(texts, tf.string),
        beam_width=tf.constant(beam_width, tf.int32),
        length_penalty=tf.constant(0.6, tf.float32),
    )
    return as_numpy(out)


def check_translations(out: dict, texts: list[str], known: Callable[[str], bool], config) -> None:
    """``known(translation)``: written with the target vocabulary alone."""
    dec = config.decoding
    assert out["translation"].shape == (len(texts),) and out["translation"].dtype == object
    for text, translation in zip(texts, decode(out["translation"])):
        words = translation.split()
        assert known(translation), translation  # never [START]/[END] or padding
        assert not {"[START]", "[END]", "[PAD]"} & set(words)
        source_tokens = max(1, min(len(text.split()), config.vectorize.source_max_length))
        assert (
            len(words) <= np.ceil(dec.max_length_ratio * 2 * source_tokens) + dec.max_length_offset
        )  # (punctuation split can double the source tokens)


class TranslationChecks(ServingChecks):
    WIDTHS = (None, 1)  # the exported beam width (serving_default), and greedy (translate)

    @functools.cached_property
    def known(self) -> Callable[[str], bool]:
        """Whether a translation is written with the target vocabulary: its words (words and
        characters targets), or its pieces' characters (a SentencePiece target)."""
        vocab_dir = self.run_dir / "vocab"
        if self.config.vectorize.target_tokenizer == "sentencepiece":
            characters = sentencepiece_characters(tokenizers.model_path(vocab_dir, "target"))
            return lambda translation: set(translation) <= characters
        words = set(vectorize.load_vocabulary(vocab_dir / "target_vocab.txt")) | {"[UNK]"}
        return lambda translation: set(translation.split()) <= words

    def odd_text(self) -> dict:
        for width in self.WIDTHS:
            out = translate(self.loaded, ODD, width)
            check_translations(out, ODD, self.known, self.config)
            for i, text in enumerate(ODD):  # the same with or without batch company
                assert (
                    translate(self.loaded, [text], width)["translation"][0] == out["translation"][i]
                )
        return out

    def long_input(self) -> tuple[int, dict]:
        words = long_text().split()
        out = translate(self.loaded, [" ".join(words)])
        check_translations(out, [" ".join(words)], self.known, self.config)
        cut = " ".join(words[: self.config.vectorize.source_max_length])
        assert translate(self.loaded, [cut])["translation"][0] == out["translation"][0]
        return 1, out

    def batch_of(self, size: int) -> dict:
        texts = [f"{MIX[i % len(MIX)]} {'the 2nd of may ' * (i % 3)}" for i in range(size)]
        for width in self.WIDTHS:
            out = translate(self.loaded, texts, width)
            check_translations(out, texts, self.known, self.config)
            for i in range(0, size, 199):
                assert (
                    translate(self.loaded, [texts[i]], width)["translation"][0]
                    == out["translation"][i]
                )
        return out

    def concurrent_calls(self) -> list[Callable[[], dict]]:
        return [(lambda b=b: translate(self.loaded, b)) for b in concurrent_batches(MIX)]


# ---- language model --------------------------------------------------------------------------


def generate(loaded, prompts: list[str], max_length: int = 8) -> dict:
    """Greedy continuations (temperature 0) of ``max_length`` tokens."""
    out = loaded.signatures["serving_default"](
        prompt=tf.constant(prompts, tf.string),
        max_length=tf.constant(max_length, tf.int32),
        temperature=tf.constant(0.0, tf.float32),
        top_k=tf.constant(0, tf.int32),
    )
    return as_numpy(out)


def check_generation(
    out: dict, prompts: list[str], max_length: int, vocab: set[str], pieces: bool = False
) -> None:
    """A character LM's continuation: ``max_length`` characters of its vocabulary. A
    SentencePiece LM's: text its pieces write (``vocab``: their characters), nothing for
    ``max_length`` 0, and after the prompt in ``text`` (a space between them or not)."""
    n = len(prompts)
    assert out["continuation"].shape == (n,) and out["text"].shape == (n,)
    assert out["continuation"].dtype == object and out["text"].dtype == object
    for prompt, continuation, text in zip(
        prompts, decode(out["continuation"]), decode(out["text"])
    ):
        assert set(continuation) <= vocab, continuation  # never padding or a raw piece
        if not pieces:
            assert len(continuation) == max_length  # one character per step
            assert text == prompt + continuation
            continue
        assert tokenizers.WORD_BOUNDARY not in continuation  # pieces joined back into words
        assert text in (prompt + continuation, f"{prompt} {continuation}")
        if max_length == 0:
            assert continuation == ""


class LanguageModelChecks(ServingChecks):
    """A character LM (the built-in pipeline's): its tokens are characters. A word-level
    SentencePiece LM: its tokens are pieces, detokenized in the graph."""

    @property
    def pieces(self) -> bool:
        return self.metadata.get("unit") == "piece"

    @functools.cached_property
    def vocab(self) -> set[str]:
        if self.pieces:
            path = tokenizers.model_path(self.run_dir / "vocab", "text")
            return sentencepiece_characters(path)
        assert self.metadata["level"] == "char", "these checks count characters or pieces"
        return set(vectorize.load_vocabulary(self.run_dir / "vocab" / "vocab.txt")[2:])

    def check(self, out: dict, prompts: list[str], max_length: int) -> None:
        check_generation(out, prompts, max_length, self.vocab, self.pieces)

    def odd_text(self) -> dict:
        out = generate(self.loaded, ODD)
        self.check(out, ODD, 8)
        for i, prompt in enumerate(ODD):  # greedy: the same with or without batch company
            assert generate(self.loaded, [prompt])["continuation"][0] == out["continuation"][i]
        self.check(generate(self.loaded, ODD, max_length=0), ODD, 0)
        return out

    def long_input(self) -> tuple[int, dict]:
        # 10,000 characters (a char LM's tokens); 2,000 words, more pieces, for a piece LM
        prompt = ("the movie was good , " * 500)[:10_000]
        assert len(prompt) == 10_000
        out = generate(self.loaded, [prompt], max_length=5)
        self.check(out, [prompt], 5)
        return 1, out

    def batch_of(self, size: int) -> dict:
        prompts = [f"{MIX[i % len(MIX)]} {'the ' * (i % 4)}" for i in range(size)]
        out = generate(self.loaded, prompts, max_length=5)
        self.check(out, prompts, 5)
        for i in range(0, size, 97):
            assert (
                generate(self.loaded, [prompts[i]], max_length=5)["continuation"][0]
                == out["continuation"][i]
            )
        return out

    def concurrent_calls(self) -> list[Callable[[], dict]]:
        return [
            (lambda b=b: generate(self.loaded, b, max_length=5)) for b in concurrent_batches(MIX)
        ]


# task name -> its checks
CHECKS: dict[str, type[ServingChecks]] = {
    "classification": ClassificationChecks,
    "tagging": TaggingChecks,
    "translation": TranslationChecks,
    "language_model": LanguageModelChecks,
}
