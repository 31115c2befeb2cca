"""ONNX Runtime sessions: provider choice without silent fallback, deliberate SessionOptions, IOBinding."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from . import arguments
from .arguments import DEVICES
from .model_folder import INPUTS, ModelFolderError

_PROVIDER = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
# ORT errors that mean "this provider did not come up" once the file itself has parsed (pybind's own classes are
# not RuntimeError subclasses; C++ std::runtime_error arrives as RuntimeError).
_PROVIDER_ERRORS = (RuntimeError, ValueError, ort_errors.Fail, ort_errors.EPFail, ort_errors.RuntimeException,
                    ort_errors.InvalidArgument, ort_errors.NotImplemented)
_LOAD_ERRORS = (ort_errors.InvalidProtobuf, ort_errors.InvalidGraph, ort_errors.NoModel, *_PROVIDER_ERRORS)
logger = logging.getLogger("albert_onnx")


class DeviceUnavailable(RuntimeError):
    """CUDA was asked for (or tried by ``device='auto'``) and did not come up; the message says why and what to do."""


def available_providers() -> list[str]:
    """Execution providers compiled into this onnxruntime build (not proof that they load: see :func:`create_session`)."""
    return list(ort.get_available_providers())


def cuda_missing_reason() -> str | None:
    """Why this onnxruntime cannot run CUDA at all, or None when it has the CUDA provider (whether that comes up
    on this machine is known only once a session is created)."""
    if "CUDAExecutionProvider" in available_providers():
        return None
    return (f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (it offers {', '.join(available_providers())}); "
            "install onnxruntime-gpu instead of onnxruntime (pip install 'albert-onnx[gpu]')")


def resolve_device(device: str) -> str:
    """Check a device name; ``cuda`` must at least be compiled into this onnxruntime.

    Returns:
        ``device`` itself (``auto`` is settled when a session is created: see ``AlbertEmbedder.from_pretrained``).

    Raises:
        ValueError: Unknown device name.
        DeviceUnavailable: ``cuda`` asked for but this onnxruntime has no CUDAExecutionProvider.
    """
    arguments.choice("device", device, DEVICES)
    reason = cuda_missing_reason() if device == "cuda" else None
    if reason is not None:
        raise DeviceUnavailable(f"device='cuda' but {reason}, or pass device='cpu'")
    return device


def cuda_options(device_id: object = 0, provider_options: object = None) -> dict[str, str]:
    """CUDAExecutionProvider options: ``device_id`` plus ONNX Runtime's own keys, passed through as strings.

    ONNX Runtime checks the keys and values itself when the session is created (``gpu_mem_limit`` in bytes,
    ``arena_extend_strategy`` ``kNextPowerOfTwo``/``kSameAsRequested``, ``cudnn_conv_algo_search``, ``use_tf32``,
    ``sdpa_kernel``, ...; see its CUDA provider documentation).

    Raises:
        TypeError: ``device_id`` is not an int, ``provider_options`` not a mapping of str to str/int/float/bool.
        ValueError: ``device_id`` below 0, or ``provider_options`` also sets ``device_id``.
    """
    device_id = arguments.count("device_id", device_id, 0)
    options = {"device_id": str(device_id)}
    if provider_options is None:
        return options
    if not isinstance(provider_options, Mapping):
        raise TypeError(f"provider_options={provider_options!r:.60}: pass a dict of CUDA provider options, e.g. {{'gpu_mem_limit': 2**33}}")
    for key, value in provider_options.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"provider_options key {key!r:.60}: pass option names as str")
        if key == "device_id":
            raise ValueError("provider_options['device_id']: pass device_id=N instead (one place for the GPU number)")
        if not isinstance(value, (str, int, float, bool)):
            raise TypeError(f"provider_options[{key!r}]={value!r:.60}: pass a str, int, float or bool")
        options[key] = ("1" if value else "0") if isinstance(value, bool) else str(value)
    return options


_preload_lock = threading.Lock()
_preload_said: str | None = None  # what onnxruntime.preload_dlls() printed, once per process


def preload_cuda_libraries() -> str:
    """Load CUDA/cuDNN from pip's nvidia-* packages (the ``[gpu]`` extra's, or torch's) before the first CUDA
    session, once per process; ``onnxruntime.preload_dlls()`` falls back to the system's library path itself.

    Returns:
        What ``preload_dlls`` printed (it prints, to stdout, which would corrupt piped output): logged, and added
        to the error when the CUDA session then fails.
    """
    global _preload_said
    with _preload_lock:
        if _preload_said is None:
            printed = io.StringIO()
            if hasattr(ort, "preload_dlls"):  # onnxruntime >= 1.21
                with contextlib.redirect_stdout(printed):
                    ort.preload_dlls()
            # once per process: redirect_stdout swaps sys.stdout for every thread for that moment
            _preload_said = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", printed.getvalue()).split())[:500]  # no ANSI colours
            if _preload_said:
                logger.debug("onnxruntime.preload_dlls(): %s", _preload_said)
        return _preload_said


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


def system_errno(error: Exception, path: str | Path) -> int | None:
    """The errno in an ONNX Runtime load error ("... failed:system error number 13"), or None; the path's own text
    is left out (a folder may be called anything)."""
    found = re.search(r"system error number (\d+)", str(error).replace(str(path), "PATH"))
    return int(found.group(1)) if found else None


def create_session(path: Path, device: str, threads: int | None, spin_wait: bool = True,
                   provider_options: Mapping[str, str] | None = None, data: bytes | None = None,
                   optimize: bool = True) -> ort.InferenceSession:
    """Create the session on exactly the provider asked for, and confirm it.

    Args:
        path: The graph (what messages name; read by ONNX Runtime unless ``data`` is given).
        device: ``cpu`` or ``cuda``.
        threads: Intra-op threads (see :func:`session_options`).
        spin_wait: See :func:`session_options`.
        provider_options: For ``cuda``, from :func:`cuda_options` (None: device 0, ONNX Runtime's defaults).
        data: The graph's bytes, already read (and checked against the manifest) by the caller.
        optimize: False to skip ONNX Runtime's graph optimizations, for a session only read, never run (``info``).

    Raises:
        ModelFolderError: ONNX Runtime cannot load the file, or its inputs are not an albert-onnx graph's.
        OSError: The system refused to open the file (permission denied, too many open files), naming it.
        DeviceUnavailable: The CUDA session did not come up (no GPU, CUDA/cuDNN missing, a bad provider option) or
            came up on another provider; the message holds ONNX Runtime's reason.
    """
    wanted = _PROVIDER[device]
    said = ""  # what preload_dlls printed, for a CUDA error
    if device == "cpu":
        providers: list = [wanted]
    else:
        resolve_device("cuda")
        preloaded = preload_cuda_libraries()
        said = f"; onnxruntime.preload_dlls() said: {preloaded}" if preloaded else ""
        providers = [(wanted, dict(provider_options or cuda_options())), "CPUExecutionProvider"]  # CPU hosts the shape ops
    options = session_options(threads, spin_wait)
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        # enable_fallback=0: ONNX Runtime would otherwise retry on CPU, printing to stdout, at creation and at run
        session = ort.InferenceSession(str(path) if data is None else data, options, providers=providers, enable_fallback=0)
    except _LOAD_ERRORS as error:
        number = system_errno(error, path)
        if number is not None:  # the OS refused to open it (EACCES, EMFILE): the file may be fine, so no "re-export"
            raise OSError(number, os.strerror(number), str(path)) from error
        message = str(error).replace(str(path), "PATH")  # what ONNX Runtime says, not what the folder is called
        if "bad_alloc" in message:
            raise  # out of memory while loading: neither the file's fault nor the GPU's, never relabelled
        # the graph did not load: the folder's fault, whatever the device (given bytes, ORT's message names no file)
        if "Load model from" in message or (data is not None and not _loads_on_cpu(data)):
            raise ModelFolderError(f"{path}: ONNX Runtime cannot load it ({_ort_said(error)[:300]}); the file is damaged or "
                                   "not an albert-onnx graph: re-export the folder") from error
        if device == "cpu":
            raise  # not the file, not a device we chose: memory, a bug; never relabelled
        raise DeviceUnavailable(f"the CUDA session did not come up ({_ort_said(error)[:400]}){said}; check the GPU "
                                "(nvidia-smi), CUDA 13 / cuDNN 9 (pip install 'albert-onnx[gpu]' brings them) and provider "
                                "options, or pass device='cpu'") from error
    if data is not None:
        # ONNX Runtime keeps the bytes it was given as long as the session lives (its own comment: "TODO: This is bad"),
        # a second copy of the graph (0.9 GB for xxlarge fp32). It reads them again only to re-create the session
        # (set_providers, or the fallback that enable_fallback=0 turns off), which nothing here does.
        session._model_bytes = None
    inputs = tuple(node.name for node in session.get_inputs())
    if sorted(inputs) != sorted(INPUTS):
        raise ModelFolderError(f"{path}: graph inputs {list(inputs)} are not {list(INPUTS)}; not an albert-onnx graph: re-export the folder")
    if session.get_providers()[0] != wanted:
        raise DeviceUnavailable(
            f"asked for {wanted} but the session runs on {session.get_providers()} (this onnxruntime offers "
            f"{available_providers()}){said}; check the GPU (nvidia-smi) and CUDA 13 / cuDNN 9 libraries, or pass device='cpu'"
        )
    return session


def _ort_said(error: Exception) -> str:
    """ONNX Runtime's message on one line, without the C++ source location before the reason ("/onnxruntime_src/...
    model.cc:256 onnxruntime::Model::Model(...) Unsupported ..."), which would fill a cut message."""
    return re.sub(r"/\S*onnxruntime_src/\S+:\d+ .*?\)(?: const)? (?=[A-Z])", "", " ".join(str(error).split()))


def _loads_on_cpu(data: bytes) -> bool:
    """Whether the graph ``data`` makes a plain CPU session. Asked only after a session from it failed: given bytes,
    ONNX Runtime's error names no file, so this tells the file's fault (it fails here too: not parsed, an IR version
    or opset newer than this onnxruntime, a type error) from the device's or the options'."""
    options = ort.SessionOptions()  # the cheapest session that still parses, resolves and type-checks the graph
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except _LOAD_ERRORS as error:
        return "bad_alloc" in str(error)  # out of memory here says nothing about the file
    return True


class GraphRunner:
    """Runs the embedding graph. With ``io_binding`` (the CUDA default) outputs are written in device memory of
    the session's GPU and only the requested ones come back to the host; inputs (a few KB of ids) are copied in
    by ONNX Runtime."""

    def __init__(self, session: ort.InferenceSession, device: str, io_binding: bool | None = None, device_id: int = 0) -> None:
        self.session = session
        self.device = device
        self.device_id = device_id
        self.io_binding = device == "cuda" if io_binding is None else io_binding

    def run(self, feeds: dict[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
        """Run the graph and return the named outputs as numpy arrays (thread-safe)."""
        if not self.io_binding:
            return self.session.run(list(outputs), feeds)
        binding = self.session.io_binding()  # one per call: bindings are not shared across threads
        for name, array in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        for name in outputs:
            binding.bind_output(name, self.device, self.device_id)  # the session's GPU, not implicitly GPU 0
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()
