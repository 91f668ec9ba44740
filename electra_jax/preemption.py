"""Stopping on request: SIGTERM and SIGINT end a run cleanly at the next step boundary.

SIGTERM is what a TPU VM maintenance event, a spot / preemptible VM being reclaimed, `kill` and
SLURM's time limit send; SIGINT is Ctrl-C. The loop finishes the step it is in, saves a checkpoint
of it, and returns; the same command resumes bit for bit. A second signal acts at once (the handler
puts the previous one back): Ctrl-C twice stops without saving.

One process: a Python signal handler sets a flag that the loop reads after every step (no device
work). Several processes (jax.distributed) must stop at the same step, since saving is a collective:
JAX's preemption service catches SIGTERM on any of them and agrees on the step
(multihost_utils.reached_preemption_sync_point), so no Python handler is installed there.
"""
import signal
import threading

import jax

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
  """Catches SIGTERM / SIGINT from construction until `restore()`; `requested(step)` says whether
  to stop after `step`; `reason` names the signal."""

  def __init__(self):
    self.reason = None
    self._previous = {}
    self._multi_process = jax.process_count() > 1
    if self._multi_process or threading.current_thread() is not threading.main_thread():
      return  # signal handlers can only be set from the main thread
    for sig in SIGNALS:
      self._previous[sig] = signal.signal(sig, self._handle)

  def _handle(self, signum, frame):
    del frame
    self.reason = signal.Signals(signum).name
    self.restore()

  def restore(self):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}

  def requested(self, step: int) -> bool:
    if self._multi_process:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      try:
        if multihost_utils.reached_preemption_sync_point(step):
          self.reason = 'a preemption notice (SIGTERM)'
      except RuntimeError:  # the job runs with jax_enable_preemption_service off
        pass
    return self.reason is not None
