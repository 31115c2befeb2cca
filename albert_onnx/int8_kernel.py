"""Does this machine's ONNX Runtime multiply uint8 x int8 exactly? Asked once per process, by running it.

The int8 graph's integer GEMMs come in two forms with the same levels (export/quantize.py): uint8 x uint8 (weights
stored around 128), exact on every CPU, and uint8 x int8, ONNX Runtime's fast path where VNNI or AMX run it (2.4x
faster at b1·s128 on a Xeon with AMX; README, "int8 scheme"). On x86 CPUs without VNNI (AVX2, or AVX-512 without
VNNI: AMD Zen 1-3, Intel Skylake-SP and older) ONNX Runtime computes uint8 x int8 with vpmaddubsw, which adds
pairs of products in int16 and saturates: wrong vectors. CPU flags say which kernel ONNX Runtime ought to pick; running the product says which one
it does pick, for any CPU and any onnxruntime. The probe graph (:data:`PROBE_FILE`, built by
``albert_onnx_export.quantize.u8s8_probe_model``) is one MatMulIntegerToFloat as the int8 graph uses it: constant
int8 weights, per-row activation scales, zero points 128 and 0. Its columns of +127 and -128 meet rows of 255, so
every pair of products is +-64770 or -65280, past int16.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from .session import session_options, system_errno

logger = logging.getLogger(__name__)

PROBE_FILE = Path(__file__).with_name("u8s8_probe.onnx")
PROBE_K, PROBE_N = 256, 32  # K spans several of ONNX Runtime's packed K blocks; N two AVX-512 column groups
PROBE_SEED = 20261202
ROW_ZERO_POINT = 128  # as the int8 graph's activations (export/quantize.py)
PROBE_ROWS = (1, 3, 16, 37)  # one row (the b1 path), odd counts and a multiple of the kernels' row blocks


def probe_weights() -> np.ndarray:
    """The probe's int8 weights [K, N]: 8 columns of +127 / -128 (every int16 pair sum overflows), then random levels."""
    weights = np.random.default_rng(PROBE_SEED).integers(-128, 128, size=(PROBE_K, PROBE_N)).astype(np.int8)
    weights[:, :8] = np.where(np.arange(8) % 2 == 0, 127, -128).astype(np.int8)
    return weights


def probe_rows(count: int) -> np.ndarray:
    """uint8 activations [1, count, K]: a row of 255 (the saturating one), then a row of 0, then random rows."""
    rows = np.random.default_rng(PROBE_SEED + count).integers(0, 256, size=(1, count, PROBE_K)).astype(np.uint8)
    rows[0, 0] = 255
    if count > 1:
        rows[0, 1] = 0
    return rows


_lock = threading.Lock()
_verdict: list[bool] = []  # the answer, once known (ONNX Runtime chooses its kernels once per process)


def _new_lock_in_child() -> None:
    # a fork while another thread probes copies the lock held: the child would wait forever for a thread it lacks
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_in_child)


def u8s8_is_exact() -> bool:
    """True when ONNX Runtime's CPU uint8 x int8 product equals the exact integer product on this machine.

    Asked once per process (thread-safe). Errors from ONNX Runtime propagate: a broken install is not a verdict.

    Raises:
        FileNotFoundError: The probe graph is missing from the installed package.
        OSError: The probe graph is there but ONNX Runtime cannot load it (a damaged install).
    """
    with _lock:
        if not _verdict:
            _verdict.append(_probe())
        return _verdict[0]


def _probe() -> bool:
    if not PROBE_FILE.is_file():
        raise FileNotFoundError(errno.ENOENT, "albert-onnx's uint8 x int8 probe graph is missing: reinstall albert-onnx "
                                "(its wheel ships the file)", str(PROBE_FILE))
    try:
        session = ort.InferenceSession(str(PROBE_FILE), session_options(1, spin_wait=False), providers=["CPUExecutionProvider"])
    except (ort_errors.InvalidProtobuf, ort_errors.InvalidGraph, ort_errors.NoModel, ort_errors.InvalidArgument,
            ort_errors.NotImplemented, ort_errors.Fail) as error:
        said = " ".join(str(error).split())
        number = system_errno(error, PROBE_FILE)
        if number is not None:  # the OS refused (EMFILE, EACCES...): the file may be fine, so no "reinstall"
            raise OSError(number, f"albert-onnx's uint8 x int8 probe graph could not be opened: {os.strerror(number)}",
                          str(PROBE_FILE)) from error
        if "Load model from" not in said or "bad_alloc" in said:  # not the file's content (memory, say): never relabelled
            raise
        raise OSError(errno.EIO, f"albert-onnx's uint8 x int8 probe graph does not load ({said[:300]}): reinstall albert-onnx",
                      str(PROBE_FILE)) from error
    inputs = sorted((node.name, node.type) for node in session.get_inputs())
    if inputs != [("row_scale", "tensor(float)"), ("rows", "tensor(uint8)")]:
        raise OSError(errno.EIO, f"albert-onnx's uint8 x int8 probe graph has the inputs {inputs!r:.200}, not rows (uint8) and "
                      "row_scale (float): another file was installed in its place: reinstall albert-onnx", str(PROBE_FILE))
    weights = probe_weights().astype(np.int64)
    for count in PROBE_ROWS:
        rows = probe_rows(count)
        (product,) = session.run(None, {"rows": rows, "row_scale": np.ones((1, count, 1), np.float32)})
        exact = (rows.astype(np.int64) - ROW_ZERO_POINT) @ weights  # |x| <= 256 * 128 * 128 < 2**24: exact in float32
        if not np.array_equal(product, exact.astype(np.float32)):
            wrong = int((product != exact).sum())
            logger.debug("uint8 x int8 is not exact here: %d of %d probe outputs wrong at %d rows; int8 uses uint8 x uint8",
                         wrong, product.size, count)
            return False
    logger.debug("uint8 x int8 is exact here (probe of %s rows): int8 uses its uint8 x int8 graph", ", ".join(map(str, PROBE_ROWS)))
    return True
