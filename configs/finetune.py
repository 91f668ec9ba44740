r"""Fine-tuning ELECTRA (GLUE, custom classification/regression, CoNLL tagging, SQuAD).

  python -m electra_jax.main --config=configs/finetune.py --config.task=mnli \
      --config.init_checkpoint=/tmp/electra_small --config.data_dir=/data/glue --workdir=/tmp/ft_mnli

`init_checkpoint`: an electra_jax pre-training workdir or its pretrained/ dir (empty = random init,
then `data.vocab` and `model.*` describe the model). Tasks:
- GLUE: cola sst mrpc sts qqp mnli qnli rte wnli. data_dir holds the GLUE download
  (DATA_DIR/MNLI/train.tsv, dev_matched.tsv, ...), or set data_dir=tfds to read a prepared TFDS
  `glue/<task>` (tfds_data_dir). Test predictions go to WORKDIR/seed_S/predictions/<Task>.tsv in the
  GLUE submission format (predict_test=False to skip).
- custom: --config.task=custom --config.custom.train_file=train.tsv --config.custom.dev_file=dev.tsv
  [--config.custom.text_b=COLUMN] [--config.custom.regression=True] (.tsv/.csv with header, .jsonl).
- chunk / ner: CoNLL files DATA_DIR/{train,dev,test}.txt (see finetune/tagging.py).
- squad1 / squad2: DATA_DIR/{train,dev}-v1.1.json or -v2.0.json; mrqa[_NAME]: MRQA JSONL
  DATA_DIR/{train,dev}.jsonl (see finetune/qa.py). QA needs a WordPiece vocabulary.
Defaults follow the original: lr 1e-4, layer-wise decay 0.8, weight decay 0.01, warmup 10%, batch 32,
seq 128, 3 epochs (RTE and STS-B 10); SQuAD: seq 512, 2 epochs. For ELECTRA-Large use
--config.optim.learning_rate=5e-5 --config.layerwise_lr_decay=0.9. Several seeds:
--config.num_trials=5 (results.json has each seed and the median).

Expected (the original's released models, GLUE dev, reference): Small: CoLA 57.0 SST 91.2 MRPC 88.0
STS 87.5 QQP 89.0 MNLI 81.3 QNLI 88.4 RTE 66.7; Base: 67.7 95.1 89.5 91.2 91.5 88.8 93.2 82.7.
Measured here: only the tiny fixture tasks in tests/test_finetune*.py (no GLUE data offline).
"""
import ml_collections

from electra_jax import defaults


def get_config():
  c = defaults.get_default_config()
  c.task = 'mnli'
  c.data_dir = ''  # the task's files (see above); 'tfds' for TFDS glue
  c.tfds_data_dir = ''  # TFDS data_dir holding prepared glue/<task> ('' = TFDS default)
  c.batch_size = 32
  c.eval_batch_size = 64
  c.max_seq_length = 0  # 0 = the task's default (128; SQuAD 512)
  c.num_train_epochs = 0.0  # 0 = the task's default (3; RTE and STS-B 10; SQuAD 2)
  c.num_train_steps = 0  # > 0 overrides the epochs
  c.warmup_proportion = 0.1  # warmup steps = this x the run's steps (optim.warmup_steps is unused)
  # lr x decay ** (depth from the top): head 1, top layer decay, ..., embeddings decay ** (L + 1).
  # 'original' reproduces the original code's off-by-one (top layer decay ** 2). 1.0 = none.
  c.layerwise_lr_decay = 0.8
  c.layerwise_decay_rule = 'correct'
  c.num_trials = 1  # seeds seed, seed + 1, ...; results.json reports each and the median
  c.eval_every_steps = 0  # 0 = once per epoch (and at the end); the best dev score is kept
  c.log_every_steps = 50
  c.keep_checkpoints = 1  # train-state checkpoints (at every eval) kept per seed, for resuming
  c.swap_augment = True  # MRPC and STS-B also train on (B, A), as the original
  c.predict_test = True  # write test-set predictions (GLUE submission files) with the best weights
  c.optim.learning_rate = 1e-4
  c.optim.schedule = 'warmup_linear'  # 10% warmup then linear decay; 'electra': overlapping (original)

  c.custom = ml_collections.ConfigDict()
  c.custom.name = ''  # name used in outputs (default: 'custom')
  c.custom.train_file = ''
  c.custom.dev_file = ''
  c.custom.test_file = ''
  c.custom.text_a = 'text'  # column (header name / JSON key) of the first text
  c.custom.text_b = ''  # column of the second text of a pair ('' = single text)
  c.custom.label = 'label'
  c.custom.labels_file = ''  # one label per line (default: the sorted labels of the train file)
  c.custom.regression = False
  c.custom.metrics = ''  # comma-separated: accuracy,f1,mcc,pearson,spearman ('' = by task kind)

  c.tagging = ml_collections.ConfigDict()
  c.tagging.label_column = -1  # CoNLL column of the tag (chunk: 2, NER: 3; -1 = last)
  # 'bioes': train on BIOES tags (as the original for chunking), predictions written back as BIO;
  # 'file': train on the tags exactly as in the files.
  c.tagging.scheme = 'bioes'

  c.qa = ml_collections.ConfigDict()
  c.qa.doc_stride = 128
  c.qa.max_query_length = 64
  c.qa.n_best_size = 20
  c.qa.max_answer_length = 30
  c.qa.na_threshold = 0.5  # SQuAD 2.0: answer '' when the no-answer probability is above this
  c.qa.joint_prediction = True  # the original's XLNet-style end head given the start (beam)
  c.qa.beam_size = 20  # joint head: best starts kept, and best ends per start
  c.qa.answerable_weight = 0.5  # weight of the answerability loss
  c.qa.answerable_uses_start_logits = True  # answerability also sees the start distribution
  return c
