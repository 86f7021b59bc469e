"""Renderers: they turn scan results into text or documents and do no I/O of their own."""
