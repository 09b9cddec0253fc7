"""Every exported SavedModel serves odd text, any batch size and concurrent callers.

From the issue: each exported model accepts empty strings, whitespace-only input, 10,000-token
inputs (truncated as configured), emoji/CJK/RTL/zero-width characters and batches of 0, 1 and
1,000; 8 threads x 500 calls on one loaded SavedModel give the same answers as sequential
calls, without errors. Only ``tf.saved_model.load`` and the exported signatures are used, as TF
Serving would. The classifier, tagger and translator are trained for one epoch on a few
examples (their answers need not be good, only well-formed and stable); the LM is conftest's
``trained_lm``.
"""

from __future__ import annotations

import concurrent.futures
import json
import time

import numpy as np
import pytest
import tensorflow as tf

from nlp_rnn import export, inference
from nlp_rnn.config import load_pipeline
from nlp_rnn.data import vectorize
from nlp_rnn.pipeline import run_pipeline
from nlp_rnn.tasks.classification import task as classification

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
TAGGER_MAX_LENGTH = 20
MIX = ["good movie", "", "   ", "😀🎉 日本語", "مرحبا بالعالم", "Peter Blackburn flew to Brussels",
       "not bad at all , i loved it", "e\u0301\u200b"]
THREADS, CALLS_PER_THREAD = 8, 500


def long_text(n: int = 10_000, words=("good", "bad", "not", "movie", "Peter", "Paris", "😀",
                                        "日本")) -> str:
    return " ".join(words[i % len(words)] for i in range(n))


def as_numpy(out: dict) -> dict:
    return {k: v.numpy() for k, v in out.items()}


def decode(values) -> list[str]:
    return [v.decode("utf-8") for v in values]


def run_concurrently(call, inputs: list) -> tuple[list, float]:
    """Call ``call(inputs[k % len(inputs)])`` THREADS x CALLS_PER_THREAD times from 8 threads."""
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(lambda k: (k % len(inputs), call(inputs[k % len(inputs)])),
                                range(THREADS * CALLS_PER_THREAD)))
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


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving_data")
    csv = root / "sentiment.csv"
    csv.write_text("text,label\ngood movie,positive\nbad movie,negative\nnot bad at all,positive\n"
                   "not good,negative\ni loved it,positive\ndull from start to end,negative\n")
    jsonl = root / "ner.jsonl"
    sentences = [("Peter Blackburn flew to Brussels", "B-PER I-PER O O B-LOC"),
                 ("Angela met the EU in Paris .", "B-PER O O B-ORG O B-LOC O"),
                 ("Nothing happened today", "O O O")]
    jsonl.write_text("".join(json.dumps({"tokens": t.split(), "tags": g.split()}) + "\n"
                             for t, g in sentences))
    return root, csv, jsonl


def train_and_load(name: str, overrides: list[str], root):
    config = load_pipeline(name, ["train.epochs=1", *overrides,
                                  f"export.dir={root / 'saved_models'}"],
                           output_dir=str(root / "runs"))
    result = run_pipeline(config, log=lambda line: None)
    return config, result, tf.saved_model.load(str(result.export_path))


@pytest.fixture(scope="module")
def classifier(tiny_data):
    """(config, labels, loaded SavedModel) of the built-in sentiment pipeline on tiny data."""
    root, csv, _ = tiny_data
    config, result, loaded = train_and_load(
        "sentiment", [f"data.train={csv}", f"data.dev={csv}", "model.rnn.units=4",
                      "model.embedding_dim=8", "vectorize.max_length=12"], root / "clf")
    return config, inference.read_metadata(result.export_path)["labels"], loaded


@pytest.fixture(scope="module")
def tagger(tiny_data):
    """(config, IOB2 tag set, loaded SavedModel) of the built-in NER pipeline on tiny data."""
    root, _, jsonl = tiny_data
    config, result, loaded = train_and_load(
        "ner", [f"data.train={jsonl}", f"data.dev={jsonl}", "model.rnn.units=4",
                f"vectorize.max_length={TAGGER_MAX_LENGTH}"], root / "ner")
    return config, set(inference.read_metadata(result.export_path)["tags"]), loaded


@pytest.fixture(scope="module")
def lm(trained_lm):
    """(config, generated-token vocabulary, loaded SavedModel) of conftest's char LM."""
    config, result = trained_lm
    vocab = vectorize.load_vocabulary(result.run_dir / "vocab" / "vocab.txt")
    return config, set(vocab[2:]), tf.saved_model.load(str(result.export_path))


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
        np.testing.assert_allclose(batched["probabilities"][i], alone["probabilities"][0],
                                   rtol=0, atol=1e-5)
        top = np.sort(alone["probabilities"][0])
        if top[-1] - top[-2] > 1e-4:  # no near-tie that float noise could flip
            assert batched["label"][i] == alone["label"][0]


def test_classifier_accepts_odd_text(classifier):
    _, labels, loaded = classifier
    out = classify(loaded, ODD)
    check_classifier_output(out, len(ODD), labels)
    # empty and whitespace-only texts are one out-of-vocabulary token, so they agree
    for i in (1, 2):
        np.testing.assert_array_equal(out["probabilities"][i], out["probabilities"][0])
    assert_rows_match_alone(loaded, ODD, out, range(len(ODD)))


def test_classifier_truncates_a_10000_token_text_to_max_length(classifier):
    config, labels, loaded = classifier
    text = long_text(words=("good", "bad", "not", "movie", "日本", "!"))  # each one token
    n = config.vectorize.max_length
    assert config.vectorize.keep == "first"
    first_n = " ".join(text.split()[:n])
    one_token = "x" * 10_000  # a single 10,000-character token
    out = classify(loaded, [text, first_n, one_token])
    check_classifier_output(out, 3, labels)
    np.testing.assert_allclose(out["probabilities"][0], out["probabilities"][1], atol=1e-6)


@pytest.mark.parametrize("size", [0, 1, 1000])
def test_classifier_batch_sizes(classifier, size):
    _, labels, loaded = classifier
    texts = [f"{MIX[i % len(MIX)]} {'not ' * (i % 4)}good" for i in range(size)]
    out = classify(loaded, texts)
    check_classifier_output(out, size, labels)
    assert_rows_match_alone(loaded, texts, out, range(0, size, 97))
    if size == 1000:  # and a batch of 1,000 identical texts is 1,000 identical answers
        same = classify(loaded, [MIX[6]] * size)["probabilities"]
        np.testing.assert_allclose(same, np.broadcast_to(same[0], same.shape), atol=1e-6)


def test_classifier_with_a_conv_front_accepts_an_empty_batch(tmp_path):
    """TF's CPU convolution returns its input unchanged on a batch of 0; serving must not care."""
    config = load_pipeline("sentiment", ["vectorize.max_length=12", "model.rnn.units=4",
                                         "model.conv={filters: 4, kernel_size: 3, pool_size: 2}"])
    text = vectorize.build_text_vectorizer("lower_split_punct", 50, ["movie", "bad", "not"])
    labels = ["negative", "positive"]
    vecs = classification.Vectorizers(text, labels, vectorize.build_label_lookup(labels))
    model = classification.build_model(config, vecs)
    path = export.export_saved_model(
        model, classification.serving_endpoints(model, vecs, config), [vecs.text],
        str(tmp_path), "conv", {"text": tf.constant(["x"])}, {"task": "classification"})
    loaded = tf.saved_model.load(str(path))
    for texts in ([], ["not bad"], ODD):
        check_classifier_output(classify(loaded, texts), len(texts), labels)


def test_classifier_concurrent_calls_match_sequential_ones(classifier):
    _, _, loaded = classifier
    batches = concurrent_batches(MIX)
    sequential = [classify(loaded, batch) for batch in batches]
    results, seconds = run_concurrently(lambda batch: classify(loaded, batch), batches)
    print(f"\nclassifier: {len(results)} calls on {THREADS} threads in {seconds:.1f} s")
    for k, out in results:
        assert_same(out, sequential[k])


# ---- tagging -------------------------------------------------------------------------------


def tag_text(loaded, texts: list[str]) -> dict:
    return as_numpy(loaded.signatures["serving_default"](text=tf.constant(texts, tf.string)))


def tag_tokens(loaded, sentences: list[list[str]], width: int | None = None) -> dict:
    width = max([len(s) for s in sentences] + [0]) if width is None else width
    padded = tf.constant([s + [""] * (width - len(s)) for s in sentences], tf.string,
                         shape=[len(sentences), width])
    return as_numpy(loaded.signatures["tag_tokens"](tokens=padded))


def check_tagger_output(out: dict, sentences: list[list[str]], max_length: int,
                        tag_set: set[str]) -> None:
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


def test_tagger_accepts_odd_text_and_pre_split_tokens_agree(tagger):
    config, tag_set, loaded = tagger
    sentences = [text.split() for text in ODD]
    assert [len(s) for s in sentences[:3]] == [0, 0, 0]
    out = tag_text(loaded, ODD)
    check_tagger_output(out, sentences, config.vectorize.max_length, tag_set)
    assert_same(tag_tokens(loaded, sentences), out)
    for i, text in enumerate(ODD):  # padding and batch company do not change the tags
        alone = tag_text(loaded, [text])
        width = alone["tags"].shape[1]
        np.testing.assert_array_equal(out["tags"][i, :width], alone["tags"][0])


def test_tagger_truncates_10000_tokens_to_max_length(tagger):
    config, tag_set, loaded = tagger
    n = config.vectorize.max_length
    assert n == TAGGER_MAX_LENGTH
    sentence = long_text().split()
    assert len(sentence) == 10_000
    out = tag_text(loaded, [" ".join(sentence)])
    check_tagger_output(out, [sentence], n, tag_set)
    assert out["lengths"].tolist() == [n] and out["tags"].shape == (1, n)
    assert_same(tag_tokens(loaded, [sentence]), out)
    np.testing.assert_array_equal(tag_text(loaded, [" ".join(sentence[:n])])["tags"], out["tags"])
    long_word = tag_text(loaded, ["x" * 10_000 + " Paris"])  # a 10,000-character token
    check_tagger_output(long_word, [["x" * 10_000, "Paris"]], n, tag_set)


@pytest.mark.parametrize("size", [0, 1, 1000])
def test_tagger_batch_sizes(tagger, size):
    config, tag_set, loaded = tagger
    texts = [f"{MIX[i % len(MIX)]} {'in Paris ' * (i % 4)}" for i in range(size)]
    sentences = [t.split() for t in texts]
    out = tag_text(loaded, texts)
    check_tagger_output(out, sentences, config.vectorize.max_length, tag_set)
    assert_same(tag_tokens(loaded, sentences), out)
    for i in range(0, size, 97):
        alone = tag_text(loaded, [texts[i]])
        np.testing.assert_array_equal(out["tags"][i, :alone["tags"].shape[1]], alone["tags"][0])
    if size == 0:  # tag_tokens also takes [0, 0] and [0, T] batches
        for width in (0, 5):
            check_tagger_output(tag_tokens(loaded, [], width), [], config.vectorize.max_length,
                                tag_set)


def test_tagger_concurrent_calls_match_sequential_ones(tagger):
    _, _, loaded = tagger
    batches = concurrent_batches(MIX)
    # serving_default on each batch, and tag_tokens on the same sentences pre-split
    calls = [(lambda b=b: tag_text(loaded, b)) for b in batches] + [
        (lambda b=b: tag_tokens(loaded, [t.split() for t in b])) for b in batches]
    sequential = [call() for call in calls]
    results, seconds = run_concurrently(lambda call: call(), calls)
    print(f"\ntagger: {len(results)} calls on {THREADS} threads in {seconds:.1f} s")
    for k, out in results:
        assert_same(out, sequential[k])


# ---- language model --------------------------------------------------------------------------


def generate(loaded, prompts: list[str], max_length: int = 8) -> dict:
    out = loaded.signatures["serving_default"](
        prompt=tf.constant(prompts, tf.string), max_length=tf.constant(max_length, tf.int32),
        temperature=tf.constant(0.0, tf.float32), top_k=tf.constant(0, tf.int32))
    return as_numpy(out)


def check_generation(out: dict, prompts: list[str], max_length: int, vocab: set[str]) -> None:
    n = len(prompts)
    assert out["continuation"].shape == (n,) and out["text"].shape == (n,)
    assert out["continuation"].dtype == object and out["text"].dtype == object
    for prompt, continuation, text in zip(prompts, decode(out["continuation"]),
                                          decode(out["text"])):
        assert len(continuation) == max_length  # one character per step, never padding/OOV
        assert set(continuation) <= vocab
        assert text == prompt + continuation


def test_language_model_accepts_odd_prompts(lm):
    _, vocab, loaded = lm
    out = generate(loaded, ODD)
    check_generation(out, ODD, 8, vocab)
    for i, prompt in enumerate(ODD):  # greedy: the same with or without batch company
        assert generate(loaded, [prompt])["continuation"][0] == out["continuation"][i]
    check_generation(generate(loaded, ODD, max_length=0), ODD, 0, vocab)


def test_language_model_continues_a_10000_character_prompt(lm):
    _, vocab, loaded = lm
    prompt = ("the movie was good , " * 500)[:10_000]
    assert len(prompt) == 10_000  # a char LM's tokens are characters
    check_generation(generate(loaded, [prompt], max_length=5), [prompt], 5, vocab)


@pytest.mark.parametrize("size", [0, 1, 1000])
def test_language_model_batch_sizes(lm, size):
    _, vocab, loaded = lm
    prompts = [f"{MIX[i % len(MIX)]} {'the ' * (i % 4)}" for i in range(size)]
    out = generate(loaded, prompts, max_length=5)
    check_generation(out, prompts, 5, vocab)
    for i in range(0, size, 97):
        assert generate(loaded, [prompts[i]], max_length=5)["continuation"][0] == \
            out["continuation"][i]


def test_language_model_concurrent_calls_match_sequential_ones(lm):
    _, _, loaded = lm
    batches = concurrent_batches(MIX)
    sequential = [generate(loaded, batch, max_length=5) for batch in batches]
    results, seconds = run_concurrently(lambda batch: generate(loaded, batch, max_length=5),
                                        batches)
    print(f"\nlanguage model: {len(results)} calls (max_length 5) on {THREADS} threads in "
          f"{seconds:.1f} s")
    for k, out in results:
        assert_same(out, sequential[k])


# ---- translation ---------------------------------------------------------------------------

TRANSLATOR_SOURCE_MAX_LENGTH = 16


@pytest.fixture(scope="module")
def translator(tmp_path_factory):
    """(config, target vocabulary, loaded SavedModel) of the built-in translation pipeline,
    one epoch on the small dev split of the dates corpus."""
    root = tmp_path_factory.mktemp("translator")
    config, result, loaded = train_and_load(
        "translation", ["data.train=builtin:dates:dev", "model.encoder.units=8",
                        "model.decoder.units=16", "decoding.dev_sample=20",
                        f"vectorize.source_max_length={TRANSLATOR_SOURCE_MAX_LENGTH}"], root)
    vocab = vectorize.load_vocabulary(result.run_dir / "vocab" / "target_vocab.txt")
    return config, set(vocab) | {"[UNK]"}, loaded


def translate(loaded, texts: list[str], beam_width: int | None = None) -> dict:
    if beam_width is None:
        return as_numpy(loaded.signatures["serving_default"](text=tf.constant(texts, tf.string)))
    out = loaded.signatures["translate"](text=tf.constant(texts, tf.string),
                                         beam_width=tf.constant(beam_width, tf.int32),
                                         length_penalty=tf.constant(0.6, tf.float32))
    return as_numpy(out)


def check_translations(out: dict, texts: list[str], vocab: set[str], config) -> None:
    dec = config.decoding
    assert out["translation"].shape == (len(texts),) and out["translation"].dtype == object
    for text, translation in zip(texts, decode(out["translation"])):
        words = translation.split()
        assert set(words) <= vocab  # known tokens only, never [START]/[END] or padding
        assert not {"[START]", "[END]", ""} & set(words)
        source_tokens = max(1, min(len(text.split()), config.vectorize.source_max_length))
        assert len(words) <= np.ceil(dec.max_length_ratio * 2 * source_tokens) + \
            dec.max_length_offset  # (punctuation split can double the source tokens)


def test_translator_accepts_odd_text(translator):
    config, vocab, loaded = translator
    for width in (None, 1):
        out = translate(loaded, ODD, width)
        check_translations(out, ODD, vocab, config)
        for i, text in enumerate(ODD):  # the same with or without batch company
            assert translate(loaded, [text], width)["translation"][0] == out["translation"][i]


def test_translator_truncates_a_10000_token_text(translator):
    config, vocab, loaded = translator
    words = long_text().split()
    out = translate(loaded, [" ".join(words)])
    check_translations(out, [" ".join(words)], vocab, config)
    cut = " ".join(words[:TRANSLATOR_SOURCE_MAX_LENGTH])
    assert translate(loaded, [cut])["translation"][0] == out["translation"][0]


@pytest.mark.parametrize("size", [0, 1, 1000])
def test_translator_batch_sizes(translator, size):
    config, vocab, loaded = translator
    texts = [f"{MIX[i % len(MIX)]} {'the 2nd of may ' * (i % 3)}" for i in range(size)]
    for width in (None, 1):
        out = translate(loaded, texts, width)
        check_translations(out, texts, vocab, config)
        for i in range(0, size, 199):
            assert translate(loaded, [texts[i]], width)["translation"][0] == \
                out["translation"][i]


def test_translator_concurrent_calls_match_sequential_ones(translator):
    _, _, loaded = translator
    batches = concurrent_batches(MIX)
    sequential = [translate(loaded, batch) for batch in batches]
    results, seconds = run_concurrently(lambda batch: translate(loaded, batch), batches)
    print(f"\ntranslator: {len(results)} beam-search calls on {THREADS} threads in "
          f"{seconds:.1f} s")
    for k, out in results:
        assert_same(out, sequential[k])
