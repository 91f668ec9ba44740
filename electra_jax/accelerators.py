"""Whether JAX could run on an accelerator here, decided without importing or starting JAX.

An accelerator needs both its JAX plugin (libtpu for TPUs, a `jax_plugins` package for GPUs) and
the hardware: the `tpu` extra puts libtpu on CPU-only machines too (for compile_tpu.py), where
JAX then falls back to the CPU. The hardware checks are the ones JAX makes itself
(jax/_src/hardware_utils.py): TPU chips by their PCI ids, GPUs by their device files.
"""
import glob
import importlib.util
import os

_GOOGLE_PCI_VENDOR = '0x1ae0'  # also the vendor of Google's virtual NIC, hence the device ids
_TPU_PCI_DEVICES = ('0x0027', '0x0056', '0x005e', '0x0062', '0x0063', '0x006f', '0x0076')
_GPU_DEVICE_FILES = ('/dev/nvidia0', '/dev/nvidiactl', '/dev/dxg', '/dev/kfd')


def _read(path: str) -> str:
  try:
    with open(path) as f:
      return f.read().strip()
  except OSError:
    return ''


def tpu_attached(pci_root: str = '/sys/bus/pci/devices') -> bool:
  """A TPU chip on this host's PCI bus (or JAX_FORCE_TPU_INIT, JAX's own override)."""
  if 'JAX_FORCE_TPU_INIT' in os.environ:
    return True
  return any(_read(os.path.join(d, 'vendor')) == _GOOGLE_PCI_VENDOR and
             _read(os.path.join(d, 'device')) in _TPU_PCI_DEVICES
             for d in glob.glob(os.path.join(pci_root, '*')))


def gpu_attached() -> bool:
  return any(os.path.exists(f) for f in _GPU_DEVICE_FILES)


def accelerator_possible() -> bool:
  """Whether JAX may pick a TPU or GPU in this process (JAX_PLATFORMS decides if it is set)."""
  platforms = os.environ.get('JAX_PLATFORMS', '').strip()
  if platforms:
    return platforms.split(',')[0].strip() != 'cpu'
  def installed(name):
    return importlib.util.find_spec(name) is not None
  return ((installed('libtpu') and tpu_attached()) or
          (installed('jax_plugins') and gpu_attached()))
