"""ONNX Runtime sessions: provider choice without silent fallback, deliberate SessionOptions, IOBinding."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from . import arguments
from .model_folder import INPUTS, ModelFolderError

DEVICES = ("auto", "cpu", "cuda")
_PROVIDER = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def available_providers() -> list[str]:
    """Execution providers this onnxruntime build offers."""
    return list(ort.get_available_providers())


def resolve_device(device: str) -> str:
    """Turn ``auto``/``cpu``/``cuda`` into ``cpu`` or ``cuda``.

    Raises:
        ValueError: Unknown device name.
        RuntimeError: ``cuda`` asked for but this onnxruntime has no CUDAExecutionProvider.
    """
    arguments.choice("device", device, DEVICES)
    has_cuda = "CUDAExecutionProvider" in available_providers()
    if device == "auto":
        return "cuda" if has_cuda else "cpu"
    if device == "cuda" and not has_cuda:
        raise RuntimeError(
            f"device='cuda' but onnxruntime {ort.__version__} offers only {available_providers()}; "
            "install onnxruntime-gpu instead of onnxruntime (pip install 'albert-onnx[gpu]'), or pass device='cpu'"
        )
    return device


def session_options(threads: int | None, spin_wait: bool = True) -> ort.SessionOptions:
    """SessionOptions for one embedding model.

    Args:
        threads: Intra-op threads (None: ONNX Runtime's default, one per physical core).
        spin_wait: Let idle intra-op threads busy-wait for the next op (ONNX Runtime's default, fastest when
            this session has the cores to itself). False when other thread pools share the cores (several
            sessions in one process, PyTorch beside it): spinning threads then steal them from the busy one.

    Raises:
        TypeError: ``threads`` is not an int or None, or ``spin_wait`` is not a bool.
        ValueError: ``threads`` is below 1 or more than this machine can hold (see :func:`arguments.threads`).
    """
    threads = arguments.threads(threads)
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if arguments.flag("spin_wait", spin_wait) else "0")
    if threads is not None:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # the graph is one chain of layers: nothing to run side by side
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # The graph is fused offline; ENABLE_ALL adds ORT's own layout and MatMulIntegerToFloat fusions at load.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


def create_session(path: Path, device: str, threads: int | None, spin_wait: bool = True) -> ort.InferenceSession:
    """Create the session on exactly the provider asked for, and confirm it.

    Raises:
        ModelFolderError: ONNX Runtime cannot load the file, or its inputs are not an albert-onnx graph's.
        RuntimeError: The session did not come up on the requested provider (e.g. CUDA libraries missing).
    """
    wanted = _PROVIDER[device]
    providers = [wanted] if device == "cpu" else [wanted, "CPUExecutionProvider"]  # CPU hosts the shape ops
    options = session_options(threads, spin_wait)
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except (ort_errors.InvalidProtobuf, ort_errors.InvalidGraph, ort_errors.InvalidArgument, ort_errors.NoModel, ort_errors.Fail) as error:
        if "Load model from" not in str(error):  # not a parse failure (a provider, memory): not the file's fault
            raise
        raise ModelFolderError(f"{path}: ONNX Runtime cannot load it ({str(error)[:300]}); the file is damaged or "
                               "not an albert-onnx graph: re-export the folder") from error
    inputs = tuple(node.name for node in session.get_inputs())
    if sorted(inputs) != sorted(INPUTS):
        raise ModelFolderError(f"{path}: graph inputs {list(inputs)} are not {list(INPUTS)}; not an albert-onnx graph: re-export the folder")
    if session.get_providers()[0] != wanted:
        raise RuntimeError(
            f"asked for {wanted} but the session runs on {session.get_providers()}; "
            "check the CUDA/cuDNN libraries (onnxruntime.preload_dlls()) or pass device='cpu'"
        )
    return session


class GraphRunner:
    """Runs the embedding graph. With ``io_binding`` (the CUDA default) inputs are copied to the device once
    and only the requested outputs come back to the host."""

    def __init__(self, session: ort.InferenceSession, device: str, io_binding: bool | None = None) -> None:
        self.session = session
        self.device = device
        self.io_binding = device == "cuda" if io_binding is None else io_binding

    def run(self, feeds: dict[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
        """Run the graph and return the named outputs as numpy arrays (thread-safe)."""
        if not self.io_binding:
            return self.session.run(list(outputs), feeds)
        binding = self.session.io_binding()  # one per call: bindings are not shared across threads
        for name, array in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        for name in outputs:
            binding.bind_output(name, self.device)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()
