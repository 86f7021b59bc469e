"""The published JSON Schema of ckptscan's --json output."""
