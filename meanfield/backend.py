r"""Array backends: which library holds the particles, on which device, and where draws come from.

numpy is the default. With ``backend="torch"`` the particles, data and every step's arithmetic
live on a torch device (``"cpu"`` or ``"cuda"``); the numeric core is written against the array
API standard, so the same functions serve both.

Random draws come from one of two places:

- ``"host"``: numpy's generators, as for the numpy backend, copied to the device. A torch run
  then sees exactly the numbers of a numpy run with the same seed (the default on the CPU, and
  what the tests compare).
- ``"device"``: a ``torch.Generator`` on the device, seeded from the :class:`numpy.random.SeedSequence`
  of the same stream (one generator per purpose: initialisation, noise), so no draw crosses the
  bus. The statistics are the same as the host draws'; the numbers are not (the default on CUDA).

- ``"coupled"``: one numpy stream per particle (children of the run's stream), each drawing a
  block of ``draw_width`` rows for its neurons, of which a width-M network uses the first M. Particle
  i then gets the same initial draw and the same noise at every step whatever N is, and neuron j
  whatever M <= ``draw_width`` is: runs of different sizes differ only through the interaction,
  which is what makes strong errors in N and M measurable (:class:`CoupledGenerator`). Slower (one
  generator call per particle and draw) and made on the host.

Either way the minibatch order is drawn on the host (one permutation per epoch, moved to the
device once), so runs of every backend and size share one minibatch sequence.
"""

import numpy as np

__all__ = ["BACKENDS", "DRAWS", "CoupledGenerator", "DeviceGenerator", "child_sequence", "namespace_of", "resolve",
           "synchronize"]

BACKENDS = ("numpy", "torch")
DRAWS = ("host", "device", "coupled")


def _torch():
    try:
        import torch
    except ImportError:
        raise ValueError("backend='torch' needs PyTorch, which is not installed (pip install torch)") from None
    return torch


def resolve(backend, device, draws, dtype):
    """Checked ``(device, draws, dtype)`` with their defaults filled in.

    Defaults: device "cpu"; draws "host" on the CPU and "device" elsewhere; dtype "float64" on the
    CPU and "float32" elsewhere (a GPU's float64 rate is a fraction of its float32 one).

    >>> resolve("numpy", None, None, None)
    ('cpu', 'host', 'float64')
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    if draws is not None and draws not in DRAWS:
        raise ValueError(f"draws must be one of {list(DRAWS)}, got {draws!r}")
    if device is None:
        device = "cpu"
    if not isinstance(device, str):
        raise ValueError(f"device must be a string such as 'cpu' or 'cuda', got {device!r}")
    if backend == "numpy":
        if device != "cpu":
            raise ValueError(f"device must be 'cpu' with backend='numpy', got {device!r}; "
                             "use backend='torch' for another device")
    else:
        torch = _torch()
        try:
            kind = torch.device(device).type
        except (RuntimeError, ValueError):
            raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda:0', got {device!r}") from None
        if kind == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={device!r} but torch {torch.__version__} sees no CUDA device; "
                             "use device='cpu'")
        if kind not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or a CUDA device, got {device!r}")
    if draws == "device" and backend != "torch":
        raise ValueError("draws='device' needs backend='torch'")
    on_cpu = device == "cpu"
    return device, draws or ("host" if on_cpu else "device"), dtype or ("float64" if on_cpu else "float32")


def namespace_of(backend):
    """The array API namespace of a backend."""
    if backend == "numpy":
        import array_api_compat.numpy as xp
    else:
        _torch()
        import array_api_compat.torch as xp
    return xp


def synchronize(x):
    """Wait until the device of array ``x`` has finished its queued work (nothing for host arrays)."""
    if isinstance(x, np.ndarray):
        return
    device = getattr(x, "device", None)
    if getattr(device, "type", None) == "cuda":
        import torch

        torch.cuda.synchronize(device)


def child_sequence(seed_seq, index):
    """Child ``index`` of a SeedSequence, built from its entropy and spawn key: unlike
    ``SeedSequence.spawn``, it does not depend on how many children were spawned before."""
    return np.random.SeedSequence(seed_seq.entropy, spawn_key=(*seed_seq.spawn_key, index),
                                  pool_size=seed_seq.pool_size)


class CoupledGenerator:
    """Per-particle random streams: draws of shape (N, M, ...) whose row i and neuron j do not depend
    on N or M.

    Particle i draws from child i of the SeedSequence of the stream it replaces, a block of
    ``width`` neuron rows per call, of which the first M are used. So the first N particles of a
    run with N' > N particles get exactly the draws of a run with N particles, at initialisation and
    at every step, and likewise the first M neurons of a wider network.

    Parameters
    ----------
    rng : numpy.random.Generator
        The stream replaced (its SeedSequence is the root of the particles' streams).
    width : int
        Neuron rows drawn per particle and call: the largest width M the coupled runs use.

    Examples
    --------
    >>> import numpy as np
    >>> small = CoupledGenerator(np.random.default_rng(0), width=4).standard_normal((2, 3, 1))
    >>> large = CoupledGenerator(np.random.default_rng(0), width=4).standard_normal((5, 4, 1))
    >>> bool(np.array_equal(small, large[:2, :3]))
    True
    """

    def __init__(self, rng, width):
        self._seed_seq = rng.bit_generator.seed_seq
        self.width = width
        self._particles = []

    def _rows(self, size):
        size = tuple(int(n) for n in size)
        if len(size) < 2 or size[1] > self.width:
            raise ValueError(f"coupled draws have shape (particles, neurons <= draw_width = {self.width}, ...), "
                             f"got {size}")
        while len(self._particles) < size[0]:
            self._particles.append(np.random.default_rng(child_sequence(self._seed_seq, len(self._particles))))
        return size

    def uniform(self, low=0.0, high=1.0, size=None):
        size = self._rows(size)
        out = np.empty(size)
        for i, gen in enumerate(self._particles[: size[0]]):
            out[i] = gen.uniform(low, high, size=(self.width, *size[2:]))[: size[1]]
        return out

    def standard_normal(self, size=None, out=None):
        size = self._rows(out.shape if size is None else size)
        out = np.empty(size) if out is None else out
        for i, gen in enumerate(self._particles[: size[0]]):
            if size[1] == self.width and out[i].flags.c_contiguous and out.dtype == np.float64:
                gen.standard_normal(out=out[i])
            else:
                out[i] = gen.standard_normal(size=(self.width, *size[2:]))[: size[1]]
        return out


class DeviceGenerator:
    """Random draws on a torch device from a generator seeded by a numpy stream's SeedSequence.

    Drop-in for the two numpy Generator methods the methods use (``uniform`` for initial particles,
    ``standard_normal`` for noise). Draws are made in float64 and rounded for float32 particles, as
    on the host, so a float32 and a float64 run with device draws see the same randomness.

    Parameters
    ----------
    rng : numpy.random.Generator
        The host stream this one replaces; its SeedSequence gives the 64-bit seed.
    device : str
    """

    def __init__(self, rng, device):
        torch = _torch()
        seed = int(rng.bit_generator.seed_seq.generate_state(1, np.uint64)[0])
        self.device = torch.device(device)
        self.generator = torch.Generator(self.device).manual_seed(seed)

    def __getstate__(self):
        # a torch.Generator does not pickle; its state (a CPU byte tensor) does, for checkpoints
        return {"device": str(self.device), "state": self.generator.get_state()}

    def __setstate__(self, saved):
        torch = _torch()
        self.device = torch.device(saved["device"])
        self.generator = torch.Generator(self.device)
        self.generator.set_state(saved["state"])

    def uniform(self, low, high, size):
        import torch

        out = torch.empty(size, dtype=torch.float64, device=self.device)
        return out.uniform_(low, high, generator=self.generator)

    def standard_normal(self, size, dtype=None):
        import torch

        out = torch.randn(size, dtype=torch.float64, device=self.device, generator=self.generator)
        return out if dtype in (None, torch.float64) else out.to(dtype)
