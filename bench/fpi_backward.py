"""Benchmark: implicit vs unrolled backward through DynaLay's fixed-point loops.

One forward + backward pass of the default CIFAR-size network (``DynaLayNet(DynaLayConfig())``:
3x32x32 input, widths 64/128/256, 10 classes) on a batch of random images, with ALL blocks looped
for exactly K iterations, cross-entropy loss against random labels, in two modes:

- ``implicit``: the library path. ``net.step(net.straight(images).state, actions)`` with every
  action = n_blocks (exactly what ``net(images, actions)`` runs, but it also returns the
  iteration counts, which are checked to be K). The config has ``tol=1e-12`` and ``max_iter=K``,
  so every block runs exactly K forward iterations under ``no_grad``; the gradient comes from
  TorchDEQ's IFT backward (an adjoint fixed-point solve to ``backward_tol=1e-6``, at most
  ``backward_max_iter=60`` iterations per block: its cost does NOT depend on K).
- ``unrolled``: plain autograd through K applications of ``block.f(z, u, weight)`` per block,
  starting from ``block.straight(u)`` (like ``unrolled_logits`` in tests/test_main_model.py).
  Every iterate is kept for the backward pass.

The network is in **eval mode**: BatchNorm uses its running statistics (nothing depends on the
batch) and each loop conv's operator norm is the stored estimate, so both modes see the same
fixed weights. Gradients still flow to every parameter and to the input path; eval mode only
removes the gradient through the power-iteration norm estimate that training mode adds.

Every (mode, K) measurement runs in a fresh subprocess (multiprocessing, 'spawn'), so nothing
left over from another measurement (allocator caches, high-water marks) can leak into it. In the
subprocess, after a cheap warm-up (a no-grad straight pass and one no-grad f application per
block on the batch, then one fwd+bwd of the same mode on 2 samples: kernels, thread pools and
one-time lazy allocations of the first backward, which would otherwise add ~100 MB to the
implicit mode's ``rss``), two identical fwd+bwd passes are run:

1. First pass, two measures:
   - ``saved``: the bytes autograd keeps for the backward pass, counted exactly with
     ``torch.autograd.graph.saved_tensors_hooks``: every tensor packed during the forward is
     wrapped, and right before ``backward()`` the unique storages (by data pointer) of the
     wrappers still alive in the graph are summed. Parameters and buffers are excluded (they
     exist anyway); graph pieces that died during the forward (the straight pass's dead
     branches) are not counted. Deterministic: the primary memory measure, and the one of the
     final ratio line. Not counted: tensors a custom autograd Function keeps outside
     ``save_for_backward``; TorchDEQ's IFTGrad holds the closure ``z -> f(z, u, W)``, i.e. each
     looped block's injection u (one activation per block); ``peak`` includes it.
   - ``rss`` (CPU, Linux only): peak resident set size of the process during the pass minus the
     resident size right before it. The kernel's high-water mark is reset first (writing 5 to
     /proc/self/clear_refs) and read back as VmHWM from /proc/self/status right after
     ``backward()``. Measured on the first full-size pass, while malloc holds no freed memory
     from an earlier one that could be reused unseen; it includes malloc overhead and heap
     fragmentation, so it is noisier than ``peak`` and usually above it.
   On CUDA this pass also gives ``peak``: ``torch.cuda.max_memory_allocated()`` after
   ``reset_peak_memory_stats()``, minus the memory allocated before the pass.
2. Second pass (CPU): ``peak``, the peak of memory allocated by tensors during the pass
   (forward, backward and the gradients) above what was allocated before it, from
   ``torch.profiler`` with ``profile_memory=True``: the running sum of the allocation/free
   ``[memory]`` events of the exported trace. Comparable to CUDA's ``max_memory_allocated``.

Time is the wall clock of a pass (synchronised on CUDA), the smaller of the two: the first may pay
first-call costs for the full batch size, and other jobs may share the cores. The saved-tensor hooks and
the profiler add well under 1% (one Python call per saved tensor, one record per op).

Run from the repository root: ``python bench/fpi_backward.py [--batch-size 64]
[--iterations 5 10 30] [--device auto] [--threads N]``; ``--threads`` sets torch's intra-op
threads (default: torch's default). MB = 2**20 bytes; "ratio" = unrolled / implicit.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import multiprocessing
import os
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.profiler import ProfilerActivity, profile

from main_model import DynaLayConfig, DynaLayNet

MB = 2**20
SEED = 0
WARM_UP_BATCH = 2
TINY_TOL = 1e-12  # never reached in float32, so every loop runs exactly max_iter iterations


@dataclass(frozen=True)
class Spec:
    """One measurement: ``mode`` ("implicit" or "unrolled"), K = ``iterations`` per block, batch, device, threads."""

    mode: str
    iterations: int
    batch_size: int
    device: str
    threads: int


@dataclass(frozen=True)
class Measurement:
    """Results of one :class:`Spec`, in seconds and bytes (``rss_bytes`` is None off CPU/Linux)."""

    seconds: float
    saved_bytes: int
    peak_bytes: int
    rss_bytes: int | None


# ----- the two forward paths ----------------------------------------------------------------------
def implicit_logits(net: DynaLayNet, images: Tensor, iterations: int) -> Tensor:
    """Library path (= ``net(images, actions)``), looping every block; checks K iterations ran."""
    actions = torch.full((images.shape[0],), net.n_blocks, device=images.device)
    output = net.step(net.straight(images).state, actions)
    if not bool((output.iterations == iterations).all()):
        raise RuntimeError(
            f"expected exactly {iterations} iterations per block, got "
            f"{output.iterations.unique().tolist()}"
        )
    return output.state.logits


def unrolled_logits(net: DynaLayNet, images: Tensor, iterations: int) -> Tensor:
    """Plain autograd through ``iterations`` applications of f per block, from the straight z."""
    x = images
    for block in net.blocks:
        u = block.inject(x)
        weight = block.loop_conv.effective_weight()
        z = block.straight(u)
        for _ in range(iterations):
            z = block.f(z, u, weight)
        x = z
    return net.head(x.mean(dim=(2, 3)))


LOGITS: dict[str, Callable[[DynaLayNet, Tensor, int], Tensor]] = {
    "implicit": implicit_logits,
    "unrolled": unrolled_logits,
}


# ----- memory meters ------------------------------------------------------------------------------
class _Packed:
    """What the pack hook stores in the graph; a weak reference to it tells if it is still there.

    It keeps ``tensor.detach()`` (same storage and version counter, no ``grad_fn``): keeping a
    saved *output* itself would make a reference cycle (output -> grad_fn -> saved output) that
    keeps dead graph pieces alive until the garbage collector runs.
    """

    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor: Tensor) -> None:
        self.tensor = tensor.detach()


class SavedTensorMeter:
    """Counts the bytes autograd saves for backward while the context is active (see docstring)."""

    def __init__(self, exclude: Iterable[Tensor]) -> None:
        self._excluded = {t.untyped_storage().data_ptr() for t in exclude}
        self._packed: list[weakref.ref[_Packed]] = []
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _pack(self, tensor: Tensor) -> _Packed:
        packed = _Packed(tensor)
        self._packed.append(weakref.ref(packed))
        return packed

    @staticmethod
    def _unpack(packed: _Packed) -> Tensor:
        return packed.tensor

    def __enter__(self) -> SavedTensorMeter:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._hooks.__exit__(*exc_info)

    def live_bytes(self) -> int:
        """Bytes of the unique storages still held by the graph (parameters/buffers excluded)."""
        storages: dict[int, int] = {}
        for ref in self._packed:
            packed = ref()
            if packed is None:
                continue
            storage = packed.tensor.untyped_storage()
            if storage.data_ptr() not in self._excluded:
                storages[storage.data_ptr()] = storage.nbytes()
        return sum(storages.values())


def _proc_status_bytes(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM) in bytes; None where unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Hide the profiler backend's C++ log lines (written straight to file descriptor 2)."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _peak_from_trace(trace_path: Path) -> int:
    """Peak of the running sum of the CPU allocation/free events of a chrome trace."""
    events = json.loads(trace_path.read_text())["traceEvents"]
    memory = [e for e in events if e.get("name") == "[memory]" and e["args"]["Device Type"] == 0]
    running, peak = 0, 0
    for event in sorted(memory, key=lambda e: float(e["ts"])):
        running += int(event["args"]["Bytes"])
        peak = max(peak, running)
    return peak


# ----- one measurement (runs in a fresh subprocess) -----------------------------------------------
def _setup(spec: Spec) -> tuple[DynaLayNet, Tensor, Tensor]:
    """The seeded network (eval mode), random images and random labels for ``spec``."""
    torch.manual_seed(SEED)
    config = DynaLayConfig(tol=TINY_TOL, max_iter=spec.iterations)
    # Construction runs a power iteration of batch-1 convs: single-threaded, it does not stall
    # when other jobs share the cores (thousands of tiny parallel regions would).
    torch.set_num_threads(1)
    net = DynaLayNet(config).eval().to(spec.device)
    torch.set_num_threads(spec.threads)
    generator = torch.Generator().manual_seed(SEED + 1)
    shape = (spec.batch_size, config.in_channels, config.image_size, config.image_size)
    images = torch.randn(shape, generator=generator).to(spec.device)
    labels = torch.randint(0, config.num_classes, (spec.batch_size,), generator=generator)
    return net, images, labels.to(spec.device)


def _warm_up(net: DynaLayNet, images: Tensor, labels: Tensor, spec: Spec) -> None:
    """Create kernels and pay one-time costs without growing the heap to a full pass's size."""
    with torch.no_grad():
        state = net.straight(images).state
        for block, u in zip(net.blocks, state.injection, strict=True):
            block.f(block.straight(u), u, block.loop_conv.effective_weight())
    small = slice(0, WARM_UP_BATCH)
    _forward_backward(net, images[small], labels[small], spec, meter=None)
    net.zero_grad(set_to_none=True)


def _forward_backward(
    net: DynaLayNet, images: Tensor, labels: Tensor, spec: Spec, meter: SavedTensorMeter | None
) -> int | None:
    """One fwd+bwd pass; returns the saved-for-backward bytes when a meter is given."""
    net.zero_grad(set_to_none=True)
    with meter if meter is not None else contextlib.nullcontext():
        loss = F.cross_entropy(LOGITS[spec.mode](net, images, spec.iterations), labels)
    saved = meter.live_bytes() if meter is not None else None
    loss.backward()
    return saved


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _timed_forward_backward(
    net: DynaLayNet, images: Tensor, labels: Tensor, spec: Spec, meter: SavedTensorMeter | None
) -> tuple[float, int | None]:
    """(wall-clock seconds, saved-for-backward bytes or None) of one fwd+bwd pass."""
    gc.collect()
    _synchronize(spec.device)
    start = time.perf_counter()
    saved = _forward_backward(net, images, labels, spec, meter)
    _synchronize(spec.device)
    return time.perf_counter() - start, saved


def _first_pass(
    net: DynaLayNet, images: Tensor, labels: Tensor, spec: Spec
) -> tuple[float, int, int | None, int | None]:
    """One fwd+bwd pass: (seconds, saved-for-backward bytes, peak RSS delta bytes or None,
    CUDA peak allocated bytes or None)."""
    meter = SavedTensorMeter([*net.parameters(), *net.buffers()])
    on_cuda = spec.device.startswith("cuda")
    gc.collect()
    if on_cuda:
        _synchronize(spec.device)
        torch.cuda.reset_peak_memory_stats(spec.device)
        cuda_before = torch.cuda.memory_allocated(spec.device)
    rss_before = _proc_status_bytes("VmRSS")
    rss_reset = not on_cuda and _reset_peak_rss()
    seconds, saved = _timed_forward_backward(net, images, labels, spec, meter)
    rss_peak = _proc_status_bytes("VmHWM")
    assert saved is not None
    rss = None
    if rss_reset and rss_before is not None and rss_peak is not None:
        rss = rss_peak - rss_before
    cuda_peak = torch.cuda.max_memory_allocated(spec.device) - cuda_before if on_cuda else None
    return seconds, saved, rss, cuda_peak


def _second_pass(
    net: DynaLayNet, images: Tensor, labels: Tensor, spec: Spec
) -> tuple[float, int | None]:
    """One fwd+bwd pass: (seconds, peak tensor bytes from the profiler on CPU, else None)."""
    if spec.device.startswith("cuda"):
        seconds, _ = _timed_forward_backward(net, images, labels, spec, meter=None)
        return seconds, None
    with tempfile.TemporaryDirectory() as folder, _native_stderr_silenced():
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            seconds, _ = _timed_forward_backward(net, images, labels, spec, meter=None)
        trace = Path(folder) / "trace.json"
        prof.export_chrome_trace(str(trace))
        return seconds, _peak_from_trace(trace)


def measure(spec: Spec) -> Measurement:
    """Warm up, then the two measured passes of ``spec`` (call in a fresh process)."""
    net, images, labels = _setup(spec)
    _warm_up(net, images, labels, spec)
    first_seconds, saved, rss, cuda_peak = _first_pass(net, images, labels, spec)
    second_seconds, cpu_peak = _second_pass(net, images, labels, spec)
    peak = cuda_peak if cuda_peak is not None else cpu_peak
    assert peak is not None
    return Measurement(
        seconds=min(first_seconds, second_seconds),
        saved_bytes=saved,
        peak_bytes=peak,
        rss_bytes=rss,
    )


def measure_in_subprocess(spec: Spec) -> Measurement:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(measure, spec).result()


# ----- report -------------------------------------------------------------------------------------
def _describe(result: Measurement) -> str:
    text = (
        f"{result.seconds:.2f} s  {result.saved_bytes / MB:.1f} MB saved  "
        f"{result.peak_bytes / MB:.1f} MB peak"
    )
    if result.rss_bytes is not None:
        text += f"  {result.rss_bytes / MB:.1f} MB rss"
    return text


def format_line(iterations: int, implicit: Measurement, unrolled: Measurement) -> str:
    saved_ratio = unrolled.saved_bytes / implicit.saved_bytes
    peak_ratio = unrolled.peak_bytes / implicit.peak_bytes
    time_ratio = unrolled.seconds / implicit.seconds
    return (
        f"iterations={iterations:<3d} implicit: {_describe(implicit)} | "
        f"unrolled: {_describe(unrolled)} | "
        f"ratio mem {saved_ratio:.2f}x (peak {peak_ratio:.2f}x) time {time_ratio:.2f}x"
    )


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--iterations", type=int, nargs="+", default=[5, 10, 30])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="torch intra-op threads (default: torch's default, %(default)s here); 1 is steadier "
        "when other jobs share the cores",
    )
    args = parser.parse_args(argv)
    if min(args.batch_size, args.threads, *args.iterations) < 1:
        parser.error("--batch-size, --iterations and --threads must be >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = resolve_device(args.device)
    print(
        f"# DynaLayNet(DynaLayConfig()) eval mode, batch {args.batch_size}, all blocks looped, "
        f"device {device}, {args.threads} threads; time = best of 2 fwd+bwd passes"
    )
    saved_ratio: dict[int, float] = {}
    for iterations in args.iterations:
        implicit = measure_in_subprocess(
            Spec("implicit", iterations, args.batch_size, device, args.threads)
        )
        unrolled = measure_in_subprocess(
            Spec("unrolled", iterations, args.batch_size, device, args.threads)
        )
        saved_ratio[iterations] = unrolled.saved_bytes / implicit.saved_bytes
        print(format_line(iterations, implicit, unrolled), flush=True)
    largest = max(args.iterations)
    print(f"memory ratio unrolled/implicit at {largest} iterations: {saved_ratio[largest]:.2f}")


if __name__ == "__main__":
    main()
