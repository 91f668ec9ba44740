"""Host memory: keep freed memory in the process for reuse instead of returning it to the OS.

XLA's CPU backend mallocs a step's temporaries at every execution (gigabytes for ELECTRA-Small)
and frees them afterwards. glibc serves blocks that large with fresh mmap'd pages and unmaps them
on free, so every step page-faults and zero-fills the same memory again, in kernel time. With one
malloc arena, no mmap and no trimming, the step reuses the same heap and takes no page faults
(benchmarks/README.md has the measured step times). The process keeps its peak heap size
(training processes do anyway).

The settings only reach threads that have not allocated yet, so call `retain_freed_memory` before
the first JAX computation: main.py and the benchmarks do it first thing; in a notebook, in the
first cell. It does nothing where JAX may run on an accelerator (a TPU/GPU plugin and the hardware
are both there, or JAX_PLATFORMS names another platform first; accelerators.py): there the step's
temporaries live on the device, and one malloc arena would only serialize the host's input-pipeline
threads. A plugin alone (libtpu on a CPU-only machine, for compile_tpu.py) changes nothing here.
"""
import ctypes
import ctypes.util
import os

from electra_jax import accelerators

# mallopt parameters (glibc malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


def retain_freed_memory() -> bool:
  """Tells glibc malloc to keep freed memory: one arena, no mmap, never trim.

  Returns True when glibc accepted all three settings; False, changing nothing, where there is no
  glibc (macOS, musl), JAX may use an accelerator, or ELECTRA_JAX_RETAIN_FREED_MEMORY=0 is set.
  """
  if (os.environ.get('ELECTRA_JAX_RETAIN_FREED_MEMORY', '1') == '0' or
      accelerators.accelerator_possible()):
    return False
  try:
    mallopt = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6').mallopt
  except (OSError, AttributeError):
    return False
  # -1 disables trimming altogether (man mallopt).
  settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1))
  return all(mallopt(param, value) == 1 for param, value in settings)
