"""Test support shipped with the package (``make gpu-smoke`` and the paper-profile tests build from here)."""
