"""ckptscan: what is inside a model checkpoint, without running it or loading its weights.

The Python API::

    import ckptscan
    result = ckptscan.scan("model.safetensors")      # never raises for a bad file
    inventory = ckptscan.read_inventory("model.gguf")  # raises ckptscan.CkptscanError
"""

from ckptscan._version import __version__
from ckptscan.errors import CkptscanError
from ckptscan.inventory import Finding, Inventory, Severity, Storage, Tensor
from ckptscan.scan import ScanError, ScanResult, model_inputs, read_inventory, scan

__all__ = [
    "CkptscanError",
    "Finding",
    "Inventory",
    "ScanError",
    "ScanResult",
    "Severity",
    "Storage",
    "Tensor",
    "__version__",
    "model_inputs",
    "read_inventory",
    "scan",
]
