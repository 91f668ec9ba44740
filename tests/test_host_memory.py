"""host_memory.retain_freed_memory: a large block freed and allocated again is reused, not
page-faulted in afresh (what XLA:CPU's per-step temporaries need); on whenever JAX runs on the CPU
(accelerators.py), a TPU plugin without a TPU included."""
import os
import platform
import subprocess
import sys

import pytest

from electra_jax import accelerators

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
  env.update({'ELECTRA_JAX_RETAIN_FREED_MEMORY': '1' if retain else '0', 'PYTHONPATH': ROOT,
              **env_vars})
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


@pytest.mark.skipif(platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc',
                    reason='glibc malloc only')
@pytest.mark.skipif(accelerators.tpu_attached() or accelerators.gpu_attached(),
                    reason='this host has an accelerator')
def test_a_tpu_plugin_without_a_tpu_keeps_it_on(tmp_path):
  # The test extra installs libtpu (for compiling for TPU slices): on a CPU-only host JAX still
  # runs on the CPU, so the setting must stay on. A stand-in libtpu makes this hold without it too.
  (tmp_path / 'libtpu').mkdir()
  (tmp_path / 'libtpu' / '__init__.py').write_text('')
  applied, faults = _run(retain=True, PYTHONPATH=f'{ROOT}{os.pathsep}{tmp_path}')
  assert applied and faults < 2000, faults


@pytest.mark.parametrize('devices,attached', [
    ([('0x1ae0', '0x0063')], True),  # a TPU v5e chip
    ([('0x8086', '0x1237'), ('0x1ae0', '0x005e')], True),  # v4, among others
    ([('0x1ae0', '0x0042')], False),  # Google's virtual NIC: same vendor, no TPU
    ([('0x10de', '0x2330')], False),  # an NVIDIA H100
    ([], False)])
def test_tpu_attached_reads_the_pci_ids(tmp_path, monkeypatch, devices, attached):
  monkeypatch.delenv('JAX_FORCE_TPU_INIT', raising=False)
  for i, (vendor, device) in enumerate(devices):
    (tmp_path / f'0000:00:0{i}.0').mkdir()
    (tmp_path / f'0000:00:0{i}.0' / 'vendor').write_text(vendor + '\n')
    (tmp_path / f'0000:00:0{i}.0' / 'device').write_text(device + '\n')
  assert accelerators.tpu_attached(str(tmp_path)) == attached
