"""host_memory.retain_freed_memory: a large block freed and allocated again is reused, not
page-faulted in afresh (what XLA:CPU's per-step temporaries need)."""
import os
import platform
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_PROGRAM = r'''
import ctypes, resource
from electra_jax import host_memory
print(host_memory.retain_freed_memory())
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
size = 64 << 20  # 64 MB: glibc mmaps blocks this large by default, and unmaps them on free

def use_block():
  block = libc.malloc(size)
  ctypes.memset(block, 1, size)  # touch every page
  libc.free(block)

use_block()
before = faults()
for _ in range(3):
  use_block()
print(faults() - before)
'''


def _run(retain: bool, **env_vars):
  env = {k: v for k, v in os.environ.items() if k != 'JAX_PLATFORMS'}
  env.update(ELECTRA_JAX_RETAIN_FREED_MEMORY='1' if retain else '0', PYTHONPATH=ROOT, **env_vars)
  out = subprocess.run([sys.executable, '-c', _PROGRAM], env=env, capture_output=True, text=True,
                       check=True).stdout.split()
  return out[0] == 'True', int(out[1])


@pytest.mark.skipif(platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc',
                    reason='glibc malloc only')
def test_freed_memory_is_reused_instead_of_faulted_in_again():
  applied, faults = _run(retain=True)
  assert applied
  # 3 x 64 MB = 49152 pages of 4 KB if every allocation were fresh memory.
  assert faults < 2000, faults
  applied, faults = _run(retain=False)  # ELECTRA_JAX_RETAIN_FREED_MEMORY=0: glibc's defaults
  assert not applied
  assert faults > 40000, faults
  # Where JAX would run on an accelerator it changes nothing.
  applied, faults = _run(retain=True, JAX_PLATFORMS='tpu,cpu')
  assert not applied and faults > 40000, faults
