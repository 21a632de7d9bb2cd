"""``import pynvml`` in a node agent started by the tests with this folder first on PYTHONPATH: the
fake of NVML (tests/support/fake_nvml.py) reading the recording at $LLAMACONTROLLER_FAKE_NVML."""

import sys

from tests.support.fake_nvml import module_from_environment

sys.modules[__name__] = module_from_environment()
