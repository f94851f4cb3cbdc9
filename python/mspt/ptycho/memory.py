"""Memory planner of a multislice ptychography run: what it will hold on the host and on the GPU, at its peak,
before any of it is allocated; the batch size and the streaming decision that fit a budget.

``plan(scan, config, device) -> MemoryPlan``. The figures are counted from what the code allocates (sizes in
bytes; "object" = one (S, H, W) complex64 stack, "plane" = one probe window of complex64):

* Python loop (engine.py, reconstruct.py): the object slices and the best-state copy the stopping rule keeps;
  per batch the object gradient the native call returns (the previous batch's is freed first; the step
  scales it in place; the object constraint works in place without scratch); the patterns when held in
  memory, else two batches read from the file, the one being fitted and the next, read meanwhile
  (read_ahead.py; scan.py reads a raster file one scan row at a time: the row and its selection, written
  into the float32 batch).
* CPU engine (cpp/cpu/multislice_cpu.*): per thread the waves entering each slice (S x M planes) and, with
  tilt refinement, the propagated spectra (S x M), M far-field planes, 4 complex work planes (one of them
  the band-limited transforms') and 2 float ones; per chunk of positions (:func:`cpu_chunk_positions`) the
  object-gradient windows (S planes each) and probe-gradient spectra. One thread visits the positions in
  order and adds each one's gradients to the totals itself: it keeps one position's windows (none with one
  mode) and no probe-gradient spectra.
* CUDA engine (cuda/multislice_cuda.*): the object and its gradient, the probe, its spectrum and gradient,
  and per chunk of P = min(256, positions per call, what 70 % of the free memory holds) positions the waves
  of every slice, far field, work and gradient stacks (M planes each), four float planes, and a cuFFT work
  area (at most one more stack).
* Reading and checking the scan once before the run (1024 patterns at a time), and holding it: each read
  makes the float32 result, plus one copy in the data's own dtype where a NumPy array is converted or
  transposed or a file holds a list of positions, plus a file raster's current scan row and its selection.

* Beyond the arrays: native code paged in and modules imported at the first run of a process, and the freed
  blocks the C allocator keeps for reuse (measured; see RUNTIME_BYTES and the allocator note below).

Not counted: the CUDA runtime's and cuFFT's own host memory and the CUDA context. The self-check (``self_check
= "frc"``) runs two more reconstructions of half the positions after the main one has been freed: at most
the main run's peak again.

The peak is the largest of the phases (checking, loading, iterating, finishing); `format_plan` / ``str(plan)``
prints the table a user (or ``mspt plan``) reads.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .config import PtychoConfig
from .position_search import FINE_STEP_PX, coarse_step_px, largest_stage
from .scan import PtychoScan

# Share of the available RAM / free GPU memory a run may take when its budget is "auto".
AUTO_BUDGET_SHARE = 0.8
# The batch "auto" prefers, halved until the run fits: a pass should make at least UPDATES_PER_PASS steps,
# and a batch is a power of two in [MIN_BATCH, MAX_BATCH]. A batch that covers much of a small scan
# averages the steps of overlapping positions and converges slowly: on a 16 x 16 scan of 70 A of SrTiO3
# (18 slices) r 0.9977 took 87 passes with batches of 64, 44 of 32, 23 of 16 and 13 of 8, at the same time
# per pass on the CPU (benchmarks/test_bench_ptycho_thick.py). Batches of 8 diverged at low dose (2e3 e/A^2).
# Eight steps, not sixteen: with batches of 16 the validation loss of that scan's 2-mode probe run wavered
# enough to stop it after 11 passes (density-matrix overlap 0.952, against 0.993 with batches of 32).
UPDATES_PER_PASS = 8
MIN_BATCH, MAX_BATCH = 8, 64
# A batch must also hold enough electrons that counting noise does not steer its step: at 2e3 e/A^2 (700
# counts per pattern) batches of 16 stopped at r 0.923 where 64 reach 0.938, and at 100 e/A^2 (36 counts)
# they put the half-data FRC 34 % off the truth; at 1e5 e/A^2 (35,000 counts) 16 converge as well as 64.
ELECTRONS_PER_BATCH = 1e5
# Patterns per read when the scan is checked before the run (PtychoScan.check_patterns' chunk).
CHECK_CHUNK = 1024
# The CUDA engine's chunk rule (cuda/multislice_cuda.cu): at most this many positions per chunk, and chunk
# buffers take at most this share of the free device memory.
CUDA_MAX_CHUNK = 256
CUDA_MEMORY_SHARE = 0.7
# Positions the engine evaluates per call besides its batches: the curvature sample, the discrepancy sample.
CURVATURE_SAMPLE = 32
DISCREPANCY_SAMPLE = 16
# Native code (FFTW codelets, the OpenMP runtime, HDF5) paged in and Python modules imported at the first
# reconstruction of a process (measured: 2-3 MB of file-backed pages, under 1 MB of Python objects).
RUNTIME_BYTES = 3 * 2**20
# The C allocator (glibc) serves a block smaller than the largest one freed so far from its heap and keeps up
# to twice that size free there before returning memory (its dynamic mmap and trim thresholds, at most 32 MiB
# and 64 MiB): the plan counts twice the largest block freed and allocated again each iteration (measured:
# 1.7 to 2.1 times in tests/test_ptycho_memory.py where those blocks dominate).
ALLOCATOR_RETENTION_CAP = 64 * 2**20
# The CPU engine's chunk rule (cpp/cpu/multislice_cpu.cpp): a chunk's object-gradient windows fit this many
# bytes (a share of a last-level cache), within the bounds that keep every thread busy.
CPU_CHUNK_CACHE_BYTES = 4 * 2**20
# Complex work planes per CPU thread besides the waves, spectra and far fields: the transform's work plane,
# the gradient, a temporary and the band-limited transforms' work plane.
CPU_WORK_PLANES = 4
COMPLEX64 = 8
FLOAT32 = 4
# Components that may or may not be resident at the peak: the low end of a plan leaves them out.
UNWRITTEN = "engine buffers (unwritten)"
UNCERTAIN = ("allocator retention", UNWRITTEN)


@dataclasses.dataclass(frozen=True)
class MemoryComponent:
    """One allocation the run holds: ``where`` is "host" or "device", ``bytes`` its size, ``note`` what it is."""

    name: str
    where: str
    bytes: int
    note: str = ""


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """What a run will hold, planned before it starts.

    device : "cpu" or "cuda". batch_size : positions per gradient step (the one chosen when "auto").
    patterns_streamed : the scan is read from its file batch by batch (else held in memory, float32).
    patterns_budget_bytes : what ``memory_budget_bytes`` resolves to (the patterns held up to this size).
    host_peak_bytes / device_peak_bytes : predicted peak (device 0 on the CPU); ``host_phases`` the host
        peak of each phase of the run ("check", "load", "iterate", "finish").
    device_floor_bytes : the least the GPU needs (object, its gradient, tables and one position's buffers):
        the CUDA engine sizes its chunks to the free memory itself, so the run fits the GPU when this does.
    host_budget_bytes / device_budget_bytes : the budgets they are held to (device None on the CPU).
    cuda_chunk : positions per CUDA chunk (0 on the CPU). components : the allocations, largest first.
    object_shape : (S, H, W) of the object stack. threads : CPU threads of the native engine.
    """

    device: str
    batch_size: int
    patterns_streamed: bool
    patterns_budget_bytes: int
    host_peak_bytes: int
    host_budget_bytes: int
    device_peak_bytes: int
    device_floor_bytes: int
    device_budget_bytes: int | None
    host_phases: dict
    cuda_chunk: int
    components: tuple
    object_shape: tuple
    threads: int
    n_positions: int
    pattern_shape: tuple

    @property
    def host_peak_low_bytes(self) -> int:
        """The host peak when the C allocator hands freed blocks back at once and never-written buffers stay
        unmapped. Whether it keeps them (the "allocator retention" component, counted in
        ``host_peak_bytes``) depends on how the threads' allocations interleave, and whether a never-written
        buffer is resident on where it lands, so a run's real peak lies between this and
        ``host_peak_bytes``, the figure budgets are held to."""
        uncertain = sum(c.bytes for c in self.components if c.name in UNCERTAIN and c.where == "host")
        return self.host_peak_bytes - uncertain

    @property
    def fits(self) -> bool:
        device_ok = self.device_budget_bytes is None or self.device_floor_bytes <= self.device_budget_bytes
        return self.host_peak_bytes <= self.host_budget_bytes and device_ok

    def require_fit(self) -> "MemoryPlan":
        """This plan, or a MemoryError with the numbers and what to change when it does not fit."""
        if not self.fits:
            raise MemoryError(_shortfall_message(self))
        return self

    def __str__(self) -> str:
        return format_plan(self)


# -- what the machine has --------------------------------------------------------------------------------
def available_ram_bytes() -> int:
    """RAM available to a new allocation without swapping (/proc/meminfo MemAvailable, else psutil)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil
    except ImportError:
        raise RuntimeError(
            "host_budget_bytes: cannot tell the available RAM here (no /proc/meminfo, no psutil); give the "
            "budget in bytes"
        ) from None
    return int(psutil.virtual_memory().available)


def free_device_bytes() -> int:
    """Free memory of CUDA device 0, the engine's default (the driver's cuMemGetInfo; the device's total
    where the driver cannot be asked). RuntimeError without a usable GPU."""
    from .. import _backend

    module = _backend.cuda_module()
    free = _driver_free_bytes()
    return free if free is not None else int(module.device_info()[0]["total_memory_bytes"])


def _driver_free_bytes() -> int | None:
    """cuMemGetInfo through the driver library, in the device's primary context (the one the CUDA runtime
    shares); None where the library or a call fails."""
    import ctypes

    try:
        cuda = ctypes.CDLL("libcuda.so.1")
        cuda.cuMemGetInfo_v2, cuda.cuDevicePrimaryCtxRetain  # noqa: B018 (present in every supported driver)
    except (OSError, AttributeError):
        return None
    device, context = ctypes.c_int(), ctypes.c_void_p()
    free, total = ctypes.c_size_t(), ctypes.c_size_t()
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGet(ctypes.byref(device), 0) != 0:
        return None
    if cuda.cuDevicePrimaryCtxRetain(ctypes.byref(context), device) != 0:
        return None
    try:
        if cuda.cuCtxPushCurrent_v2(context) != 0:
            return None
        ok = cuda.cuMemGetInfo_v2(ctypes.byref(free), ctypes.byref(total)) == 0
        cuda.cuCtxPopCurrent_v2(ctypes.byref(ctypes.c_void_p()))
        return int(free.value) if ok else None
    finally:
        cuda.cuDevicePrimaryCtxRelease_v2(device)


def native_threads(config: PtychoConfig) -> int:
    """Threads the CPU engine runs (config.threads, else OpenMP's default)."""
    if config.threads is not None:
        return int(config.threads)
    from .._native import core

    return int(core.build_info()["openmp_threads"])


def cpu_chunk_positions(threads: int, n_slices: int, plane_bytes: int) -> int:
    """Positions per chunk of the CPU engine (its constructor's rule): enough for every thread to take
    several, ``max(16, 4 t)``, cut to what keeps the chunk's object-gradient windows (``n_slices`` planes of
    ``plane_bytes`` each per position) within :data:`CPU_CHUNK_CACHE_BYTES`, but at least ``2 t``; then
    rounded down to a multiple of ``t``, so that every thread takes as many."""
    balanced = max(16, 4 * threads)
    cache_fit = CPU_CHUNK_CACHE_BYTES // (n_slices * plane_bytes)
    chunk = max(2 * threads, min(balanced, cache_fit))
    return chunk - chunk % threads


# -- geometry ----------------------------------------------------------------------------------------------
def object_shape(scan: PtychoScan, config: PtychoConfig) -> tuple[int, int, int]:
    """(S, H, W) of the object stack the engine allocates: the scanned positions, half a window and
    ``padding_px`` on every side (PtychoEngine.start's rule)."""
    sampling = np.array(scan.sampling_A)
    ny, nx = scan.pattern_shape
    positions = scan.positions()
    origin = positions.min(0) - (np.array([ny // 2, nx // 2]) + config.padding_px) * sampling
    extent = ((positions - origin) / sampling).max(0)
    pad = config.padding_px
    return (config.stack_slices, int(math.ceil(extent[0])) + ny - ny // 2 + pad + 1,
            int(math.ceil(extent[1])) + nx - nx // 2 + pad + 1)  # fmt: skip


def search_candidates(scan: PtychoScan, config: PtychoConfig) -> int:
    """Positions one stage of a stuck-position search evaluates at once (position_search.py); 0 when
    positions are never refined or the search is off."""
    if config.refine_positions_from < 0 or config.position_search_A <= 0:
        return 0
    radius = config.position_search_A / min(scan.sampling_A)
    if radius < FINE_STEP_PX:
        return 0
    return largest_stage(radius, coarse_step_px(scan.wavelength_A, scan.semiangle_mrad, scan.sampling_A))


# -- the plan ---------------------------------------------------------------------------------------------
class _Sizes:
    """Sizes of one run's arrays (bytes), from the scan's geometry and the settings."""

    def __init__(self, scan: PtychoScan, config: PtychoConfig, device: str, threads: int):
        self.S, self.H, self.W = object_shape(scan, config)
        ny, nx = scan.pattern_shape
        self.n = ny * nx
        self.plane = (self.n + 15) // 16 * 16 * COMPLEX64  # the CPU engine pads planes to 16 elements
        self.M = config.probe_modes
        self.N = scan.n_positions
        self.ny, self.nx = ny, nx
        self.object = self.S * self.H * self.W * COMPLEX64
        self.object_float = self.S * self.H * self.W * FLOAT32
        self.probe = self.M * self.n * COMPLEX64
        self.pattern = self.n * FLOAT32
        self.patterns = scan.nbytes_float32
        self.lazy = not isinstance(scan.data, np.ndarray)
        source = np.dtype(getattr(scan.data, "dtype", np.float32))
        # Reading N patterns (PtychoScan.read) makes the float32 result; a NumPy array that needs converting or
        # transposing, and a file of listed positions, also one copy in the data's dtype; a file raster is
        # read a scan row at a time (the row and its selection of patterns).
        self.raster_file = self.lazy and len(scan.data.shape) == 4
        recast = source != np.float32 or scan.detector_transpose
        temporary = not self.raster_file if self.lazy else recast
        self.read_factor = 1 + (source.itemsize / FLOAT32 if temporary else 0)
        self.row = (scan.data.shape[1] if len(scan.data.shape) == 4 else 1) * self.n * source.itemsize
        self.threads = threads
        self.tilt = config.refine_tilt_from >= 0
        self.refine_probe = config.refine_probe_from >= 0
        self.search = search_candidates(scan, config)
        self.device = device
        self.config = config

    def read_bytes(self, count: int) -> int:
        """Peak bytes of reading ``count`` patterns (what a read makes, plus a scan row from a raster file)."""
        rows = 2 * self.row if self.raster_file else 0
        return int(count * self.pattern * self.read_factor) + rows


def _host_components(z: _Sizes, batch: int, streamed: bool) -> tuple[list[MemoryComponent], dict]:
    cfg = z.config
    held = 0 if streamed else z.patterns
    comps = [
        MemoryComponent("patterns (held)", "host", held, "the scan as float32" if held else "streamed from the file"),
        MemoryComponent("object slices", "host", z.object, f"{z.S} x {z.H} x {z.W} complex64"),
        MemoryComponent("best state", "host", z.object + z.probe, "the state the stopping rule keeps"),
        MemoryComponent("object gradient", "host", z.object, "this batch's, scaled in place by the step"),
        MemoryComponent("probe modes", "host", 4 * z.probe, "probe, gradient, step, orthogonalisation"),
        MemoryComponent("positions", "host", z.N * (4 * 2 * 8 + 8),
                        "refined, nominal, momentum, best; loss per position"),
        MemoryComponent("data batch", "host", z.read_bytes(batch), f"{batch} patterns per step"),
    ]  # fmt: skip
    if streamed:  # the next batch is read while this one is fitted (read_ahead.py)
        comps.append(MemoryComponent("data batch read ahead", "host", z.read_bytes(batch), "the next batch's patterns"))
    if z.device == "cpu":
        t, S, M, plane = z.threads, z.S, z.M, z.plane
        # Every buffer the engine allocates counts, written or not: whether never-written pages become
        # resident depends on where the allocator places them (reused heap pages are). The propagated spectra
        # (S x M planes per thread) are written only for the tilt gradient.
        spectra = S * M
        wave_planes = S * M + M + CPU_WORK_PLANES + (spectra if z.tilt else 0)
        float_planes = 2 * (plane // COMPLEX64) * FLOAT32  # the intensity and dL/dI, float32
        comps.append(MemoryComponent(
            "engine work buffers", "host", t * (wave_planes * plane + float_planes),
            f"{t} threads x ({wave_planes} planes + 2 float planes)"))
        if not z.tilt:
            comps.append(MemoryComponent(
                UNWRITTEN, "host", t * spectra * plane, f"{t} threads x {spectra} planes for the tilt gradient"))
        chunk = cpu_chunk_positions(t, S, plane)
        if t == 1:  # positions in order add their own gradients: one position's windows (none with one mode)
            per_chunk = (S if M > 1 else 0) * plane
        else:
            per_chunk = chunk * (S + (M if z.refine_probe else 0)) * plane
        comps.append(MemoryComponent(
            "engine chunk buffers", "host", per_chunk + (2 * M + 1) * plane, f"gradient windows of {chunk} positions"))
    if z.search:
        comps.append(MemoryComponent(
            "position search", "host", z.search * (z.pattern + 8), f"{z.search} candidates of one stuck position"))
    comps.append(MemoryComponent("code and runtime", "host", RUNTIME_BYTES,
                                 "native code paged in, modules imported at first use"))
    kz = cfg.kz_strength == "auto" or cfg.kz_strength > 0
    tv = cfg.tv_weight == "auto" or cfg.tv_weight > 0
    largest_block = z.object  # the object gradient, the kz filter's stack
    retained = min(2 * largest_block, ALLOCATOR_RETENTION_CAP)
    chunk = min(CHECK_CHUNK, z.N)
    if not streamed and z.N > chunk:
        # The check's chunks leave their heap behind, and the held patterns, one larger block, cannot reuse it
        # (measured: about what the chunks held, up to the trim threshold).
        retained += min(z.read_bytes(z.N), 2 * z.read_bytes(chunk), ALLOCATOR_RETENTION_CAP)
    comps.append(MemoryComponent("allocator retention", "host", retained,
                                 "freed blocks the C allocator keeps for reuse"))  # fmt: skip
    named = {c.name: c.bytes for c in comps}
    fixed = sum(named.get(k, 0) for k in ("probe modes", "positions", "engine work buffers", "engine chunk buffers",
                                          UNWRITTEN, "code and runtime", "allocator retention"))  # fmt: skip
    O = z.object
    # Host peak of each phase: what is alive together (see the module docstring).
    iterate_work = max(
        # The native call and the step (a streamed run reads the next batch meanwhile).
        named["object gradient"] + named["data batch"] + named.get("data batch read ahead", 0),
        named.get("position search", 0),
    )
    # The regularisers' own temporaries (measured with tracemalloc on regularise.py): the kz filter works in
    # one object stack (its log, spectrum, then the filtered slices) and one slice's weights (three float32
    # planes); the TV step's float32 phase, amplitude, gradients and divergence take 6 object stacks.
    if kz:
        iterate_work = max(iterate_work, O + 3 * z.H * z.W * FLOAT32)
    if tv:
        iterate_work = max(iterate_work, 6 * O)
    state = named["object slices"] + named["best state"]
    load = 2 * O + (z.read_bytes(z.N) if not streamed else 0)
    if "auto" in (cfg.kz_strength, cfg.tv_weight):
        load += held + 2 * O  # the previous trial engine is still referenced while the next one loads
    # Checking reads CHECK_CHUNK patterns at a time, each freed before the next is read.
    phases = {
        "check": z.read_bytes(chunk) + RUNTIME_BYTES,
        "load": load + fixed,
        "iterate": held + state + iterate_work + fixed,
        # The best state restored as a copy, the result's copy of the slices and the summed phase.
        "finish": held + fixed + state + O + z.object_float,
    }
    return comps, {k: int(v) for k, v in phases.items()}


def _cuda_components(z: _Sizes, batch: int, free: float) -> tuple[list[MemoryComponent], int, int]:
    calls = max(batch, z.search, CURVATURE_SAMPLE)
    stack = z.M * z.n * COMPLEX64
    waves = z.S + (z.S - 1 if z.tilt else 0)
    # Per position of a chunk: the waves, far field, work and gradient stacks, intensity and dL/dI, the ramps.
    per_position = stack * (waves + 3) + z.n * FLOAT32 * 2 + (z.ny + z.nx) * COMPLEX64 + 16
    # Per call: the object and its gradient, three probe stacks, the propagator and band, and the whole
    # batch staged from the host: its patterns, positions, their gradient, tilt terms and losses.
    call_bytes = 2 * z.object + 3 * z.probe + z.n * (COMPLEX64 + 1) + calls * (z.n * FLOAT32 + 16 + 16 + 16 + 8 + 8)
    fit = int(CUDA_MEMORY_SHARE * max(free - call_bytes, 0) / (per_position + stack))
    chunk = max(1, min(CUDA_MAX_CHUNK, calls, fit))
    comps = [
        MemoryComponent("object and gradient (GPU)", "device", 2 * z.object, "copied in each call"),
        MemoryComponent("probe and per-call tables (GPU)", "device", call_bytes - 2 * z.object, ""),
        MemoryComponent("chunk buffers (GPU)", "device", chunk * per_position, f"{chunk} positions per chunk"),
        MemoryComponent("cuFFT work area (GPU)", "device", chunk * stack, "at most one more stack"),
    ]
    return comps, chunk, call_bytes + per_position + stack


def plan(scan: PtychoScan, config: PtychoConfig, device: str | None = None, *, host_available_bytes: int | None = None,
         device_free_bytes: int | None = None, mean_counts: float | None = None) -> MemoryPlan:  # fmt: skip
    """Plan the memory of ``reconstruct(scan, config)`` on ``device`` (default ``config.device``).

    Budgets: ``config.host_budget_bytes`` / ``config.device_budget_bytes``, or where "auto", 80 % of
    ``host_available_bytes`` (default: the RAM available now) / ``device_free_bytes`` (default: the free
    memory of the current GPU; give it to plan for a GPU this machine does not have). Resolves
    ``batch_size="auto"`` (:func:`preferred_batch_size` for the scan and ``mean_counts``, its mean counts per pattern
    (``scan.check_patterns()``) where given, halved until it fits) and ``memory_budget_bytes="auto"`` (the
    patterns are held when the run fits with them, else streamed). Does not raise when the run does not
    fit: see :meth:`MemoryPlan.require_fit`."""
    if not isinstance(scan, PtychoScan):
        raise TypeError(f"scan: expected an mspt.ptycho.PtychoScan, got {type(scan).__name__}")
    if not isinstance(config, PtychoConfig):
        raise TypeError(f"config: expected an mspt.ptycho.PtychoConfig, got {type(config).__name__}")
    device = config.device if device is None else device
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device: expected 'cpu' or 'cuda', got {device!r}")
    host_budget = config.host_budget_bytes
    if host_budget == "auto":
        available = available_ram_bytes() if host_available_bytes is None else int(host_available_bytes)
        host_budget = int(AUTO_BUDGET_SHARE * available)
    device_budget, free = None, 0.0
    if device == "cuda":
        if device_free_bytes is None and config.device_budget_bytes == "auto":
            device_free_bytes = free_device_bytes()
        if device_free_bytes is not None:
            free = float(device_free_bytes)
        else:  # a budget given, no device to ask: plan as if the budget were the usual share of what is free
            free = config.device_budget_bytes / AUTO_BUDGET_SHARE
        device_budget = config.device_budget_bytes
        if device_budget == "auto":
            device_budget = int(AUTO_BUDGET_SHARE * free)
    z = _Sizes(scan, config, device, native_threads(config) if device == "cpu" else 1)

    def make(batch: int, streamed: bool, patterns_budget: int) -> MemoryPlan:
        comps, phases = _host_components(z, batch, streamed)
        chunk, device_peak, device_floor = 0, 0, 0
        if device == "cuda":
            device_comps, chunk, device_floor = _cuda_components(z, batch, free)
            comps += device_comps
            device_peak = sum(c.bytes for c in device_comps)
        return MemoryPlan(
            device=device, batch_size=batch, patterns_streamed=streamed, patterns_budget_bytes=int(patterns_budget),
            host_peak_bytes=max(phases.values()), host_budget_bytes=int(host_budget),
            device_peak_bytes=int(device_peak),
            device_floor_bytes=int(device_floor),
            device_budget_bytes=device_budget, host_phases=phases, cuda_chunk=chunk,
            components=tuple(sorted((c for c in comps if c.bytes > 0), key=lambda c: -c.bytes)),
            object_shape=(z.S, z.H, z.W), threads=z.threads, n_positions=z.N, pattern_shape=(z.ny, z.nx),
        )  # fmt: skip

    batches = [config.batch_size] if config.batch_size != "auto" else _halvings(preferred_batch_size(z.N, mean_counts))
    candidates = []
    for batch in batches:
        if config.memory_budget_bytes == "auto":
            # Patterns are held when the run fits with them; what the host budget leaves for them (beside
            # the rest of the run) is what memory_budget_bytes resolves to.
            streamed = make(batch, True, 1)
            left = host_budget - streamed.host_peak_bytes
            held = make(batch, False, max(left, z.patterns))
            candidate = held if held.fits else make(batch, True, max(1, min(left, z.patterns - 1)))
        else:
            candidate = make(batch, z.patterns > config.memory_budget_bytes, config.memory_budget_bytes)
        candidates.append(candidate)
        if candidate.fits:
            return candidate
    return candidates[-1]


def preferred_batch_size(n_positions: int, mean_counts: float | None = None) -> int:
    """The batch "auto" starts from for a scan of ``n_positions`` with ``mean_counts`` electrons per pattern
    (None: not known, the scan's size alone decides): the largest power of two at most
    ``n_positions / UPDATES_PER_PASS``, raised to the smallest power of two that holds ELECTRONS_PER_BATCH
    counts, within [MIN_BATCH, MAX_BATCH]."""
    share = max(1, int(n_positions) // UPDATES_PER_PASS)
    batch = 1 << (share.bit_length() - 1)
    if mean_counts is not None and mean_counts > 0:
        needed = max(1, math.ceil(ELECTRONS_PER_BATCH / float(mean_counts)))
        batch = max(batch, 1 << (needed - 1).bit_length())
    return int(min(MAX_BATCH, max(MIN_BATCH, batch)))


def _halvings(start: int) -> list[int]:
    out = [start]
    while out[-1] > 1:
        out.append(out[-1] // 2)
    return out


def resolved_config(config: PtychoConfig, memory_plan: MemoryPlan) -> PtychoConfig:
    """``config`` with "auto" batch size and pattern budget replaced by the plan's choices."""
    changes = {}
    if config.batch_size == "auto":
        changes["batch_size"] = memory_plan.batch_size
    if config.memory_budget_bytes == "auto":
        changes["memory_budget_bytes"] = memory_plan.patterns_budget_bytes
    return config.replace(**changes) if changes else config


# -- reading it ------------------------------------------------------------------------------------------
def _size(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


def format_plan(p: MemoryPlan) -> str:
    """A readable table of the plan: the components, the peak of each phase, the budgets and the choices."""
    S, H, W = p.object_shape
    lines = [
        f"memory plan ({p.device}): {p.n_positions} positions of {p.pattern_shape[0]}x{p.pattern_shape[1]} px, "
        f"object {S} x {H} x {W}, batch {p.batch_size}"
        + (f", {p.threads} CPU threads" if p.device == "cpu" else f", {p.cuda_chunk} positions per GPU chunk"),
        f"patterns: {'streamed from the file in batches' if p.patterns_streamed else 'held in memory'}",
        f"{'component':<34}{'where':<8}{'size':>12}  note",
    ]
    for c in p.components:
        lines.append(f"{c.name:<34}{c.where:<8}{_size(c.bytes):>12}  {c.note}")
    phases = ", ".join(f"{k} {_size(v)}" for k, v in p.host_phases.items())
    lines.append(f"host peak   {_size(p.host_peak_bytes):>10} of {_size(p.host_budget_bytes)} budget  ({phases}); "
                 f"{_size(p.host_peak_low_bytes)} when the allocator returns freed blocks at once")
    if p.device == "cuda":
        lines.append(f"device peak {_size(p.device_peak_bytes):>10} (at least {_size(p.device_floor_bytes)}) of "
                     f"{_size(p.device_budget_bytes)} budget")  # fmt: skip
    lines.append("fits" if p.fits else "DOES NOT FIT")
    return "\n".join(lines)


def _shortfall_message(p: MemoryPlan) -> str:
    where = []
    if p.host_peak_bytes > p.host_budget_bytes:
        where.append(f"host peak {_size(p.host_peak_bytes)} > budget {_size(p.host_budget_bytes)}")
    if p.device_budget_bytes is not None and p.device_floor_bytes > p.device_budget_bytes:
        where.append(f"GPU needs at least {_size(p.device_floor_bytes)} > budget {_size(p.device_budget_bytes)}")
    largest = ", ".join(f"{c.name} {_size(c.bytes)} ({c.where})" for c in p.components[:4])
    advice = [
        "fewer probe modes (probe_modes: work buffers scale with modes x slices)",
        "a smaller batch (batch_size, or \"auto\")" if p.batch_size > 1 else "",
        "bin the detector 2x2 (patterns and work buffers / 4)",
        "stream the patterns from their file (memory_budget_bytes below the scan's size, or \"auto\")"
        if not p.patterns_streamed else "",
        "fewer slices or a smaller field of view (the object stack)",
        "fewer CPU threads (threads)" if p.device == "cpu" and p.threads > 1 else "",
    ]
    return (
        "the reconstruction does not fit in memory even at its smallest setting (" + "; ".join(where) + "). "
        f"Largest parts: {largest}. To fit it: " + "; ".join(a for a in advice if a) + ".\n" + format_plan(p)
    )
