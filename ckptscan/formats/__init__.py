"""One module (or package, for a family) per checkpoint format; see ``ckptscan.registry``."""
