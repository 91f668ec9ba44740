r"""Command line entry point: a thin layer over the Python API.

  python -m electra_jax.main --config=configs/demo.py --workdir=/tmp/electra_demo
  python -m electra_jax.main --config=configs/small.py --workdir=DIR \
      --config.data.corpus='/data/text/*.txt' --config.data.vocab=/data/vocab.txt
  python -m electra_jax.main --mode=build_data --config=configs/small.py --workdir=DIR
  python -m electra_jax.main --mode=compile --config=configs/base.py --config.compile_topology=v5e-16

Fine-tuning (configs/finetune.py: a config with a `task` key runs --mode=finetune by default):
  python -m electra_jax.main --config=configs/finetune.py --config.task=mnli \
      --config.init_checkpoint=PRETRAIN_WORKDIR --config.data_dir=GLUE_DIR --workdir=DIR

Modes: `train` (default: builds the data if data.data_dir (WORKDIR/data) has none, then pre-trains,
resuming from the latest checkpoint in WORKDIR; a job of several processes needs the data built
beforehand), `build_data` (only the vocabulary and TFRecord shards),
`compile` (compiles the train and eval steps for the TPU slice `compile_topology` on this host and
prints per-chip HBM and FLOPs; no data, no TPU, no workdir needed: compile_tpu.py), and with
configs/finetune.py: `finetune`, `score` (per-token P(replaced) of texts, score.py) and `zeroshot`
(classification by replaced-token detection, score.py).
A problem with the input is printed as one `error: ...` line and exits with status 1. SIGTERM or
Ctrl-C saves a checkpoint of the current step and exits with status 0 (rerun to resume).
"""
import logging as std_logging
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # this CLI's own process: keep TF's C++ quiet
# TF only reads and parses records here (no float math), so oneDNN's banner is noise.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import logging  # pylint: disable=g-import-not-at-top,wrong-import-position
from ml_collections import config_flags

from electra_jax import host_memory  # pylint: disable=g-import-not-at-top,wrong-import-position
from electra_jax import paths  # pylint: disable=g-import-not-at-top,wrong-import-position
from electra_jax.errors import UserError  # pylint: disable=g-import-not-at-top,wrong-import-position

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to a configs/*.py file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where data, checkpoints and logs go.')
PRETRAINING_MODES = ('train', 'build_data', 'compile')
FINETUNING_MODES = ('finetune', 'score', 'zeroshot')
_MODE = flags.DEFINE_enum('mode', None, PRETRAINING_MODES + FINETUNING_MODES,
                          'What to run. Default: finetune for a fine-tuning config (one with a '
                          '`task` key, configs/finetune.py), train for any other.')


def run(mode, config, workdir: str):
  """Dispatch, importable from a notebook too. `mode` None: the config's kind decides."""
  fine_tuning = 'task' in config  # configs/finetune.py
  mode = mode or ('finetune' if fine_tuning else 'train')
  if fine_tuning != (mode in FINETUNING_MODES):
    raise UserError(
        f'--mode={mode} needs a fine-tuning config (configs/finetune.py); this one pre-trains'
        if not fine_tuning else
        f'--mode={mode} needs a pre-training config; this one fine-tunes (it has `task`): use '
        '--mode=finetune, score or zeroshot, or leave --mode out')
  if mode == 'build_data':
    from electra_jax import build_data  # pylint: disable=g-import-not-at-top
    return build_data.build_pretraining_data(config, workdir)
  if mode == 'compile':
    from electra_jax import compile_tpu  # pylint: disable=g-import-not-at-top
    return compile_tpu.run(config)
  if mode in ('score', 'zeroshot'):  # the discriminator as a tool (configs/finetune.py's keys)
    from electra_jax import score  # pylint: disable=g-import-not-at-top
    return (score.run_score if mode == 'score' else score.run_zeroshot)(config, workdir)
  if mode == 'finetune':
    from electra_jax.finetune import loop  # pylint: disable=g-import-not-at-top
    return loop.run(config, workdir)
  import jax  # pylint: disable=g-import-not-at-top
  from electra_jax import build_data  # pylint: disable=g-import-not-at-top
  from electra_jax import train  # pylint: disable=g-import-not-at-top
  train.check_before_data(config, workdir)  # a bad config or checkpoint: told before any build
  if jax.process_count() == 1:  # else every process must see the same shards: --mode=build_data
    build_data.build_pretraining_data(config, workdir)  # or reuses the data built already
  return train.train_and_evaluate(config, workdir)


def _console_filter(record) -> bool:
  """Our own INFO lines and the others' warnings and errors. Orbax and XLA log every save and
  backend probe at INFO; and when a checkpoint write fails (a full disk) orbax's threads and asyncio
  log it with tracebacks, which the run reports itself, as one error line."""
  if f'{os.sep}electra_jax{os.sep}' in record.pathname:
    return True
  failed_write = record.levelno >= std_logging.ERROR and (
      f'{os.sep}orbax{os.sep}' in record.pathname or record.name == 'asyncio')
  return record.levelno >= std_logging.WARNING and not failed_write


def _without_closed_loop_reports(excepthook):
  """After a failed checkpoint write orbax closes its event loop while TensorStore writes are still
  in flight; each then reports 'Event loop is closed' through sys.excepthook. Not news: dropped."""
  def hook(kind, value, tb):
    if not (kind is RuntimeError and str(value) == 'Event loop is closed'):
      excepthook(kind, value, tb)
  return hook


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  config_file = config_flags.get_config_filename(flags.FLAGS['config']) or ''
  if not config_file or (not _WORKDIR.value and _MODE.value != 'compile'):
    sys.exit('error: --config and --workdir are required')
  if not os.path.isfile(config_file.split(':')[0]):  # ml_collections would fail at first use
    sys.exit(f'error: the --config file {config_file.split(":")[0]} does not exist')
  if _MODE.value == 'compile':
    import jax  # pylint: disable=g-import-not-at-top
    # The TPU devices compiled for are libtpu's compile-only ones; JAX itself runs on the CPU
    # instead of probing this host for a TPU (which prints errors where there is none).
    jax.config.update('jax_platforms', 'cpu')
  logging.get_absl_handler().addFilter(_console_filter)
  sys.excepthook = _without_closed_loop_reports(sys.excepthook)
  # Before JAX starts its threads: XLA:CPU's per-step temporaries then reuse freed memory instead
  # of page-faulting it in again every step (host_memory.py).
  host_memory.retain_freed_memory()
  try:
    if os.environ.get('ELECTRA_JAX_DISTRIBUTED'):  # set by launch/ scripts on pods and multi-node
      from electra_jax import sharding  # pylint: disable=g-import-not-at-top
      sharding.initialize_distributed()  # JAX_COORDINATOR_ADDRESS etc. or cluster auto-detection
    run(_MODE.value, _CONFIG.value, _WORKDIR.value)
  except UserError as e:
    sys.exit(f'error: {e}')
  except OSError as e:  # the machine's side: a full disk, a file that vanished, permissions
    sys.exit(f'error: {e.strerror or e}' + (f': {e.filename}' if e.filename else ''))
  except paths.error_types() as e:  # the same from a remote file (gs://): tf.errors.OpError
    sys.exit(f'error: {str(getattr(e, "message", e)).splitlines()[0]}')
  except KeyboardInterrupt:
    sys.exit('interrupted; rerun the same command to resume from the last checkpoint')


def parse_flags(argv):
  """absl flag parsing, with a bad --config override told as one line instead of a traceback."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f'error: {e}')
  except (AttributeError, KeyError) as e:  # ml_collections: a key the config doesn't have
    while e.args and isinstance(e.args[0], BaseException):  # AttributeError(KeyError(text))
      e = e.args[0]
    key, *close = str(e.args[0] if e.args else e).strip('"').splitlines()  # "'key'\nDid you mean.."
    from electra_jax import defaults  # pylint: disable=g-import-not-at-top
    for old, new in defaults.MOVED_KEYS.items():  # a key of a section the config has, moved
      if key == repr(old.split('.')[-1]) and f'--config.{old}' in [a.split('=')[0] for a in argv]:
        sys.exit(f'error: unknown config key {old}: it is {new} now')
    hint = f' ({close[0].split(" instead")[0].replace("Did", "did")}?)' if close else ''
    sys.exit(f'error: unknown config key {key}{hint} (keys: electra_jax/defaults.py; fine-tuning: '
             'configs/finetune.py)')
  except (ValueError, TypeError) as e:
    sys.exit(f'error: bad config override: {e}')


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
