import os
from pathlib import Path

# DeepSpeed JIT-builds its CPU comm op once; keep the cache in the venv like the Makefile does.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(__file__).resolve().parents[2] / ".venv" / "torch_extensions"))
