r"""A hyperparameter sweep: one run_classifier run per combination of learning rate, epochs and seed.

  python -m bert_tf.sweep --data_dir=data/my_task --output_dir=sweeps/my_task \
    --learning_rates=2e-5,5e-5,1e-4 --num_train_epochs=2,3 --seeds=1,2,3 --encoder=…

Each trial is `run_classifier --do_train --do_eval --do_export` in its own subprocess (mixed precision and
TensorFlow's state are process-wide) and its own directory, OUTPUT_DIR/lr=5e-05,epochs=3,seed=1, with the
subprocess's output in trial.log. Every flag but the sweep's own is run_classifier's and goes to every trial; they
are checked before the first trial starts. Trials are compared on the best dev value of the task's primary metric
(best/eval_results.txt); the export of the best trial so far is kept, the others' deleted. Leaves in --output_dir:
  sweep_results.tsv          one row per finished trial: its settings, metric, step and wall time
  best_trial/export          the serving SavedModel of the best trial's best weights
  best_trial/trial.json      which trial that is, and its result (best_trial/eval_results.txt: its metrics)
  events.out.tfevents.*      the TensorBoard HParams experiment (each trial's directory holds its session)
A rerun of the same command skips the finished trials (those with a trial_done.json, written once the trial
succeeded) and resumes an interrupted one from its checkpoints.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import itertools
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time

from absl import app, flags

from bert_tf import flags as bert_flags
from bert_tf.errors import EXIT_BAD_INPUT, InputError, exits_cleanly_on_bad_input
from bert_tf.files import atomic_write, replace_dir

FLAGS = bert_flags.FLAGS

RESULTS_FILE = "sweep_results.tsv"
BEST_TRIAL_DIR = "best_trial"
TRIAL_LOG = "trial.log"
TRIAL_DONE = "trial_done.json"
SWEEP_FLAGS = ("data_dir", "output_dir", "learning_rates", "num_train_epochs", "seeds")
# run_classifier flags the sweep sets itself (its own --data_dir, --output_dir and --num_train_epochs never reach
# run_classifier's parser), and what to do instead.
OWNED_FLAGS = {
    "learning_rate": "is set by the sweep for each trial; list the rates in --learning_rates",
    "seed": "is set by the sweep for each trial; list the seeds in --seeds",
    "do_train": "is set by the sweep: every trial trains and evaluates dev",
    "do_eval": "is set by the sweep: every trial trains and evaluates dev",
    "do_export": "is set by the sweep: every trial exports, and the best one's export is kept in best_trial/export",
    "overwrite_output_dir": "is not for a sweep, which resumes its trials; delete a trial's directory to run it afresh",
}

# Parses the other flags as run_classifier does, in a fresh Python (TensorFlow-free, about half a second): the
# sweep's --num_train_epochs, a list, cannot share absl's FlagValues with run_classifier's float flag. Prints one
# JSON line: the run_classifier flags given (normalized as --name=value), arguments that are no flags, and what
# run_classifier's own settings check says of them.
_CHECK_CLASSIFIER_FLAGS = r"""
import dataclasses, json, sys
from absl import flags
from bert_tf import flags as bert_flags, run_classifier
from bert_tf.errors import InputError
from bert_tf.run_config import check_settings
bert_flags.define_classifier_flags()
flags.FLAGS.set_gnu_getopt(True)
try:
    rest = flags.FLAGS(sys.argv)
except (flags.Error, ValueError) as error:
    print(json.dumps({"error": str(error), "unknown": isinstance(error, flags.UnrecognizedFlagError)}))
    sys.exit()
given = {flag.name: flag.serialize() for flag in flags.FLAGS.get_key_flags_for_module(bert_flags) if flag.present}
settings_error = None
try:
    config = run_classifier.config_from_flags()
    check_settings(dataclasses.replace(config, data_dir="-", output_dir="-", do_train=True, do_eval=True))
except InputError as error:
    settings_error = str(error)
print(json.dumps({"flags": given, "unexpected": rest[1:], "settings_error": settings_error}))
"""
PASS_THROUGH_HINT = ("every flag but --data_dir, --output_dir, --learning_rates, --num_train_epochs and --seeds is "
                     "run_classifier's (python -m bert_tf.run_classifier --helpfull lists them)")


class TrialFailed(Exception):
    """A trial's run_classifier exited with an error (`returncode`); the message names the trial and its log."""

    def __init__(self, message: str, returncode: int):
        super().__init__(message)
        self.returncode = returncode


def _number(value: float) -> str:
    """A setting as trial names and the results show it: 3 (not 3.0), 5e-05, 0.0001 (Python's shortest repr)."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(float(value))


@dataclasses.dataclass(frozen=True)
class Trial:
    learning_rate: float
    num_train_epochs: float
    seed: int

    @property
    def name(self) -> str:
        """Its directory's name: lr=5e-05,epochs=3,seed=1."""
        return f"lr={_number(self.learning_rate)},epochs={_number(self.num_train_epochs)},seed={self.seed}"

    def flags(self) -> list[str]:
        return [f"--learning_rate={self.learning_rate!r}", f"--num_train_epochs={self.num_train_epochs!r}",
                f"--seed={self.seed}"]


@dataclasses.dataclass(frozen=True)
class TrialResult:
    trial: Trial
    value: float  # the best dev value of the sweep's metric
    global_step: int  # the step of the weights that reached it
    wall_seconds: float  # the run that finished the trial (a resumed trial: its last run only)

    @property
    def score(self) -> float:
        """What the sweep maximises: the value, a NaN (e.g. the Pearson correlation of constant predictions) last."""
        return -math.inf if math.isnan(self.value) else self.value


def _parse_list(values: list[str], flag: str, kind: type, valid, expected: str) -> list:
    if not values:
        raise InputError("is empty", flag=flag, hint=f"give one or more {expected}, comma-separated")
    parsed = []
    for text in values:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not valid(value):
            raise InputError(f"'{text}' is not {expected}", flag=flag)
        if value in parsed:
            raise InputError(f"{text} is listed twice", flag=flag)
        parsed.append(value)
    return parsed


def make_trials(learning_rates: list[str], num_train_epochs: list[str], seeds: list[str]) -> list[Trial]:
    """The cartesian product of the lists (as the flags give them), learning rate slowest, seed fastest."""
    positive = lambda value: math.isfinite(value) and value > 0
    grid = (_parse_list(learning_rates, "learning_rates", float, positive, "a positive learning rate"),
            _parse_list(num_train_epochs, "num_train_epochs", float, positive, "a positive number of epochs"),
            _parse_list(seeds, "seeds", int, lambda value: True, "an integer seed"))
    return [Trial(lr, epochs, seed) for lr, epochs, seed in itertools.product(*grid)]


def classifier_flags(args: list[str]) -> list[str]:
    """The arguments that are not the sweep's, checked as run_classifier flags; returns them as --name=value."""
    if not args:
        return []
    check = subprocess.run([sys.executable, "-c", _CHECK_CLASSIFIER_FLAGS, *args], capture_output=True, text=True,
                           check=False)
    if check.returncode != 0:
        raise RuntimeError(f"checking the run_classifier flags failed: {check.stderr[-3000:]}")
    answer = json.loads(check.stdout.splitlines()[-1])
    if "error" in answer:
        raise InputError(answer["error"], hint=PASS_THROUGH_HINT if answer["unknown"] else None)
    if answer["unexpected"]:
        raise InputError(f"unexpected argument '{answer['unexpected'][0]}'", hint="flags take the form --name=value")
    for name in answer["flags"]:
        if name in OWNED_FLAGS:
            raise InputError(OWNED_FLAGS[name], flag=name)
    if answer["settings_error"]:
        raise InputError(answer["settings_error"])
    return list(answer["flags"].values())


def primary_metric(data_dir: str, passed_on: list[str]) -> str:
    """The dev metric the trials are compared on (higher is better): --best_metric if passed on to the trials
    (run_classifier has checked it), else the task's primary one."""
    for flag in passed_on:
        if flag.startswith("--best_metric="):
            return flag.split("=", 1)[1]
    # TensorFlow: only once the flags have passed.
    from bert_tf.records import read_metadata

    metadata = read_metadata(data_dir)
    if not metadata.size("dev"):
        raise InputError("the records have no dev split, which a sweep compares its trials on", file=data_dir,
                         flag="data_dir", hint="write them with --dev_file")
    return metadata.head.primary_metric


def best_dev_result(trial_dir: str, metric: str) -> tuple[float, int]:
    """(the metric's value, its global_step) from the trial's best/eval_results.txt, else its eval_results.txt."""
    from bert_tf.reports import read_results

    for path in (os.path.join(trial_dir, "best", "eval_results.txt"), os.path.join(trial_dir, "eval_results.txt")):
        if os.path.exists(path):
            result = read_results(path)
            return float(result[metric]), int(result["global_step"])
    raise InputError(f"has no eval_results.txt with {metric} after the trial", file=trial_dir)


def best_result(results: list[TrialResult]) -> TrialResult:
    """The highest score; a tie goes to the trial that comes first in the sweep."""
    return max(results, key=lambda result: result.score)  # max keeps the first of equal keys


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _read_json(path: str) -> dict:
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _event_writer(directory: str):
    """A summary writer for `directory`, after removing the sweep's earlier event files there: TensorBoard keeps
    the first HParams summary of a run, so a rerun's (a grid grown by a value) must be the only one."""
    import tensorflow as tf

    for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
        os.remove(path)
    return tf.summary.create_file_writer(directory)


def write_hparams_config(output_dir: str, trials: list[Trial], metric: str) -> None:
    """The HParams dashboard's experiment, at output_dir: the swept hyperparameters and the metric."""
    from tensorboard.plugins.hparams import api as hp

    hparams = [hp.HParam(name, hp.Discrete(sorted({getattr(trial, name) for trial in trials})))
               for name in ("learning_rate", "num_train_epochs", "seed")]
    writer = _event_writer(output_dir)
    with writer.as_default():
        hp.hparams_config(hparams=hparams, metrics=[hp.Metric(metric, display_name=f"best dev {metric}")])
    writer.close()


def write_hparams_session(trial_dir: str, result: TrialResult, metric: str) -> None:
    """A trial's session for the dashboard, in its directory: its hyperparameters and best dev value."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    writer = _event_writer(trial_dir)
    with writer.as_default():
        hp.hparams(dataclasses.asdict(result.trial), trial_id=result.trial.name)
        tf.summary.scalar(metric, result.value, step=result.global_step)
    writer.close()


class Sweep:
    """The trials of one sweep over the records in data_dir, each a run_classifier run in output_dir/TRIAL."""

    def __init__(self, data_dir: str, output_dir: str, trials: list[Trial], classifier_flags: list[str],
                 metric: str, stream=None):
        self.data_dir = data_dir
        self.output_dir = output_dir
        self.trials = trials
        self.classifier_flags = classifier_flags
        self.metric = metric
        self.stream = stream or sys.stdout

    def trial_dir(self, trial: Trial) -> str:
        return os.path.join(self.output_dir, trial.name)

    def command(self, trial: Trial) -> list[str]:
        return [sys.executable, "-m", "bert_tf.run_classifier", f"--data_dir={self.data_dir}",
                f"--output_dir={self.trial_dir(trial)}", "--do_train", "--do_eval", "--do_export", *trial.flags(),
                *self.classifier_flags]

    def finished(self, trial: Trial) -> TrialResult | None:
        """The result a finished trial recorded (None when it has not finished), if it ran as this sweep would."""
        done = _read_json(os.path.join(self.trial_dir(trial), TRIAL_DONE))
        if not done:
            return None
        if done["classifier_flags"] != self.classifier_flags or done["data_dir"] != os.path.abspath(self.data_dir):
            raise InputError(
                f"trial {trial.name} ran with other records or run_classifier flags ({done['data_dir']}: "
                f"{' '.join(done['classifier_flags']) or 'none'})", flag="output_dir",
                hint="pass the same ones, use a new --output_dir, or delete the trial's directory to rerun it")
        return TrialResult(trial, float(done["value"]), int(done["global_step"]), float(done["wall_seconds"]))

    def _run_classifier(self, trial: Trial, command: list[str], what: str) -> float:
        """Runs `command`, its output appended to the trial's log; returns its wall time. Raises TrialFailed."""
        log = os.path.join(self.trial_dir(trial), TRIAL_LOG)
        os.makedirs(self.trial_dir(trial), exist_ok=True)
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} sweep {what}: {shlex.join(command)}\n")
            f.flush()
            start = f.tell()
            started = time.monotonic()
            returncode = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, check=False).returncode
        if returncode != 0:
            with open(log, encoding="utf-8", errors="replace") as f:
                f.seek(start)
                errors = [line.strip() for line in f if line.startswith("error:")]
            said = f": {errors[-1].removeprefix('error:').strip()}" if errors else ""
            how = f"exit code {returncode}" if returncode > 0 else f"signal {-returncode}"
            step = f"trial {trial.name}" if what == "trial" else f"the {what} of trial {trial.name}"
            raise TrialFailed(f"{step} failed ({how}){said}; its log: {log}", returncode)
        return time.monotonic() - started

    def run_trial(self, trial: Trial, finished: list[TrialResult]) -> TrialResult:
        """Trains, evaluates and exports the trial (or resumes it); keeps its export if it beats the `finished`
        trials (else deletes it), records its result, then marks it finished."""
        wall_seconds = self._run_classifier(trial, self.command(trial), "trial")
        trial_dir = self.trial_dir(trial)
        result = TrialResult(trial, *best_dev_result(trial_dir, self.metric), wall_seconds)
        write_hparams_session(trial_dir, result, self.metric)
        if best_result(self._in_order([*finished, result])) is result:
            self._install_best(result)
        else:
            shutil.rmtree(os.path.join(trial_dir, "export"), ignore_errors=True)
        done = {"trial": trial.name, **dataclasses.asdict(trial), "metric": self.metric, "value": result.value,
                "global_step": result.global_step, "wall_seconds": round(wall_seconds, 3),
                "data_dir": os.path.abspath(self.data_dir), "classifier_flags": self.classifier_flags}
        atomic_write(os.path.join(trial_dir, TRIAL_DONE), json.dumps(done, indent=2) + "\n")
        return result

    def _in_order(self, results: list[TrialResult]) -> list[TrialResult]:
        """Results in the sweep's order (which settles ties)."""
        return sorted(results, key=lambda result: self.trials.index(result.trial))

    def _install_best(self, best: TrialResult) -> str:
        """Moves the trial's export to output_dir/best_trial/export; best_trial/trial.json says whose it is."""
        target = os.path.join(self.output_dir, BEST_TRIAL_DIR)
        record, export_dir = os.path.join(target, "trial.json"), os.path.join(target, "export")
        if os.path.exists(record):  # no record naming the previous best beside this trial's export
            os.remove(record)
        os.makedirs(target, exist_ok=True)
        trial_dir = self.trial_dir(best.trial)
        replace_dir(os.path.join(trial_dir, "export"), export_dir)
        best_results = os.path.join(trial_dir, "best", "eval_results.txt")
        if os.path.exists(best_results):
            shutil.copyfile(best_results, os.path.join(target, "eval_results.txt"))
        content = {"trial": best.trial.name, "directory": os.path.abspath(trial_dir), **dataclasses.asdict(best.trial),
                   "metric": self.metric, "value": best.value, "global_step": best.global_step}
        atomic_write(record, json.dumps(content, indent=2) + "\n")
        return export_dir

    def write_results(self, results: list[TrialResult]) -> None:
        columns = ["trial", "learning_rate", "num_train_epochs", "seed", self.metric, "global_step", "wall_seconds"]
        lines = ["\t".join(columns) + "\n"]
        for r in results:
            t = r.trial
            lines.append(f"{t.name}\t{_number(t.learning_rate)}\t{_number(t.num_train_epochs)}\t{t.seed}\t"
                         f"{r.value}\t{r.global_step}\t{r.wall_seconds:.1f}\n")
        atomic_write(os.path.join(self.output_dir, RESULTS_FILE), "".join(lines))

    def _progress(self, index: int, result: TrialResult, before: bool, durations: list[float], pending: int,
                  started: float) -> str:
        """trial k of n, its result and time, the sweep's elapsed time and the ETA of the trials still to run."""
        eta = pending * sum(durations) / len(durations) if durations else 0.0
        how = "finished before, " if before else ""
        return (f"trial {index}/{len(self.trials)} {result.trial.name}: {how}{self.metric} = {result.value:.4f} "
                f"(step {result.global_step}) in {_duration(result.wall_seconds)}; "
                f"elapsed {_duration(time.monotonic() - started)}, ETA {_duration(eta)}")

    def run(self) -> list[TrialResult]:
        """Every trial in turn, finished ones skipped; a progress line per trial, the results file after each."""
        try:
            os.makedirs(self.output_dir, exist_ok=True)
        except OSError as error:
            raise InputError(f"cannot create it ({error.strerror})", flag="output_dir") from None
        known = {trial: result for trial in self.trials if (result := self.finished(trial)) is not None}
        skipped = set(known)
        print(f"Sweep of {len(self.trials)} trials ({len(skipped)} finished before) in {self.output_dir}, "
              f"maximising dev {self.metric}", file=self.stream, flush=True)
        write_hparams_config(self.output_dir, self.trials, self.metric)
        started, results = time.monotonic(), []
        for index, trial in enumerate(self.trials, 1):
            if trial not in known:
                known[trial] = self.run_trial(trial, list(known.values()))
            results.append(known[trial])
            self.write_results(results)
            pending = sum(later not in known for later in self.trials[index:])
            line = self._progress(index, known[trial], trial in skipped, [r.wall_seconds for r in known.values()],
                                  pending, started)
            print(line, file=self.stream, flush=True)
        return results

    def export_best(self, results: list[TrialResult]) -> tuple[TrialResult, str]:
        """The best trial and its export, output_dir/best_trial/export. Each trial exports as it finishes and
        keeps its export only while it is the best, so this exports again only when the best trial's export is
        gone (a grid without the trial whose export is there)."""
        best = best_result(results)
        target = os.path.join(self.output_dir, BEST_TRIAL_DIR)
        export_dir = os.path.join(target, "export")
        if _read_json(os.path.join(target, "trial.json")).get("trial") == best.trial.name and os.path.isdir(export_dir):
            return best, export_dir
        # The trial's command again: run_classifier finds its training done, evaluates dev and exports.
        self._run_classifier(best.trial, self.command(best.trial), "export")
        return best, self._install_best(best)


def parse_command_line(argv: list[str], flag_values: flags.FlagValues) -> list[str]:
    """absl's parser for the sweep (`app.run(main, flags_parser=…)`): parses the sweep's own flags and leaves every
    other argument for run_classifier; a bad flag is one `error:` line and exit code 2."""
    for name in SWEEP_FLAGS:
        if sum(arg == f"--{name}" or arg.startswith(f"--{name}=") for arg in argv[1:]) > 1:
            print(f"error: --{name}: given twice; the sweep's flags are given once, any other flag goes to every trial",
                  file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
    flag_values.set_gnu_getopt(True)  # an argument that is no flag does not end the parsing: it is reported
    try:
        return flag_values(argv, known_only=True)
    except (flags.Error, ValueError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


@exits_cleanly_on_bad_input
def main(argv):
    for name in ("data_dir", "output_dir"):
        if not FLAGS[name].value:
            raise InputError("is required", flag=name)
    trials = make_trials(FLAGS.learning_rates, FLAGS.num_train_epochs, FLAGS.seeds)
    passed_on = classifier_flags(argv[1:])
    sweep = Sweep(FLAGS.data_dir, FLAGS.output_dir, trials, passed_on, primary_metric(FLAGS.data_dir, passed_on))
    try:
        results = sweep.run()
        best, export_dir = sweep.export_best(results)
    except TrialFailed as failure:
        if failure.returncode == EXIT_BAD_INPUT:
            raise InputError(str(failure)) from None
        print(f"error: {failure}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted; the same command resumes the sweep", file=sys.stderr)
        sys.exit(130)
    print(f"Best trial: {best.trial.name}: {sweep.metric} = {best.value:.4f} (step {best.global_step})")
    print(f"Results: {os.path.join(FLAGS.output_dir, RESULTS_FILE)}")
    print(f"Exported its serving SavedModel to {export_dir}")
    print(f"TensorBoard (HParams tab): tensorboard --logdir {FLAGS.output_dir}")


if __name__ == "__main__":
    bert_flags.define_sweep_flags()
    app.run(main, flags_parser=functools.partial(parse_command_line, flag_values=FLAGS))
