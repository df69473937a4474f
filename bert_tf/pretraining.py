"""Further masked-LM pretraining of an encoder as plain steps over one PretrainingConfig: validate → build →
train → evaluate → export.

The encoder (HubEncoder, trainable) gets BERT's masked-LM head (encoders/masked_lm.py), with the source's
pretrained head weights when the encoder has them (`mlm_head.npz`), else BERT's initialization. The loss is
google-research/bert's `get_masked_lm_output`: the cross-entropy at the masked positions, weighted by
`masked_lm_weights`, summed and divided by the sum of the weights (+1e-5) over the global batch. Training is
run_classifier's Trainer (training.py) with MaskedLMObjective, so strategies, checkpoints, resume, signals, the
NaN stop and TensorBoard are the same. The trained weights are written with the code that converts checkpoints
(convert.write_encoder), so the export is exactly what export_encoder writes:

    config = PretrainingConfig(data_dir="data/pretrain", output_dir="runs/pretrain", num_train_steps=1000)
    with PretrainingRun(config) as run:
        run.train()
        run.evaluate()      # eval_results.txt: masked_lm_accuracy, masked_lm_loss, initial_*, global_step
        run.export()        # OUTPUT_DIR/export: encoder/, preprocess/, mlm_head.npz (--encoder=OUTPUT_DIR/export)
"""

from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from bert_tf import distribution, run_directory
from bert_tf.encoders.bert import BertConfig, weight_shapes
from bert_tf.encoders.convert import write_encoder
from bert_tf.encoders.hub_layers import HubEncoder
from bert_tf.encoders.loading import EncoderInfo, encoder_info
from bert_tf.encoders.masked_lm import MaskedLMHead, load_mlm_head_weights
from bert_tf.errors import InputError
from bert_tf.files import atomic_write, writing_dir
from bert_tf.input_pipeline import model_inputs
from bert_tf.optimization import create_optimizer
from bert_tf.pretraining_config import TRAINING_KEYS, PretrainingConfig, check_settings
from bert_tf.pretraining_data import EVAL_FILE, OBJECTIVE, TRAIN_FILE, PretrainingMetadata, feature_spec, read_metadata
from bert_tf.progress import Progress
from bert_tf.records import fingerprint
from bert_tf.reports import read_results, results_text
from bert_tf.tokenization import load_vocab, vocab_digest
from bert_tf.training import RecordsDamaged, TrainConfig, Trainer, TrainingDiverged, WorkerLost

EXPORT_DIR = "export"
RESULTS_FILE = "eval_results.txt"
INITIAL = "initial_"  # eval_results.txt's prefix of the figures before training (step 0)
_REWRITE = "rewrite the records with `python -m bert_tf.create_pretraining_data`"


# --- The model and its loss -------------------------------------------------------------------------------------
class MaskedLMModel(keras.Model):
    """Encoder → MaskedLMHead: logits [batch, P, vocab] at `masked_lm_positions` (the decoder is the encoder's
    word embeddings, so the head adds no [vocab, hidden] weight)."""

    def __init__(self, encoder: HubEncoder, head: MaskedLMHead, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.head = head

    def call(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        outputs = self.encoder(inputs, training=training)
        return self.head(outputs["sequence_output"], inputs["masked_lm_positions"])


def masked_lm_sums(model: keras.Model, features: dict[str, tf.Tensor], pad_multiple: int | None,
                   training: bool) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Over a batch's masked positions, weighted by masked_lm_weights: (Σ cross-entropy, Σ correct, Σ weights)."""
    inputs = {**model_inputs(features, pad_multiple), "masked_lm_positions": features["masked_lm_positions"]}
    logits = model(inputs, training=training)
    labels, weights = features["masked_lm_ids"], features["masked_lm_weights"]
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    correct = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=labels.dtype), labels), tf.float32)
    return tf.reduce_sum(losses * weights), tf.reduce_sum(correct * weights), tf.reduce_sum(weights)


def parser(metadata: PretrainingMetadata):
    """Serialized pretraining records → features, ints as int32 (as records.parse_examples does)."""
    spec = feature_spec(metadata.max_seq_length, metadata.max_predictions_per_seq)

    def parse(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        parsed = tf.io.parse_example(serialized, spec)
        return {name: tf.cast(value, tf.int32) if value.dtype == tf.int64 else value for name, value in parsed.items()}

    return parse


class MaskedLMObjective:
    """training.Objective of masked-LM pretraining: google-research/bert's weighted mean cross-entropy over the
    masked positions of the global batch, and the masked-LM accuracy for train/."""

    statistics = ("masked_lm_correct", "masked_lm_weight")

    def __init__(self, metadata: PretrainingMetadata, pad_multiple: int | None = 1):
        self.parse = parser(metadata)
        self.pad_multiple = pad_multiple

    def replica_loss(self, model: keras.Model, features: dict[str, tf.Tensor]) -> tuple[tf.Tensor, dict]:
        loss_sum, correct, weight = masked_lm_sums(model, features, self.pad_multiple, training=True)
        # Divided by the weights of the whole global batch, so the replicas' shares add up to its mean (and
        # the gradients, summed over replicas, are those of one device on the same batch).
        total_weight = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, weight)
        loss = loss_sum / (tf.stop_gradient(total_weight) + 1e-5)
        return loss, {"masked_lm_correct": correct, "masked_lm_weight": weight}

    def summaries(self, totals: dict[str, float]) -> dict[str, float]:
        return {"masked_lm_accuracy": totals["masked_lm_correct"] / max(totals["masked_lm_weight"], 1e-12)}


# --- Evaluation -------------------------------------------------------------------------------------------------
def eval_dataset(data_dir: str, parse, size: int, global_batch_size: int) -> tf.data.Dataset:
    """eval.tf_record in full batches: the last one padded with copies of the first record weighted 0."""
    records = tf.data.TFRecordDataset(os.path.join(data_dir, EVAL_FILE))
    dataset = records.batch(1024).map(parse).unbatch()
    padding = (-size) % global_batch_size
    if padding:
        filler = records.take(1).batch(1).map(parse).unbatch().map(
            lambda features: {**features, "masked_lm_weights": tf.zeros_like(features["masked_lm_weights"])})
        dataset = dataset.concatenate(filler.repeat(padding))
    dataset = dataset.batch(global_batch_size, drop_remainder=True)
    options = tf.data.Options()  # multi-worker: each worker its share of every batch (as input_pipeline's)
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


class MaskedLMEvaluator:
    """masked_lm_loss and masked_lm_accuracy over the held-out records, under the strategy (every worker)."""

    def __init__(self, strategy: tf.distribute.Strategy, model: keras.Model, metadata: PretrainingMetadata,
                 data_dir: str, batch_size: int, pad_multiple: int | None):
        self.strategy, self.model, self.metadata = strategy, model, metadata
        self.data_dir, self.batch_size, self.pad_multiple = data_dir, batch_size, pad_multiple
        self._parse = parser(metadata)
        self._step = tf.function(self._step_fn, autograph=False)

    def _step_fn(self, iterator):
        per_replica = self.strategy.run(
            lambda features: masked_lm_sums(self.model, features, self.pad_multiple, training=False),
            args=(next(iterator),))
        return [self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None) for value in per_replica]

    def evaluate(self) -> dict[str, float]:
        size = self.metadata.eval_data_size
        dataset = eval_dataset(self.data_dir, self._parse, size, self.batch_size)
        iterator = iter(self.strategy.experimental_distribute_dataset(dataset))
        totals = np.zeros(3)
        batches = -(-size // self.batch_size)
        try:
            with Progress(batches, "eval batches") as progress:
                for _ in range(batches):
                    totals += [float(value) for value in self._step(iterator)]
                    progress.update(1)
        except tf.errors.DataLossError as error:
            raise InputError(f"{EVAL_FILE} is damaged or truncated ({error.message.splitlines()[0][:200]})",
                             file=self.data_dir, flag="data_dir", hint=_REWRITE) from None
        loss_sum, correct, weight = totals
        return {"masked_lm_accuracy": correct / max(weight, 1e-12), "masked_lm_loss": loss_sum / max(weight, 1e-12)}


# --- Checks and the export --------------------------------------------------------------------------------------
def validate(config: PretrainingConfig) -> PretrainingMetadata:
    """Checks the settings and the records (metadata.json says masked-LM records; their files are there)."""
    check_settings(config)
    metadata = read_metadata(config.data_dir)
    for name, size in ((TRAIN_FILE, metadata.train_data_size), (EVAL_FILE, metadata.eval_data_size)):
        if not tf.io.gfile.exists(os.path.join(config.data_dir, name)):
            raise InputError(f"no {name} here, though metadata.json counts {size} records", file=config.data_dir,
                             flag="data_dir", hint=_REWRITE)
    return metadata


def check_encoder(info: EncoderInfo, metadata: PretrainingMetadata, config: PretrainingConfig) -> None:
    """The records were tokenized with the encoder's vocab and fit its positions."""
    if metadata.vocab_sha256 and vocab_digest(load_vocab(info.vocab_file)) != metadata.vocab_sha256:
        raise InputError(f"the records were tokenized with another vocab than --encoder={config.encoder}'s",
                         file=config.data_dir, flag="encoder",
                         hint="rewrite them with create_pretraining_data and the same --encoder")
    if metadata.max_seq_length > info.max_position_embeddings:
        raise InputError(f"the records are {metadata.max_seq_length} tokens long, more than --encoder="
                         f"{config.encoder}'s {info.max_position_embeddings} positions", file=config.data_dir,
                         flag="encoder", hint="rewrite them with a --max_seq_length the encoder takes")


def encoder_variables(encoder: HubEncoder) -> tuple[BertConfig, dict[str, keras.Variable]]:
    """The encoder's BertConfig and its weights by google-research/bert name, the names convert.write_encoder
    takes. Only encoders bert_tf converted record their config and use those names: others are refused."""
    if encoder.bert_config is None:
        raise InputError(f"{encoder.handle} was not converted by bert_tf (its SavedModel has no bert_config_json), "
                         f"so the trained weights cannot be written as one", flag="encoder",
                         hint="use a Hugging Face or google-research/bert checkpoint: --encoder=DIR, hf://ORG/NAME "
                              "or the output of export_encoder")
    config = BertConfig.from_dict(encoder.bert_config)
    by_name = {weight.name: weight for weight in encoder.weights}
    variables = {}
    for name, shape in weight_shapes(config).items():
        weight = by_name.get(name.replace("/", "_"))  # loading.variable_name's Keras name
        if weight is None or tuple(weight.shape) != shape:
            raise InputError(f"{encoder.handle} has no weight {name} {shape}", flag="encoder",
                             hint="use an encoder converted by bert_tf (export_encoder, --encoder=DIR, hf://…)")
        variables[name] = weight
    return config, variables


def export_encoder(model: MaskedLMModel, info: EncoderInfo, export_dir: str) -> str:
    """Writes encoder/, preprocess/ and mlm_head.npz into export_dir as export_encoder does (staged beside it,
    renamed into place complete; on cloud storage, copied with encoder/saved_model.pb last); the vocab and casing
    are the source encoder's."""
    config, variables = encoder_variables(model.encoder)
    weights = {name: np.asarray(variable.numpy(), np.float32) for name, variable in variables.items()}
    with writing_dir(export_dir, last=os.path.join("encoder", "saved_model.pb")) as staging:
        write_encoder(config, weights, info.vocab_file, info.do_lower_case, staging, model.head.named_weights())
    return export_dir


# --- The run ----------------------------------------------------------------------------------------------------
class PretrainingRun:
    """One run: the encoder + masked-LM head, its optimizer, trainer and evaluator, and the steps that use them.

    Construction validates the config, records and encoder, picks the strategy and precision, takes run.lock,
    checks --output_dir against an earlier run (run_config.json) and builds the model under the strategy. Only
    the chief writes files.
    """

    def __init__(self, config: PretrainingConfig):
        self.config = config
        self.metadata = validate(config)
        self.strategy, self.precision = distribution.start(config)
        self.encoder = encoder_info(config.encoder)
        check_encoder(self.encoder, self.metadata, config)
        self.chief = distribution.is_chief(self.strategy)
        self.lock = run_directory.RunLock(config.output_dir)
        self._prepare_output_dir()
        pad_multiple = distribution.pad_multiple(self.strategy)
        self.model, optimizer = self._build()
        self.trainer = Trainer(self.strategy, self.model, optimizer, self.metadata, self._train_config(pad_multiple),
                               objective=MaskedLMObjective(self.metadata, pad_multiple))
        self.evaluator = None
        if self.metadata.eval_data_size:
            self.evaluator = MaskedLMEvaluator(self.strategy, self.model, self.metadata, config.data_dir,
                                               config.eval_batch_size, pad_multiple)
        else:
            logging.warning("%s holds no held-out records (--eval_fraction=0): no %s", config.data_dir, RESULTS_FILE)

    def _prepare_output_dir(self) -> None:
        """run.lock (chief), then the checks of run_directory.prepare plus this run's TRAINING_KEYS."""
        config = self.config
        identity = {"encoder": config.encoder, "label_names": None, "task_type": OBJECTIVE, "pooling": None,
                    "max_seq_length": self.metadata.max_seq_length, "data_dir": config.data_dir}
        training = {key: getattr(config, key) for key in TRAINING_KEYS if key != "train_records"}
        training.update(warmup_steps=config.warmup, learning_rate=config.learning_rate,
                        freeze_encoder_steps=config.freeze_encoder_steps,
                        train_records=fingerprint(config.data_dir, "train"))
        if self.chief and tf.io.gfile.isdir(config.output_dir):
            self.lock.acquire()  # first: a run in progress is the answer, not its settings
        if not config.overwrite_output_dir and run_directory.has_checkpoints(config.output_dir):
            run_directory.check_same_run(config.output_dir, identity, run_directory.IDENTITY_KEYS)
            run_directory.check_same_run(config.output_dir, training, TRAINING_KEYS)
        run_directory.prepare(config.output_dir, identity, training, config.overwrite_output_dir,
                              self.lock if self.chief else None)

    def _train_config(self, pad_multiple: int | None) -> TrainConfig:
        config = self.config
        return TrainConfig(
            data_dir=config.data_dir, output_dir=config.output_dir, global_batch_size=config.train_batch_size,
            num_train_epochs=0.0, num_train_steps=config.num_train_steps, seed=config.seed,
            steps_per_loop=config.iterations_per_loop, save_checkpoints_steps=config.save_checkpoints_steps,
            keep_checkpoint_max=config.keep_checkpoint_max, is_chief=self.chief, pad_multiple=pad_multiple,
            batches_per_bucket_window=config.bucket_window,
            hparams={"encoder": config.encoder, "objective": OBJECTIVE, "learning_rate": config.learning_rate,
                     "train_batch_size": config.train_batch_size, "num_train_steps": config.num_train_steps,
                     "warmup_steps": config.warmup, "freeze_encoder_steps": config.freeze_encoder_steps,
                     "max_seq_length": self.metadata.max_seq_length,
                     "precision": self.precision, "replicas": self.strategy.num_replicas_in_sync},
        )

    def _build(self) -> tuple[MaskedLMModel, keras.optimizers.Optimizer]:
        """Encoder + head (the source's head weights, or fresh) and AdamW, inside the strategy's scope."""
        config = self.config
        with self.strategy.scope():
            keras.utils.set_random_seed(config.seed)
            encoder = HubEncoder(self.encoder.handles.encoder, trainable=True, name="encoder")
            encoder_variables(encoder)  # refuses an encoder whose trained weights could not be exported, now
            try:
                initial = load_mlm_head_weights(self.encoder.handles.encoder)
                head = MaskedLMHead.for_encoder(encoder, initial, seed=config.seed, name="mlm_head")
            except ValueError as error:
                raise InputError(str(error), flag="encoder") from None
            logging.info("Masked-LM head: %s", "the encoder's pretrained one" if initial else "freshly initialized")
            model = MaskedLMModel(encoder, head, name="masked_lm")
            optimizer = create_optimizer(config.learning_rate, config.num_train_steps, config.warmup,
                                         config.weight_decay, loss_scaling=self.precision == "fp16",
                                         frozen_variables=[variable.path for variable in encoder.trainable_variables],
                                         frozen_steps=config.freeze_encoder_steps)
        return model, optimizer

    def close(self) -> None:
        """Releases run.lock (also done at exit)."""
        self.lock.release()

    def __enter__(self) -> "PretrainingRun":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def global_step(self) -> int:
        return self.trainer.global_step

    def train(self) -> int:
        """Trains (or resumes) to num_train_steps; a fresh run first evaluates the held-out records (step 0)."""
        if self.evaluator is not None and not self.trainer.restore_from.checkpoints:
            initial = self.evaluator.evaluate()
            logging.info("Step 0 (before training): %s", _describe(initial))
            self._write_results({f"{INITIAL}{key}": value for key, value in initial.items()}, 0)
        try:
            return self.trainer.train()
        except RecordsDamaged as error:
            raise InputError(str(error).replace("create_tfrecords", "create_pretraining_data")) from None
        except (TrainingDiverged, WorkerLost) as error:
            raise InputError(str(error)) from None

    def evaluate(self) -> dict | None:
        """Scores the held-out records at the current step: eval_results.txt (with the step-0 figures a fresh
        run recorded) and eval/ summaries (chief); returns the results, None without held-out records."""
        if self.evaluator is None:
            return None
        result = self.evaluator.evaluate()
        logging.info("Step %d: %s", self.global_step, _describe(result))
        return self._write_results(result, self.global_step)

    def _write_results(self, figures: dict, step: int) -> dict:
        path = os.path.join(self.config.output_dir, RESULTS_FILE)
        earlier = read_results(path) if step and tf.io.gfile.exists(path) else {}
        result = {**{key: value for key, value in earlier.items() if key.startswith(INITIAL)}, **figures,
                  "global_step": step}
        if self.chief:
            atomic_write(path, results_text(result))
            writer = tf.summary.create_file_writer(os.path.join(self.config.output_dir, "eval"))
            with writer.as_default():
                for key, value in figures.items():
                    tf.summary.scalar(key.removeprefix(INITIAL), value, step=step)
            writer.flush()
        return result

    def export(self, export_dir: str | None = None) -> str | None:
        """The trained encoder as a TF Hub-format encoder in export_dir (default OUTPUT_DIR/export); chief only."""
        if not self.chief:
            return None
        return export_encoder(self.model, self.encoder, export_dir or os.path.join(self.config.output_dir, EXPORT_DIR))


def _describe(result: dict) -> str:
    return ", ".join(f"{key} = {value:.4f}" for key, value in sorted(result.items()))
