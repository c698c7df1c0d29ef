"""The demo's language section in its quick form (a few training steps), its baselines on the real corpus, and the
topic classification data built from the standard library's documentation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from perceiver_io import from_pretrained
from perceiver_io.data.stdlib_topics import (
    TOPIC_FAMILIES,
    StdlibTopicsDataModule,
    topic_chunks,
    topic_of,
)
from perceiver_io.demo import SECTIONS
from perceiver_io.demo import language as section
from perceiver_io.fill_mask import fill_mask

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("language")
    result = section.run(out, quick=True)
    return out, result


def test_section_is_registered_after_flow():
    names = [s.name for s in SECTIONS]
    assert "language" in names and names.index("language") == names.index("flow") + 1
    assert section.SECTION.budget_s == 170


def test_quick_run_writes_its_files(quick_run):
    out, result = quick_run
    for name in ("learning_curves.png", "fill_mask.png"):
        assert (out / name).read_bytes().startswith(PNG_MAGIC), name
    assert [p.path for p in result.pictures] == ["learning_curves.png", "fill_mask.png"]
    for name in ("mlm_model/config.json", "mlm_model/model.safetensors", "classifier_model/config.json",
                 "classifier_model/model.safetensors", "logs/mlm/metrics.csv", "logs/finetune_pretrained/metrics.csv",
                 "logs/finetune_scratch/metrics.csv"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert len(result.rows) == 7 and all(len(row) == len(result.columns) for row in result.rows)
    json.dumps(result.to_dict())  # serialisable, as the runner writes it


def test_quick_run_metrics_and_baselines(quick_run):
    _, result = quick_run
    m = result.metrics
    assert m["reloaded_predictions_identical"] is True
    mlm = m["mlm"]
    assert mlm["steps"] == section.QUICK_STEPS and mlm["test_windows"] == section.QUICK_TEST_WINDOWS
    assert mlm["test_masked_bytes"] > 300 and 0 < mlm["test_mask_token_bytes"] < mlm["test_masked_bytes"]
    for key in ("test_accuracy", "test_accuracy_mask_token"):
        assert set(mlm[key]) == {"model", "bigram", "most_frequent"}
    # The baselines are computed on the real corpus even in quick mode: 'e' is about a tenth of the masked bytes,
    # and the neighbouring bytes help.
    assert mlm["most_frequent_byte"] == "e"
    for accuracy in (mlm["test_accuracy"], mlm["validation_baselines"]):
        assert 0.05 < accuracy["most_frequent"] < 0.30
        assert accuracy["bigram"] > accuracy["most_frequent"]
    topics = m["topics"]
    assert topics["classes"] == list(TOPIC_FAMILIES)
    assert set(topics["test_accuracy"]) == {"pretrained", "scratch", "majority", "ngram_logistic_regression"}
    assert 0.7 < topics["test_accuracy"]["ngram_logistic_regression"] <= 1.0  # a real baseline, even in quick mode
    assert 0.2 < topics["test_accuracy"]["majority"] < 0.45
    for run in topics["models"].values():
        assert run["steps"] == section.QUICK_STEPS
    # init_from loads the whole pre-trained encoder: only the class query and the head are new
    assert topics["models"]["pretrained"]["reinitialised"] == [
        "decoder.output.bias", "decoder.output.weight", "decoder.query.embeddings"]
    assert topics["models"]["scratch"]["reinitialised"] == []
    assert len(m["fill_mask"]) == section.FILL_MASK_EXAMPLES


def test_reloaded_models_reproduce_the_runs_predictions(quick_run):
    out, result = quick_run
    mlm = from_pretrained(out / "mlm_model").eval()
    for example in result.metrics["fill_mask"]:
        assert fill_mask(mlm, example["masked"], top_k=1).filled_text == example["filled"]
    classifier = from_pretrained(out / "classifier_model").eval()
    data = StdlibTopicsDataModule(**section.TOPICS_DATA)
    predicted, labels = section._classify(classifier, data.test_dataloader())
    accuracy = float((predicted == labels).float().mean())
    assert round(accuracy, 4) == result.metrics["topics"]["test_accuracy"]["pretrained"]


def test_topic_families_are_disjoint_and_the_splits_deterministic():
    modules = [m for family in TOPIC_FAMILIES.values() for m in family]
    assert len(modules) == len(set(modules))
    chunks = {split: topic_chunks(split) for split in ("train", "validation", "test")}
    again = topic_chunks("test")
    assert np.array_equal(again.ids, chunks["test"].ids) and np.array_equal(again.labels, chunks["test"].labels)
    assert again.names == chunks["test"].names
    names = {split: set(c.names) for split, c in chunks.items()}
    assert not names["train"] & names["test"] and not names["train"] & names["validation"]
    assert not names["validation"] & names["test"]
    for c in chunks.values():
        assert all(topic_of(n) == label for n, label in zip(c.names, c.labels.tolist()))
        counts = c.class_counts()
        assert min(counts) > 0 and max(counts) < 0.45 * len(c)  # every topic present, none dominant
        assert c.ids.shape[1] == 256 and c.ids.dtype == np.int64 and int(c.ids.max()) < 262
        assert max(c.chunk_index) == 3  # at most 4 chunks per document
    assert topic_of("json.dumps") == topic_of("csv.reader") != topic_of("os.path.join")
    assert topic_of("pydoc_data.topics.assert") == list(TOPIC_FAMILIES).index("language and built-ins")
    assert topic_of("collections.OrderedDict") is None


def test_topic_data_module_batches():
    data = StdlibTopicsDataModule(max_seq_len=64, max_chunks_per_document=1, batch_size=8, seed=3)
    batch = next(iter(data.train_dataloader()))
    assert batch["input_ids"].shape == (8, 64) and batch["labels"].shape == (8,)
    assert torch.equal(batch["attention_mask"], (batch["input_ids"] != 0).long())
    assert torch.equal(next(iter(data.train_dataloader()))["idx"], batch["idx"])  # seeded shuffle
    text = data.chunks["train"]
    first = text.ids[0][: text.lengths[0]] - 6
    assert bytes(first.astype(np.uint8)).decode("utf-8", errors="replace")  # bytes + 6, as the MLM data
    assert data.num_classes == 5 and data.vocab_size == 262
    with pytest.raises(ValueError, match="max_seq_len"):
        StdlibTopicsDataModule(max_seq_len=0)


def test_bigram_baseline_on_a_tiny_corpus():
    ids = lambda text: np.frombuffer(text.encode(), dtype=np.uint8).astype(np.int64) + 6  # noqa: E731
    windows = np.stack([ids("ab ab ab ac"), ids("xb xb zzzz ")])
    unigram, bigram = section.byte_counts(windows)
    assert unigram[ord("b")] == 5 and unigram[ord(" ")] == 6 and bigram[ord("a"), ord("b")] == 3
    assert section.most_frequent_byte(unigram) == ord("b")  # whitespace is never a candidate
    left = np.array([ids("a")[0], ids("x")[0], 3, 3, ids("z")[0]])
    right = np.array([3, ids(" ")[0], ids("c")[0], 0, 3])
    predicted = section.byte_baselines(unigram, bigram, left, right)
    # after 'a': 'b' (3 of 4); between 'x' and ' ': 'b'; before 'c' (left hidden): P(b) P(c | b) is largest for
    # 'a', the only byte seen before 'c'; both neighbours hidden: the most frequent byte; after 'z': 'z'
    assert [chr(i - 6) for i in predicted["bigram"]] == ["b", "b", "a", "b", "z"]
    assert set(predicted["most_frequent"].tolist()) == {ord("b") + 6}


def test_fill_mask_sentences_mask_single_letters_deterministically():
    texts = ["Return the number of items in the container object. More text follows here.",
             "This function opens the named file and returns a stream.",
             "short.", "Another sentence about sockets and their buffers.",
             "A sentence that is far too long to fit in one of the demo's pre-training windows of bytes."]
    first = section.fill_mask_sentences(texts, 3, seed=0)
    assert first == section.fill_mask_sentences(texts, 3, seed=0) and len(first) == 3
    assert first != section.fill_mask_sentences(texts, 3, seed=1)
    for sentence, spans in first:
        assert 30 <= len(sentence) <= section.WINDOW and sentence.endswith(".")
        letters = sum(c.isalpha() for c in sentence[1:])
        assert len(spans) == max(2, round(0.15 * letters))
        starts = [start for start, _ in spans]
        assert starts == sorted(starts) and all(b - a > 1 for a, b in zip(starts, starts[1:]))  # never adjacent
        for start, end in spans:
            assert end == start + 1 and start > 0 and sentence[start].isalpha()
