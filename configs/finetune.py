r"""Fine-tuning ELECTRA: GLUE, custom classification/regression, CoNLL tagging, SQuAD / MRQA.

`init_checkpoint`: an electra_jax pre-training workdir or its pretrained/ dir, a HF ELECTRA
discriminator dir, or a Google TF1 checkpoint prefix (e.g. the released electra_small/electra_small;
read by convert.py): model config, weights and vocabulary come from it (`data.vocab` overrides the
vocabulary); empty = random init, then `data.vocab` and `model.*` describe the model. Outputs in WORKDIR: results.json (each seed's best dev metrics and the median),
seed_<S>/{metrics.jsonl, tensorboard/, predictions/, checkpoints/ (the latest and the best dev
one, its metrics beside it)}; rerunning the command resumes. Commands (one per task family):

  # GLUE (cola sst mrpc sts qqp mnli qnli rte wnli): DATA_DIR as from download_glue_data.py
  # (DATA_DIR/MNLI/train.tsv, dev_matched.tsv, ...; diagnostic/diagnostic.tsv -> AX.tsv), or
  # --config.data_dir=tfds to read a prepared TFDS glue/<task> (--config.tfds_data_dir).
  python -m electra_jax.main --config=configs/finetune.py --config.task=mnli \
      --config.init_checkpoint=/tmp/electra_small --config.data_dir=/data/glue --workdir=/tmp/ft_mnli
  # several seeds, reporting each and the median (the paper reports medians of 10 for GLUE dev):
  ... --config.task=rte --config.num_trials=10
  # custom classification (or --config.custom.regression=True), TSV/CSV with header or JSONL:
  python -m electra_jax.main --config=configs/finetune.py --config.task=custom \
      --config.custom.train_file=train.tsv --config.custom.dev_file=dev.tsv \
      --config.custom.text_a=sentence [--config.custom.text_b=sentence2] --config.custom.label=label \
      --config.init_checkpoint=/tmp/electra_small --workdir=/tmp/ft_custom
  # tagging: CoNLL files DATA_DIR/{train,dev[,test]}.txt (CoNLL-2000 has no dev: give one)
  python -m electra_jax.main --config=configs/finetune.py --config.task=chunk \
      --config.init_checkpoint=/tmp/electra_small --config.data_dir=/data/conll2000 --workdir=/tmp/ft_chunk
  # NER (CoNLL-2003, tag in column 4 = the last): --config.task=ner --config.data_dir=/data/conll2003
  # QA (WordPiece vocabularies only): DATA_DIR/{train,dev}-v2.0.json; seq 512, 2 epochs by default
  python -m electra_jax.main --config=configs/finetune.py --config.task=squad2 \
      --config.init_checkpoint=/tmp/electra_small --config.data_dir=/data/squad --workdir=/tmp/ft_squad
  # squad1: {train,dev}-v1.1.json; mrqa[_NAME]: MRQA JSONL DATA_DIR/{train,dev}.jsonl

Defaults follow the original: lr 1e-4, layer-wise decay 0.8, weight decay 0.01, warmup 10%, batch 32,
seq 128, 3 epochs (RTE and STS-B 10); SQuAD: seq 512, 2 epochs. ELECTRA-Large:
configs/finetune_large.py (lr 5e-5, decay 0.9).

Expected (the original's released models, reference): GLUE dev, Small: CoLA 57.0 SST 91.2 MRPC 88.0
STS 87.5 QQP 89.0 MNLI 81.3 QNLI 88.4 RTE 66.7; Base: 67.7 95.1 89.5 91.2 91.5 88.8 93.2 82.7.
SQuAD 2.0 dev EM: Small 70.1, Base 80.5. CoNLL-2000 chunking F1: Small 96.5.
Measured here (2 CPU cores, no real data offline): only the fixture tasks of tests/test_finetune*.py:
a 2-layer hidden-32 model from a 30-step pre-training run reaches 100% dev accuracy on the
SST-2-format fixture (majority class 56.25%) in 160 steps for each of 2 seeds, and a random-init one
100 chunk F1 on the CoNLL-2000-format fixture in 30 steps.
"""
import ml_collections

from electra_jax import defaults


def get_config():
  # Only what fine-tuning, --mode=score and --mode=zeroshot read: a pre-training key (objective.*,
  # data.corpus, optim.warmup_steps, ...) is an unknown key here.
  c = ml_collections.ConfigDict()
  c.task = 'mnli'
  c.data_dir = ''  # the task's files (see above); 'tfds' for TFDS glue
  c.tfds_data_dir = ''  # TFDS data_dir holding prepared glue/<task> ('' = TFDS default)
  c.init_checkpoint = ''  # the pre-trained model (see above); '' = random init
  c.seed = 0  # of the first trial
  c.batch_size = 32
  c.eval_batch_size = 64
  c.max_seq_length = 0  # 0 = the task's default (128; chunk 256; SQuAD/MRQA 512)
  c.num_train_epochs = 0.0  # 0 = the task's default (3; RTE and STS-B 10; SQuAD 2)
  c.num_train_steps = 0  # > 0 overrides the epochs
  # Warmup steps = this x the run's steps, kept fractional as the original. Steps = (train
  # examples // batch_size) x epochs, rounded down, as the original.
  c.warmup_proportion = 0.1
  # lr x decay ** (depth from the top). 'original' (the original code, which still counts the
  # removed pooler): head 1, top layer decay ** 2, ..., embeddings decay ** (L + 2); 'correct':
  # head 1, top layer decay, ..., embeddings decay ** (L + 1). 1.0 = none.
  c.layerwise_lr_decay = 0.8
  c.layerwise_decay_rule = 'original'
  # 'sum': per-example losses summed over the batch (tagging: over labeled tokens), so the clip at
  # global norm 1.0 fires on nearly every step, as in the original; 'mean': averaged.
  c.loss_reduction = 'sum'
  # The task head's start: 'random' (the original), or 'probe': fit on the frozen encoder's [CLS]
  # vectors first (a logistic regression; linear probing, then fine-tuning), for classification
  # and regression tasks (electra_jax/finetune/probe.py).
  c.head_init = 'random'
  # True: no fine-tuning at all; the head fit on the frozen encoder's [CLS] vectors (as
  # head_init='probe' fits it) is the result, its dev score in results.json: a linear probe of what
  # the encoder holds. Classification and regression tasks.
  c.probe_only = False
  c.num_trials = 1  # seeds seed, seed + 1, ...; results.json reports each and the median
  c.eval_every_steps = 0  # 0 = once per epoch (and at the end); the best dev score is kept
  c.log_every_steps = 50
  # Train-state checkpoints (at every eval) kept per seed, for resuming; the best dev one is kept
  # besides them (its weights make the predictions).
  c.keep_checkpoints = 1
  c.async_checkpoints = True  # written in the background
  c.swap_augment = True  # MRPC and STS-B also train on (B, A), as the original
  c.predict_test = True  # write test-set predictions (GLUE submission files) with the best weights
  c.mesh_shape = (-1, 1, 1)  # (data, fsdp, tensor): the batch is split over data x fsdp
  # Non-finite steps, as in pre-training (electra_jax/defaults.py): 'stop' or 'skip_step'.
  c.nan_policy = 'stop'
  c.max_consecutive_nonfinite = 10

  c.data = ml_collections.ConfigDict()
  c.data.vocab = ''  # replaces the vocabulary recorded with init_checkpoint; needed without one
  c.data.do_lower_case = True  # data.vocab's casing (and a checkpoint's that records none)

  # The transformer (electra_jax/defaults.py). With init_checkpoint its sizes are the checkpoint's;
  # dtype, kernels, attention, remat and dropout are this run's.
  c.model = defaults.model_config(pretraining=False)
  # Fine-tuning dropout, whatever the checkpoint was pre-trained with (the original's 0.1).
  c.model.dropout_rate = 0.1
  c.model.attention_dropout_rate = 0.1
  c.optim = defaults.optim_config(pretraining=False)
  c.optim.learning_rate = 1e-4
  # 'electra' (the original): linear decay from step 0 times min(1, step / warmup), overlapping;
  # 'warmup_linear': warmup, then linear decay.
  c.optim.schedule = 'electra'

  c.custom = ml_collections.ConfigDict()
  c.custom.name = ''  # name used in outputs (default: 'custom')
  c.custom.train_file = ''
  c.custom.dev_file = ''
  c.custom.test_file = ''
  c.custom.text_a = 'text'  # column (header name / JSON key) of the first text
  c.custom.text_b = ''  # column of the second text of a pair ('' = single text)
  c.custom.label = 'label'
  # One label per line (default: the sorted labels of the train file); F1 is of the second label.
  c.custom.labels_file = ''
  c.custom.regression = False
  c.custom.metrics = ''  # comma-separated: accuracy,f1,mcc,pearson,spearman ('' = by task kind)

  c.tagging = ml_collections.ConfigDict()
  c.tagging.label_column = -1  # CoNLL column of the tag (chunk: 2, NER: 3; -1 = last)
  # 'bioes': train on BIOES tags (as the original for chunking), predictions written back as BIO;
  # 'file': train on the tags exactly as in the files.
  c.tagging.scheme = 'bioes'
  c.tagging.dropout = False  # the original's tagging head has no dropout; True: as the classifier

  # --mode=score (electra_jax/score.py): texts, one per line ('-' = stdin) -> JSONL of per-token
  # P(replaced) and per-text mean log P(original), from init_checkpoint's discriminator.
  c.score = ml_collections.ConfigDict()
  c.score.input = ''
  c.score.output = ''  # '' = WORKDIR/scores.jsonl
  # --mode=zeroshot: custom.dev_file classified by replaced-token detection: each label's word
  # fills the template's {label} slot ({text} or {text_a}, {text_b}: the example's texts); the
  # label whose word looks least replaced wins. label_words: 'label:word,label:word'.
  c.zeroshot = ml_collections.ConfigDict()
  c.zeroshot.template = '{text} It was {label}.'
  c.zeroshot.label_words = ''

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
