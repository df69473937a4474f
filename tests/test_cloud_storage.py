"""Every path may be on a tf.io.gfile file system (gs://, s3://, …): proved on TF's in-process ram:// file system
with a whole create → train → eval → predict → export cycle (and a pretraining one) in this process, nothing on
local disk but the encoder."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf
from absl.testing import flagsaver

from conftest import sentiment_rows, write_csv

from bert_tf import create_tfrecords
from bert_tf import flags as bert_flags
from bert_tf.files import atomic_write
from bert_tf.reports import read_results
from bert_tf.run import ClassifierRun
from bert_tf.run_config import RunConfig


@pytest.fixture(scope="module")
def ram_records(tiny_encoder, tmp_path_factory) -> str:
    local = tmp_path_factory.mktemp("tables")
    for split, count, seed in (("train", 64, 1), ("dev", 20, 2), ("test", 10, 3)):
        tf.io.gfile.copy(write_csv(str(local / f"{split}.csv"), sentiment_rows(count, seed=seed)),
                         f"ram://tables/{split}.csv", overwrite=True)
    bert_flags.define_tfrecord_flags()
    with flagsaver.flagsaver():
        bert_flags.FLAGS.unparse_flags()
        bert_flags.FLAGS(["create_tfrecords", "--train_file=ram://tables/train.csv", "--dev_file=ram://tables/dev.csv",
                          "--test_file=ram://tables/test.csv", "--text_column=text", "--label_column=label",
                          f"--encoder={tiny_encoder}", "--max_seq_length=16", "--output_dir=ram://records"])
        create_tfrecords.main(["create_tfrecords"])
    return "ram://records"


def test_records_are_published_with_metadata_and_no_staging_left(ram_records):
    assert sorted(tf.io.gfile.listdir(ram_records)) == ["eval.tf_record", "metadata.json", "predict.tf_record",
                                                        "train.tf_record"]


def test_a_whole_run_on_ram_storage(ram_records, tiny_encoder):
    out = "ram://runs/tiny"
    config = RunConfig(data_dir=ram_records, output_dir=out, encoder=tiny_encoder, do_train=True, do_eval=True,
                       do_predict=True, do_export=True, calibrate=True, train_batch_size=8, eval_batch_size=8,
                       learning_rate=1e-3, num_train_epochs=2, mixed_precision="none", dropout_rate=0,
                       iterations_per_loop=3, save_checkpoints_steps=5)
    with ClassifierRun(config) as run:
        run.train()
        result, _ = run.evaluate()
        run.predict()
        run.export()
    names = set(tf.io.gfile.listdir(out))
    assert {"checkpoint", "model.ckpt-16.index", "run_config.json", "best", "train", "eval", "eval_results.txt",
            "test_results.tsv", "predictions.tsv", "calibration.json", "export"} <= {n.rstrip("/") for n in names}
    assert "run.lock" not in names and not any(name.startswith(".tmp-") for name in names)
    assert read_results(os.path.join(out, "eval_results.txt"))["eval_accuracy"] == pytest.approx(result["eval_accuracy"])
    assert read_results(os.path.join(out, "best", "eval_results.txt"))["global_step"] in (8, 16)

    # Resuming from ram:// checkpoints: the finished run is not repeated.
    with ClassifierRun(config) as again:
        assert again.train() == 16

    # The export, loaded straight from ram://, serves the predictions the run wrote.
    serve = tf.saved_model.load(os.path.join(out, "export")).signatures["serving_default"]
    texts = [text for text, _ in sentiment_rows(10, seed=3)]
    served = serve(text=tf.constant(texts))["probabilities"].numpy()
    with tf.io.gfile.GFile(os.path.join(out, "test_results.tsv")) as f:
        written = np.array([[float(p) for p in line.split("\t")] for line in f.read().splitlines()])
    assert np.allclose(served, written, atol=1e-5)


def test_atomic_write_to_ram_storage_leaves_only_the_file():
    atomic_write("ram://atomic/result.txt", "a = 1\n")
    atomic_write("ram://atomic/result.txt", "a = 2\n")
    assert tf.io.gfile.listdir("ram://atomic") == ["result.txt"]
    with tf.io.gfile.GFile("ram://atomic/result.txt") as f:
        assert f.read() == "a = 2\n"


def test_the_encoder_cache_on_ram_storage_converts_once_and_loads(monkeypatch):
    """$BERT_TF_HOME=ram://…: the default encoder is converted locally, copied there with its completion marker
    last, then found complete (no second conversion); loaded from there it equals the local cache's encoder."""
    import tensorflow_hub as hub

    from bert_tf.encoders.registry import resolve_encoder

    local = resolve_encoder("default")
    monkeypatch.setenv("BERT_TF_HOME", "ram://bert_tf_home")
    remote = resolve_encoder("default")
    assert remote.encoder.startswith("ram://bert_tf_home/encoders/")
    assert tf.io.gfile.exists(os.path.join(os.path.dirname(remote.encoder), "bert_tf_source.json"))

    def convert_again(*args):
        raise AssertionError("a complete conversion on ram:// was converted again")

    monkeypatch.setattr("bert_tf.encoders.convert.convert", convert_again)
    assert resolve_encoder("default") == remote
    inputs = {"input_word_ids": tf.constant([[101, 7592, 2088, 102]]), "input_mask": tf.ones([1, 4], tf.int32),
              "input_type_ids": tf.zeros([1, 4], tf.int32)}
    expected = hub.load(local.encoder)(inputs)["sequence_output"]
    actual = hub.load(remote.encoder)(inputs)["sequence_output"]
    assert float(tf.reduce_max(tf.abs(expected - actual))) == 0.0


def test_features_are_written_to_ram_storage(tiny_encoder, tmp_path):
    # extract_features' own steps, in this process (ram:// is per process; its flags would clash with
    # create_tfrecords' here).
    from bert_tf.extract_features import prepare_output, write_features
    from bert_tf.features import extract, load_feature_encoder
    from bert_tf.tables import read_text_table

    table = read_text_table(write_csv(str(tmp_path / "texts.csv"), sentiment_rows(6)), "text", [],
                            labels_required=False)
    output = "ram://features/out/vectors.npy"
    prepare_output(output)
    encoder, tokenizer, _ = load_feature_encoder(tiny_encoder, None, None, 16)
    vectors = extract(table.texts, encoder, tokenizer, "mean", [-1], 16, 4)
    write_features(output, vectors, table, "text")
    with tf.io.gfile.GFile(output, "rb") as f:
        assert np.array_equal(np.load(f), vectors)
    assert vectors.shape == (6, 32) and tf.io.gfile.listdir("ram://features/out") == ["vectors.npy"]


def test_pretraining_on_ram_storage(tiny_encoder, tmp_path):
    """create_pretraining_data → run_pretraining → resume → export, every path on ram://; the export, loaded
    from there, is the trained encoder (not the source's weights)."""
    import tensorflow_hub as hub

    from bert_tf.pretraining import PretrainingRun
    from bert_tf.pretraining_config import PretrainingConfig
    from bert_tf.pretraining_data import PretrainingSettings, create_pretraining_data, read_documents

    corpus = "ram://corpus/corpus.txt"
    with tf.io.gfile.GFile(corpus, "w") as f:
        f.write("\n".join(text for text, _ in sentiment_rows(60, seed=5)) + "\n")
    settings = PretrainingSettings(max_seq_length=16, max_predictions_per_seq=3, dupe_factor=1, eval_fraction=0.2)
    create_pretraining_data(read_documents([corpus]), "ram://mlm_records", settings, encoder=tiny_encoder)
    assert not any(name.startswith(".staging") for name in tf.io.gfile.listdir("ram://mlm_records"))

    out = "ram://runs/mlm"
    config = PretrainingConfig(data_dir="ram://mlm_records", output_dir=out, encoder=tiny_encoder, num_train_steps=6,
                               train_batch_size=8, eval_batch_size=8, learning_rate=1e-3, mixed_precision="none",
                               iterations_per_loop=2, save_checkpoints_steps=3)
    with PretrainingRun(config) as run:
        assert run.train() == 6
        result = run.evaluate()
        export = run.export()
    names = {name.rstrip("/") for name in tf.io.gfile.listdir(out)}
    assert {"checkpoint", "model.ckpt-6.index", "run_config.json", "eval_results.txt", "export"} <= names
    assert "run.lock" not in names and not any(name.startswith(".") for name in names)
    for logs in ("train", "eval"):  # ram:// lists no directory that only holds files written by a summary writer
        assert tf.io.gfile.glob(os.path.join(out, logs, "events.out.tfevents.*"))
    assert read_results(os.path.join(out, "eval_results.txt"))["masked_lm_loss"] == pytest.approx(
        result["masked_lm_loss"])
    with PretrainingRun(config) as again:
        assert again.train() == 6

    inputs = {"input_word_ids": tf.constant([[2, 5, 6, 3]]), "input_mask": tf.ones([1, 4], tf.int32),
              "input_type_ids": tf.zeros([1, 4], tf.int32)}
    trained = hub.load(os.path.join(export, "encoder"))(inputs)["sequence_output"]
    source = hub.load(run.encoder.handles.encoder)(inputs)["sequence_output"]
    assert trained.shape == source.shape and float(tf.reduce_max(tf.abs(trained - source))) > 1e-4
