r"""Fine-tunes a TF Hub BERT encoder on TFRecords from create_tfrecords; evaluates, predicts and exports.

  python -m bert_tf.run_classifier --data_dir=data/bbc_news --output_dir=runs/bbc_news \
    --do_train --do_eval --do_predict --do_export

Runs on one CPU/GPU, several GPUs, several machines (TF_CONFIG) or a TPU (--use_tpu --tpu_name=…) with the
same code. Leaves in --output_dir: model.ckpt-N checkpoints, train/ and eval/ TensorBoard logs,
eval_results.txt, test_results.tsv, predictions.tsv and export/ (a SavedModel serving raw strings).
"""

from __future__ import annotations

import json
import os

import keras
import tensorflow as tf
from absl import app, logging

from bert_tf import distribution, evaluation, tfrecords
from bert_tf import flags as bert_flags
from bert_tf.encoders.hub_layers import HubEncoder
from bert_tf.encoders.loading import encoder_info
from bert_tf.errors import InputError, exits_cleanly_on_bad_input
from bert_tf.files import atomic_write
from bert_tf.model import BertClassifier
from bert_tf.optimization import create_optimizer
from bert_tf.tokenization import load_vocab, vocab_digest
from bert_tf.training import Trainer, TrainConfig, TrainingDiverged, WorkerLost, restore_latest

FLAGS = bert_flags.FLAGS
RUN_FILE = "run_config.json"


def choose_pooling(pooling: str, encoder: str) -> str:
    # Measured (bench/pooling.py): on GoEmotions all-MiniLM-L6-v2 learns through mean pooling (dev macro AUC
    # 0.57) and not through its pooler, which its sentence-embedding training never updated (0.50, the prior);
    # on SST-2 and AG News the two tie. BERTs published with a trained pooler use it, as google-research/bert does.
    if pooling != "auto":
        return pooling
    return "mean" if encoder == "default" else "pooled"


def profile_steps(value: list[str] | None) -> tuple[int, int] | None:
    if not value:
        return None
    try:
        start, end = (int(part) for part in value)
    except ValueError:
        start = end = -1
    if not 0 <= start < end:
        raise InputError(f"'{','.join(value)}' is not START,END", flag="profile_steps", hint="e.g. --profile_steps=20,25")
    return start, end


def check_output_dir(output_dir: str, run: dict, overwrite: bool, chief: bool) -> None:
    """Refuses to mix a different task or encoder into checkpoints of an earlier run in the same directory.

    With overwrite, the chief removes the earlier run's checkpoints and logs, so training starts afresh.
    """
    path = os.path.join(output_dir, RUN_FILE)
    if overwrite and chief:
        for name in tf.io.gfile.listdir(output_dir):
            if name.startswith(("model.ckpt-", "checkpoint", RUN_FILE, evaluation.THRESHOLDS_FILE)) or name.rstrip("/") in ("best", "train", "eval"):
                target = os.path.join(output_dir, name.rstrip("/"))
                if tf.io.gfile.isdir(target):
                    tf.io.gfile.rmtree(target)
                else:
                    tf.io.gfile.remove(target)
    elif not overwrite and tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as f:
            previous = json.load(f)
        for key in ("encoder", "label_names", "task_type", "max_seq_length", "pooling"):
            if previous.get(key) != run.get(key):
                raise InputError(
                    f"holds a run with another {key} ({previous.get(key)!r}, now {run.get(key)!r})",
                    file=output_dir, flag="output_dir", hint="use a new --output_dir, or --overwrite_output_dir",
                )


def build(strategy: tf.distribute.Strategy, encoder_handle: str, metadata: dict, pooling: str, total_steps: int,
          precision: str):
    """The classifier and its optimizer, created inside the strategy's scope (where variables are placed)."""
    with strategy.scope():
        keras.utils.set_random_seed(FLAGS.seed)
        encoder = HubEncoder(encoder_handle, trainable=not FLAGS.freeze_encoder, name="encoder")
        model = BertClassifier(encoder, metadata["num_labels"], pooling=pooling, dropout_rate=FLAGS.dropout_rate)
        optimizer = create_optimizer(
            FLAGS.learning_rate, total_steps, int(total_steps * FLAGS.warmup_proportion), FLAGS.weight_decay,
            gradient_accumulation_steps=FLAGS.gradient_accumulation_steps, loss_scaling=precision == "fp16",
        )
    return model, optimizer


@exits_cleanly_on_bad_input
def main(argv):
    if len(argv) > 1:
        raise InputError(f"unexpected argument '{argv[1]}'", hint="flags take the form --name=value")
    if not (FLAGS.do_train or FLAGS.do_eval or FLAGS.do_predict or FLAGS.do_export):
        raise InputError("nothing to do", hint="pass at least one of --do_train, --do_eval, --do_predict, --do_export")
    for name in ("data_dir", "output_dir"):
        if not FLAGS[name].value:
            raise InputError("is required", flag=name)
    if FLAGS.num_cpu_replicas > 1:
        distribution.use_logical_cpus(FLAGS.num_cpu_replicas)
    metadata = tfrecords.read_metadata(FLAGS.data_dir)
    for wanted, split, size in ((FLAGS.do_eval, "dev", "eval_data_size"), (FLAGS.do_predict, "test", "test_data_size")):
        if wanted and not metadata.get(size):
            raise InputError(f"the records have no {split} split", file=FLAGS.data_dir,
                             flag="do_eval" if split == "dev" else "do_predict", hint=f"write them with --{split}_file")
    if FLAGS.tune_thresholds and (metadata["task_type"] != "multilabel" or not FLAGS.do_eval):
        raise InputError("tunes multi-label thresholds on dev: it needs multi-label records and --do_eval",
                         flag="tune_thresholds")
    windowed = metadata.get("long_document") == "sliding_window"
    if windowed and FLAGS.aggregation == "vote" and metadata["task_type"] == "regression":
        raise InputError("vote needs classes", flag="aggregation", hint="aggregate regression windows with mean or max")
    if FLAGS["aggregation"].present and not windowed:
        logging.warning("--aggregation applies only to records written with --long_document=sliding_window")
    # google-research/bert's --use_tpu alone selects the TPU; --tpu_name says which one.
    strategy_name = "tpu" if FLAGS.use_tpu else FLAGS.distribution_strategy
    strategy = distribution.make_strategy(strategy_name, FLAGS.num_gpus, FLAGS.tpu_name, FLAGS.tpu_zone,
                                          FLAGS.gcp_project)
    precision = distribution.configure_precision(FLAGS.mixed_precision, strategy)
    logging.info("Strategy %s with %d replicas, precision %s", type(strategy).__name__, strategy.num_replicas_in_sync, precision)

    info = encoder_info(FLAGS.encoder)
    if metadata.get("vocab_sha256") and FLAGS.vocab_file is None:
        if vocab_digest(load_vocab(info.vocab_file)) != metadata["vocab_sha256"]:
            raise InputError(
                f"the records were tokenized with another vocab than --encoder={FLAGS.encoder}'s",
                file=FLAGS.data_dir, flag="encoder", hint="rewrite the records with the same --encoder",
            )
    pooling = choose_pooling(FLAGS.pooling, FLAGS.encoder)
    chief = distribution.is_chief(strategy)
    config = TrainConfig(
        data_dir=FLAGS.data_dir, output_dir=FLAGS.output_dir, global_batch_size=FLAGS.train_batch_size,
        num_train_epochs=FLAGS.num_train_epochs, seed=FLAGS.seed, steps_per_loop=FLAGS.iterations_per_loop,
        save_checkpoints_steps=FLAGS.save_checkpoints_steps, keep_checkpoint_max=FLAGS.keep_checkpoint_max,
        is_chief=chief, pad_multiple=distribution.pad_multiple(strategy),
        batches_per_bucket_window=FLAGS.bucket_window, profile_steps=profile_steps(FLAGS.profile_steps),
        hparams={"encoder": FLAGS.encoder, "pooling": pooling, "learning_rate": FLAGS.learning_rate,
                 "train_batch_size": FLAGS.train_batch_size, "num_train_epochs": FLAGS.num_train_epochs,
                 "max_seq_length": metadata["max_seq_length"], "precision": precision,
                 "replicas": strategy.num_replicas_in_sync},
    )
    run = {"encoder": FLAGS.encoder, "label_names": metadata["label_names"], "task_type": metadata["task_type"],
           "max_seq_length": metadata["max_seq_length"], "pooling": pooling}
    try:
        tf.io.gfile.makedirs(FLAGS.output_dir)
    except (tf.errors.OpError, OSError) as error:
        raise InputError(f"cannot create it ({error})", flag="output_dir") from None
    check_output_dir(FLAGS.output_dir, run, FLAGS.overwrite_output_dir, chief)
    if chief:
        atomic_write(os.path.join(FLAGS.output_dir, RUN_FILE), json.dumps(run, indent=2) + "\n")
        stale_thresholds = os.path.join(FLAGS.output_dir, evaluation.THRESHOLDS_FILE)
        if FLAGS.do_train and tf.io.gfile.exists(stale_thresholds):  # tuned for the weights training replaces
            tf.io.gfile.remove(stale_thresholds)
    total_steps = config.total_steps(metadata) if FLAGS.do_train else 1
    model, optimizer = build(strategy, info.handles.encoder, metadata, pooling, total_steps, precision)
    trainer = Trainer(strategy, model, optimizer, metadata, config)
    if FLAGS.init_checkpoint and not trainer.restore_from.latest_checkpoint:
        tf.train.Checkpoint(model=model).restore(FLAGS.init_checkpoint).expect_partial()
    predictor = evaluation.Predictor(strategy, model, metadata, FLAGS.eval_batch_size, config.pad_multiple,
                                     FLAGS.aggregation, FLAGS.bucket_window)
    keep_best = KeepBest(predictor, model, metadata, chief) if FLAGS.do_train and FLAGS.do_eval else None
    if FLAGS.do_train:
        try:
            trainer.train(on_epoch_end=keep_best)
        except (TrainingDiverged, WorkerLost) as error:
            raise InputError(str(error)) from None
    elif restore_latest(trainer.checkpoint, trainer.restore_from) is None and not FLAGS.init_checkpoint:
        logging.warning("No checkpoint in %s: evaluating the encoder with an untrained head.", FLAGS.output_dir)
    step = trainer.global_step

    if FLAGS.do_eval:
        if keep_best and keep_best.last_step == step:  # the last epoch's evaluation saw these very weights
            predictions, result = keep_best.last_predictions, keep_best.last_result
        else:
            predictions = predictor.predict(FLAGS.data_dir, "dev")
            result = evaluation.compute_metrics(predictions, metadata)
            result["global_step"] = step
        thresholds = None
        if FLAGS.tune_thresholds:
            thresholds = evaluation.tune_thresholds(predictions)
            # Scored on the very examples they were tuned on: optimistic, hence the _tuned names; the test
            # split's scores (--do_predict) are the honest figure.
            tuned = evaluation.compute_metrics(predictions, metadata, thresholds)
            result.update({f"{key}_tuned": tuned[key] for key in ("eval_micro_f1", "eval_macro_f1", "eval_exact_match")})
        if chief:
            if thresholds is not None:
                evaluation.save_thresholds(FLAGS.output_dir, thresholds, metadata)
            report = evaluation.write_eval_results(FLAGS.output_dir, result, predictions, metadata, thresholds)
            write_eval_summaries(FLAGS.output_dir, result, step)
            print("***** Eval results *****")
            for key in sorted(result):
                print(f"  {key} = {result[key]}")
            if report:
                print(report)
    thresholds = evaluation.load_thresholds(FLAGS.output_dir, metadata)
    if FLAGS.do_predict:
        predictions = predictor.predict(FLAGS.data_dir, "test")
        if chief:
            texts = tfrecords.read_texts(FLAGS.data_dir, "test")
            evaluation.write_predictions(FLAGS.output_dir, predictions, metadata, texts, thresholds)
            print(f"Wrote {len(predictions.example_ids)} predictions to {os.path.join(FLAGS.output_dir, 'test_results.tsv')}")
            if metadata.get("test_has_labels"):
                # The test split came with labels (BBC News, MRPC, …): score it too, in its own file.
                result = {key.replace("eval_", "test_", 1): value
                          for key, value in evaluation.compute_metrics(predictions, metadata, thresholds).items()}
                result["global_step"] = step
                atomic_write(os.path.join(FLAGS.output_dir, "test_eval_results.txt"), evaluation.results_text(result))
                print("***** Test results *****")
                for key in sorted(result):
                    print(f"  {key} = {result[key]}")
    if FLAGS.do_export and chief:
        from bert_tf.export import export_classifier

        lower = info.do_lower_case if FLAGS.do_lower_case is None else FLAGS.do_lower_case
        vocab = FLAGS.vocab_file or info.vocab_file
        path = export_classifier(model, vocab, lower, metadata, os.path.join(FLAGS.output_dir, "export"),
                                 FLAGS.aggregation, thresholds)
        print(f"Exported the serving SavedModel to {path}")
    print(f"TensorBoard: tensorboard --logdir {FLAGS.output_dir}")


class KeepBest:
    """After each epoch: evaluates on dev, logs eval/ summaries, and keeps the best weights in best/."""

    def __init__(self, predictor: evaluation.Predictor, model: keras.Model, metadata: dict, chief: bool):
        self.predictor, self.model, self.metadata, self.chief = predictor, model, metadata, chief
        self.metric = evaluation.primary_metric(metadata["task_type"])
        self.last_step = self.last_predictions = self.last_result = None
        self.directory = os.path.join(FLAGS.output_dir, "best")
        self.best = self._recorded_best()

    def _recorded_best(self) -> float:
        path = os.path.join(self.directory, "eval_results.txt")
        if not tf.io.gfile.exists(path):
            return float("-inf")
        with tf.io.gfile.GFile(path) as f:
            results = dict(line.split(" = ", 1) for line in f.read().splitlines() if " = " in line)
        return float(results.get(self.metric, "-inf"))

    def __call__(self, step: int) -> None:
        predictions = self.predictor.predict(FLAGS.data_dir, "dev")
        result = evaluation.compute_metrics(predictions, self.metadata)
        result["global_step"] = step
        self.last_step, self.last_predictions, self.last_result = step, predictions, result
        logging.info("Step %d: %s = %.4f", step, self.metric, result[self.metric])
        if not self.chief:
            return
        write_eval_summaries(FLAGS.output_dir, result, step, image=False)
        if result[self.metric] > self.best:
            self.best = result[self.metric]
            tf.io.gfile.makedirs(self.directory)
            tf.train.Checkpoint(model=self.model).write(os.path.join(self.directory, "model.ckpt"))
            atomic_write(os.path.join(self.directory, "eval_results.txt"), evaluation.results_text(result))


def write_eval_summaries(output_dir: str, result: dict, step: int, image: bool = True) -> None:
    writer = tf.summary.create_file_writer(os.path.join(output_dir, "eval"))
    with writer.as_default():
        for key, value in result.items():
            if isinstance(value, float):
                tf.summary.scalar(key.removeprefix("eval_"), value, step=step)
        png = os.path.join(output_dir, "confusion_matrix.png")
        if image and tf.io.gfile.exists(png):
            with tf.io.gfile.GFile(png, "rb") as f:
                image = tf.io.decode_png(f.read(), channels=4)
            tf.summary.image("confusion_matrix", image[None], step=step)
    writer.flush()


if __name__ == "__main__":
    bert_flags.define_classifier_flags()
    app.run(main)
