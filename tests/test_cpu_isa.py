"""The numerics tests hold on an AVX2 CPU too, checked on whatever CPU runs the suite.

oneDNN, which TensorFlow uses for convolutions, batch norm and matrix products on x86,
picks its kernels by the CPU's instruction set; ``ONEDNN_MAX_CPU_ISA=AVX2`` makes it use
the kernels an AVX2-only machine runs (different blocking, so float32 sums in another
order). The compiled-step tests (tests/test_steps.py) run here in a child process under
that cap, so an AVX-512 CI machine also checks the AVX2 path the tolerances must cover.
"""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT


def _env(**extra) -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2", **extra)


def test_onednn_honours_the_avx2_cap():
    """The cap is real: oneDNN reports AVX2 as the instruction set it dispatches to."""
    code = ("import tensorflow as tf\n"
            "x = tf.random.uniform([2, 16, 16, 8]); k = tf.random.uniform([3, 3, 8, 8])\n"
            "tf.nn.conv2d(x, k, 1, 'SAME').numpy()\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=_env(ONEDNN_MAX_CPU_ISA="AVX2", ONEDNN_VERBOSE="1", TF_ENABLE_ONEDNN_OPTS="1"))
    assert out.returncode == 0, out.stderr[-2000:]
    isa_lines = [line for line in (out.stdout + out.stderr).splitlines() if ",info,cpu,isa:" in line]
    assert isa_lines and all("AVX2" in line and "AVX-512" not in line for line in isa_lines), isa_lines


def test_compiled_step_tests_pass_with_avx2_kernels():
    # The two tests whose tolerances are derived from float32 reordering.
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "tests/test_steps.py", "-k",
                          "compiled_step_equals_eager_step or two_replicas_match_one"],
                         cwd=ROOT, capture_output=True, text=True, timeout=900,
                         env=_env(ONEDNN_MAX_CPU_ISA="AVX2", TF_ENABLE_ONEDNN_OPTS="1"))
    assert out.returncode == 0, out.stdout[-3000:]
    assert "2 passed" in out.stdout and "failed" not in out.stdout
