"""The paper's layered analog network, built directly as kernel arrays.

``LayeredNetwork(sizes=(784, 100, 10))``: every pixel ``x_i`` (in [0, 1]) drives two voltage
sources ``+x_i * input_volts`` and ``-x_i * input_volts`` so that positive conductances realise
both signs of weight. Each hidden and output node is joined to every node of the previous layer
by a programmable conductance in ``[g_min, g_max]`` (S) and to a bias source (``bias_volts``) by
one more. Each hidden node has two clipping diodes, node -> ``rail_hi`` and ``rail_lo`` -> node.
Each class ``k`` has two output nodes, and its output is ``V(o_k+) - V(o_k-)`` (V). Between
layers, optional bidirectional amplifiers of voltage gain ``gain`` (the next layer sees
``gain * V``; the current it draws is reflected back multiplied by ``gain``) keep the circuit an
energy-minimising one while stopping the signal from decaying with depth.

Positive conductances from non-negative hidden voltages can only excite the next layer, and its
nodes, weighted means of non-negative voltages, would then never reach their lower diodes. With
``paired=True`` each hidden layer of ``n`` nodes is ``n/2`` rectifying nodes and ``n/2`` mirror
images of them, whose diodes go to the negated rails (``-rail_hi``, ``-rail_lo``): those nodes
clamp from above instead, so the next layer sees voltages of both signs and learns signed
weights with positive conductances, as the +x / -x inputs do for the first layer (the pairs of
units of deep resistive networks). Sizes, conductance counts and node counts are unchanged.

Parameters are conductances in siemens: ``params["W{l}"]`` of shape (nodes of layer l-1, nodes of
layer l), and ``params["B{l}"]`` of shape (nodes of layer l,), l = 1..L. Layer 0 has
``2 * n_in`` nodes (the +x block, then the -x block); the output layer has ``2 * n_classes``
nodes (the + block, then the - block).

The free layers are split into two parity classes (no conductance inside a layer or between
layers of the same parity), one of which is eliminated exactly in every Newton step.
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field

import numba
import numpy as np

from .circuit import Circuit
from .config import ConfigError, NetworkConfig
from .devices import PWL_CLIP, Shockley, make_diode, turn_on_volts  # noqa: F401 (PWL_CLIP, turn_on_volts re-exported)
from .errors import CircuitError, FastresError
from .kernels import layered as _layered
from .solver import _Result, factor_cache, source_currents
from .system import KernelSystem

_DEFAULT = NetworkConfig()  # the one source of physical defaults (fastres.config)


@dataclass(frozen=True)
class NetworkSpec:
    """Architecture and physical constants of a layered network (volts, siemens, ohms), with
    every automatic choice resolved. Defaults are :class:`~fastres.config.NetworkConfig`'s:
    ``rail_lo`` None becomes the diode's turn-on voltage (hidden nodes clamp at 0 V) and
    ``paired`` None pairs two or more hidden layers of even sizes."""

    sizes: tuple = _DEFAULT.sizes
    diode: str = _DEFAULT.diode
    diode_params: dict = field(default_factory=dict)
    input_volts: float = _DEFAULT.input_volts
    bias_volts: float = _DEFAULT.bias_volts
    rail_lo: float | None = _DEFAULT.rail_lo
    rail_hi: float = _DEFAULT.rail_hi
    g_min: float = _DEFAULT.g_min
    g_max: float = _DEFAULT.g_max
    gain: float = _DEFAULT.gain
    output_diodes: bool = _DEFAULT.output_diodes
    paired: bool | None = _DEFAULT.paired
    gmin: float = _DEFAULT.gmin

    @classmethod
    def from_config(cls, cfg: NetworkConfig) -> "NetworkSpec":
        """The resolved spec of a run's ``network`` config section."""
        return cls(sizes=cfg.sizes, diode=cfg.diode, diode_params=dict(cfg.diode_params),
                   input_volts=cfg.input_volts, bias_volts=cfg.bias_volts, rail_lo=cfg.lower_rail(),
                   rail_hi=cfg.rail_hi, g_min=cfg.g_min, g_max=cfg.g_max, gain=cfg.gain,
                   output_diodes=cfg.output_diodes, paired=cfg.is_paired(), gmin=cfg.gmin)

    def __post_init__(self):
        sizes = tuple(int(s) for s in self.sizes)
        object.__setattr__(self, "sizes", sizes)
        make_diode(self.diode, **self.diode_params)  # validates
        if self.rail_lo is None:
            object.__setattr__(self, "rail_lo", turn_on_volts(self.model, self.gmin))
        if self.paired is None:
            hidden = sizes[1:-1]
            object.__setattr__(self, "paired", len(hidden) >= 2 and all(h % 2 == 0 for h in hidden))
        if len(sizes) < 2 or any(s <= 0 for s in sizes):
            raise CircuitError(f"sizes {self.sizes!r}: need an input size and at least one layer, all > 0")
        for key in ("input_volts", "bias_volts", "rail_lo", "rail_hi", "g_min", "g_max", "gain", "gmin"):
            v = getattr(self, key)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise CircuitError(f"network option {key}={v!r} must be a finite number")
        if not 0 < self.g_min < self.g_max:
            raise CircuitError(f"conductance bounds must satisfy 0 < g_min < g_max, got {self.g_min}, {self.g_max} S")
        if self.gain <= 0:
            raise CircuitError(f"amplifier gain {self.gain} must be > 0")
        if self.paired and any(h % 2 for h in sizes[1:-1]):
            raise CircuitError(f"sizes {sizes!r}: paired hidden layers need an even number of nodes "
                               f"each (or unpaired layers: paired false, --paired no)")
        make_diode(self.diode, **self.diode_params)  # validates

    @property
    def model(self):
        return make_diode(self.diode, **self.diode_params)

    def layer_nodes(self) -> list:
        """Node count per layer: 2 n_in, hidden sizes..., 2 n_classes."""
        s = self.sizes
        return [2 * s[0]] + list(s[1:-1]) + [2 * s[-1]]

    def param_shapes(self) -> dict:
        n = self.layer_nodes()
        shapes = {}
        for l in range(1, len(n)):
            shapes[f"W{l}"] = (n[l - 1], n[l])
            shapes[f"B{l}"] = (n[l],)
        return shapes


class LayeredNetwork:
    """A layered resistor/diode network: its structure, and the kernel arrays of given
    conductances.

    ``solve(net.problem(params, X), Newton())`` solves a batch of inputs and returns a
    :class:`NetworkSolution` whose ``x`` (B, nF) holds the free-node voltages in kernel order;
    :meth:`layer` slices one layer out of them, :meth:`outputs` the class outputs.
    """

    #: crossbar wires (:class:`fastres.crossbar.WiredNetwork`): False for ideal wires
    wired = False

    def __init__(self, spec: NetworkSpec):
        self.spec = spec
        n = spec.layer_nodes()
        self.nodes_per_layer = n
        L = len(n) - 1
        self.L = L
        # parity classes of the free layers 1..L; eliminate the one that leaves the cheaper Schur
        odd = [l for l in range(1, L + 1) if l % 2 == 1]
        even = [l for l in range(1, L + 1) if l % 2 == 0]

        def cost(K, E):
            nk = sum(n[l] for l in K)
            ne = sum(n[l] for l in E)
            return nk * nk * max(ne, 1)

        if not even or cost(even, odd) <= cost(odd, even):
            self.K_layers, self.E_layers = even, odd
        else:
            self.K_layers, self.E_layers = odd, even
        self.offset = {}
        pos = 0
        for l in self.K_layers + self.E_layers:
            self.offset[l] = pos
            pos += n[l]
        self.nK = sum(n[l] for l in self.K_layers)
        self.nE = sum(n[l] for l in self.E_layers)
        self.nF = self.nK + self.nE
        # diodes: hidden nodes (and outputs if asked) to the rails (extended slots nF, nF + 1);
        # the mirrored half of a paired layer to the negated rails (slots nF + 2, nF + 3)
        model = spec.model
        da, db = [], []
        for l in range(1, L + 1):
            if l < L or spec.output_diodes:
                mirrored = self.mirrored(l)
                for j in range(n[l]):
                    f = self.offset[l] + j
                    lo, hi = (2, 3) if mirrored[j] else (0, 1)
                    da += [f, self.nF + lo]
                    db += [self.nF + hi, f]
        self.da = np.array(da, dtype=np.int64)
        self.db = np.array(db, dtype=np.int64)
        self.dkind = np.full(len(da), model.kind, dtype=np.int64)
        prow = model.params(gmin=spec.gmin)
        self.dpar = np.ascontiguousarray(np.tile(prow, (len(da), 1)))
        self.vdfix = np.array([[spec.rail_lo, spec.rail_hi, -spec.rail_hi, -spec.rail_lo]])
        von = turn_on_volts(model, spec.gmin)
        self._rails, self._clip = {}, {}  # per layer; initial_guess needs them every step
        for l in range(1, L + 1):
            m = self.mirrored(l)
            lo = np.where(m, -spec.rail_hi, spec.rail_lo)
            hi = np.where(m, -spec.rail_lo, spec.rail_hi)
            self._rails[l] = (lo, hi)
            self._clip[l] = (lo - von, hi + von)
        self.gains = [1.0] + [1.0] + [spec.gain] * (L - 1)  # gains[l]: into layer l (l >= 2)
        self._diagonal_only = weakref.WeakValueDictionary()  # id -> GKE of dense=False systems

    @classmethod
    def from_config(cls, cfg: NetworkConfig) -> "LayeredNetwork":
        """The network of a run's ``network`` config section (physical errors as ConfigError)."""
        try:
            return cls(NetworkSpec.from_config(cfg))
        except FastresError as exc:
            raise ConfigError(str(exc)) from None

    # -- parameters --------------------------------------------------------------------------
    def init_params(self, rng: np.random.Generator, lo=None, hi=None) -> dict:
        """Conductances drawn uniformly from [lo, hi] (S), by default [g_min, g_max/2]."""
        lo = self.spec.g_min if lo is None else lo
        hi = 0.5 * self.spec.g_max if hi is None else hi
        return {k: rng.uniform(lo, hi, shape) for k, shape in self.spec.param_shapes().items()}

    def check_params(self, params):
        for k, shape in self.spec.param_shapes().items():
            if k not in params:
                raise CircuitError(f"missing parameter {k}")
            a = params[k]
            if a.shape != shape:
                raise CircuitError(f"parameter {k} has shape {a.shape}, expected {shape}")
            if not np.all(np.isfinite(a)) or np.any(a <= 0):
                raise CircuitError(f"parameter {k}: conductances must be finite and > 0 S")

    # -- kernel arrays -----------------------------------------------------------------------
    def system(self, params, w1_colsum=None, dense=None) -> KernelSystem:
        """The :class:`~fastres.system.KernelSystem` of conductances ``params`` (S): Jacobian
        blocks, the bias sources' constant currents ``b0`` (A) and the clipping diodes.

        ``w1_colsum`` (n_1,) S: ``params["W1"].sum(axis=0)`` when the caller already has it
        (the training step gets it from the fused update, or from the read of noisy devices,
        :class:`fastres.pulsed.Apparent`; W1 is by far the largest matrix).
        ``dense``: fill the off-diagonal block ``GKE``; None: only where the automatic choice
        is the Schur path (:meth:`linear_path`). Without it ``GKE`` is left zero (untouched
        memory) and the system is only for the CG path, which reads the diagonal alone;
        :meth:`NetworkProblem.system` rebuilds it in full if the Schur path is asked for."""
        if dense is None:
            dense = self.linear_path("auto") == "schur"
        n = self.nodes_per_layer
        L = self.L
        d = {}
        for l in range(1, L + 1):
            colsum = w1_colsum if (l == 1 and w1_colsum is not None) else params[f"W{l}"].sum(axis=0)
            dl = colsum + params[f"B{l}"]
            if l < L:
                A = self.gains[l + 1]
                dl = dl + A * A * params[f"W{l + 1}"].sum(axis=1)
            d[l] = dl
        GKK = np.zeros((self.nK, self.nK))
        GKE = np.zeros((self.nK, self.nE))
        gEE = np.empty(self.nE)
        b0 = np.empty(self.nF)
        for l in range(1, L + 1):
            o = self.offset[l]
            if l in self.K_layers:
                idx = np.arange(o, o + n[l])
                GKK[idx, idx] = d[l]
            else:
                gEE[o - self.nK:o - self.nK + n[l]] = d[l]
            b0[o:o + n[l]] = params[f"B{l}"] * self.spec.bias_volts
        for l in range(2, L + 1 if dense else 2):
            A = self.gains[l]
            W = params[f"W{l}"]  # (n[l-1], n[l])
            if l - 1 in self.K_layers:
                ok, oe = self.offset[l - 1], self.offset[l] - self.nK
                GKE[ok:ok + n[l - 1], oe:oe + n[l]] = -A * W
            else:
                ok, oe = self.offset[l], self.offset[l - 1] - self.nK
                GKE[ok:ok + n[l], oe:oe + n[l - 1]] = -A * W.T
        ks = KernelSystem(GKK, GKE, gEE, b0, self.da, self.db, self.dkind, self.dpar)
        if not dense:
            self._diagonal_only[id(GKE)] = GKE
        return ks

    def is_diagonal_only(self, system: KernelSystem) -> bool:
        """True for a system built with ``dense=False`` (see :meth:`system`)."""
        return self._diagonal_only.get(id(system.GKE)) is system.GKE

    def input_voltages(self, X) -> np.ndarray:
        """Mirrored input source voltages (B, 2 n_in) in V for pixels ``X`` (B, n_in) in [0, 1]."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.spec.sizes[0]:
            raise CircuitError(f"inputs have shape {X.shape}, expected (B, {self.spec.sizes[0]})")
        if not np.all(np.isfinite(X)):
            bad = np.argwhere(~np.isfinite(X))[:3].tolist()
            raise CircuitError(f"inputs contain NaN or Inf (sample, pixel) {bad}: no circuit "
                               f"can be driven by them")
        V = self.spec.input_volts
        return np.ascontiguousarray(np.concatenate([V * X, -V * X], axis=1))

    def source_currents(self, U, params, system: KernelSystem) -> np.ndarray:
        """Free-node source currents ``b`` (B, nF) in A for input source voltages ``U``
        (B, 2 n_in) in V (see :meth:`input_voltages`)."""
        return source_currents(U, np.ascontiguousarray(params["W1"]), self.offset[1], system.b0,
                               np.zeros((1, self.nF)))

    def problem(self, params, X, *, system=None, x0=None, cache=None, U=None) -> "NetworkProblem":
        """The DC problem of inputs ``X`` (B, n_in) in [0, 1] with conductances ``params`` (S);
        ``system`` if already built (see :meth:`system`), ``x0`` (B, nF) V a start (default:
        :meth:`initial_guess`), ``cache`` a :meth:`factor_cache` shared by solves of the same
        system; ``U`` the input source voltages if already built (:meth:`input_voltages`)."""
        return NetworkProblem(self, params, X, system=system, x0=x0, cache=cache, U=U)

    def linear_path(self, linear: str = "auto") -> str:
        """The Newton direction's linear solver, ``"schur"`` or ``"cg"``, for the choice
        ``linear`` (``"auto"``: ``cg`` once the dense Schur complement has at least
        :data:`CG_FROM_NODES` nodes, or the network has one hidden layer of at least
        :data:`CG_FROM_WIDTH` nodes; see there and README "Deep, wide networks" for the
        measured crossovers)."""
        if linear == "auto":
            wide = self.L == 2 and self.nodes_per_layer[1] >= CG_FROM_WIDTH
            return "cg" if self.nK >= CG_FROM_NODES or wide else "schur"
        if linear not in ("schur", "cg"):
            raise ConfigError(f"linear={linear!r}: use 'auto', 'schur' or 'cg'")
        return linear

    def factor_cache(self, B):
        """An empty Jacobian-factor cache for ``B`` samples (see :func:`fastres.solver.factor_cache`)."""
        return factor_cache(B, self.nK, self.da.shape[0])

    def mirrored(self, l) -> np.ndarray:
        """(nodes of layer l,) bool: the nodes of layer ``l`` whose diodes go to the negated
        rails (the second half of a paired hidden layer)."""
        m = np.zeros(self.nodes_per_layer[l], dtype=bool)
        if self.spec.paired and l < self.L:
            m[m.size // 2:] = True
        return m

    def rails(self, l):
        """(lo, hi) rail voltages (V), each (nodes of layer l,), of the diodes of layer ``l``."""
        return self._rails[l]

    def clip_range(self, l):
        """Voltages (V), each (nodes of layer l,), beyond which a node's diodes conduct strongly:
        its rails moved out by the diode's turn-on voltage (see :func:`turn_on_volts`)."""
        return self._clip[l]

    def initial_guess(self, b, params, system: KernelSystem) -> np.ndarray:
        """A feed-forward start (B, nF) in V: each layer at the voltage its inputs alone would
        give it (source currents over its diagonal conductance), hidden layers clipped at the
        diodes' turn-on voltages. Newton then starts near the operating point."""
        GKK, gEE = system.GKK, system.gEE
        x = np.zeros_like(b)
        n = self.nodes_per_layer
        for l in range(1, self.L + 1):
            o = self.offset[l]
            diag = np.diag(GKK)[o:o + n[l]] if l in self.K_layers else gEE[o - self.nK:o - self.nK + n[l]]
            cur = b[:, o:o + n[l]].copy()
            if l >= 2:
                cur += self.gains[l] * (self.layer(x, l - 1) @ params[f"W{l}"])
            v = cur / diag
            if l < self.L or self.spec.output_diodes:
                np.clip(v, *self.clip_range(l), out=v)
                if isinstance(self.spec.model, Shockley):  # settle each node against its own diodes
                    v = self._node_clamp(v, cur, diag, *self.rails(l))
            x[:, o:o + n[l]] = v
        return x

    def _node_clamp(self, v, cur, diag, rlo, rhi, iterations=6):
        """Scalar Newton per node on ``diag (v - cur/diag) + i_hi(v) - i_lo(v) = 0`` (the node
        alone with its two Shockley diodes to rails ``rlo``, ``rhi`` (V), exponentials only),
        steps limited to 0.1 V (:func:`fastres.kernels.layered.node_clamp`, in place on ``v``).
        ``v``, ``cur`` (B, n) V and A; ``diag``, ``rlo``, ``rhi`` (n,)."""
        v = np.ascontiguousarray(v)
        _layered.node_clamp(v, np.ascontiguousarray(cur), np.ascontiguousarray(diag, dtype=np.float64),
                            np.ascontiguousarray(rlo, dtype=np.float64),
                            np.ascontiguousarray(rhi, dtype=np.float64),
                            float(self.dpar[0, 0]), float(self.dpar[0, 1]), int(iterations))
        return v

    def layer(self, x, l) -> np.ndarray:
        """Voltages (B, nodes of layer l) of free layer ``l`` (1..L) from kernel-order ``x``."""
        o = self.offset[l]
        return x[:, o:o + self.nodes_per_layer[l]]

    def outputs(self, x) -> np.ndarray:
        """Class outputs ``V(o_k+) - V(o_k-)`` (B, n_classes) in V."""
        out = self.layer(x, self.L)
        c = self.spec.sizes[-1]
        return out[:, :c] - out[:, c:]

    def output_injection(self, dC_dout) -> np.ndarray:
        """Injected currents (B, nF) in A = ``-dC/dV`` on the output nodes for ``dC/d(output)``."""
        B = dC_dout.shape[0]
        c = self.spec.sizes[-1]
        inj = np.zeros((B, self.nF))
        o = self.offset[self.L]
        inj[:, o:o + c] = -dC_dout
        inj[:, o + c:o + 2 * c] = dC_dout
        return inj

    # -- the same network as a Circuit (for SPICE export and cross-checks) --------------------
    def to_circuit(self, params, x, title=None) -> Circuit:
        """The network with one sample's pixels ``x`` (n_in,) as a :class:`Circuit`."""
        spec = self.spec
        n = self.nodes_per_layer
        L = self.L
        c = Circuit(title=title or f"fastres layered network {'-'.join(map(str, spec.sizes))}", gmin=spec.gmin)
        n_in = spec.sizes[0]
        for i in range(n_in):
            c.add_voltage_source(f"vxp{i}", f"xp{i}", spec.input_volts * float(x[i]))
        for i in range(n_in):
            c.add_voltage_source(f"vxn{i}", f"xn{i}", -spec.input_volts * float(x[i]))
        c.add_voltage_source("vbias", "bias", spec.bias_volts)
        c.add_voltage_source("vrlo", "rail_lo", spec.rail_lo)
        c.add_voltage_source("vrhi", "rail_hi", spec.rail_hi)
        if spec.paired and L > 1:
            c.add_voltage_source("vrnlo", "rail_nlo", -spec.rail_hi)
            c.add_voltage_source("vrnhi", "rail_nhi", -spec.rail_lo)
        names = {0: [f"xp{i}" for i in range(n_in)] + [f"xn{i}" for i in range(n_in)]}
        ncls = spec.sizes[-1]
        for l in range(1, L + 1):
            if l == L:
                names[l] = [f"op{k}" for k in range(ncls)] + [f"on{k}" for k in range(ncls)]
            else:
                names[l] = [f"h{l}_{j}" for j in range(n[l])]
        model = spec.model
        mname = "dclip" if spec.diode == "shockley" else "pwlclip"
        for l in range(1, L + 1):
            W = params[f"W{l}"]
            Bv = params[f"B{l}"]
            src = names[l - 1]
            if l >= 2 and self.gains[l] != 1.0:
                amp = [f"{s}_amp" for s in src]
                for s, t in zip(src, amp):
                    c.add_amplifier(f"{s}", s, t, self.gains[l])
                src = amp
            mirrored = self.mirrored(l)
            self._add_conductances(c, l, src, names[l], W, Bv)
            for j, node in enumerate(names[l]):
                if l < L or spec.output_diodes:
                    neg = mirrored[j]
                    c.add_diode(f"{node}_hi", node, "rail_nhi" if neg else "rail_hi", model, mname)
                    c.add_diode(f"{node}_lo", "rail_nlo" if neg else "rail_lo", node, model, mname)
        return c

    def _add_conductances(self, c: Circuit, l, src, dst, W, Bv):
        """Layer ``l``'s conductances ``W`` (S, (len(src), len(dst))) from nodes ``src`` to
        ``dst``, and ``Bv`` from the bias source, into circuit ``c`` (a subclass lays them out
        differently: :class:`fastres.crossbar.WiredNetwork`)."""
        for j, node in enumerate(dst):
            for i, s in enumerate(src):
                c.add_resistor(f"w{l}_{i}_{j}", s, node, g=float(W[i, j]))
            c.add_resistor(f"b{l}_{j}", "bias", node, g=float(Bv[j]))

    def node_names(self) -> list:
        """Names (as in :meth:`to_circuit`) of the free nodes in kernel order."""
        n = self.nodes_per_layer
        ncls = self.spec.sizes[-1]
        out = []
        for l in self.K_layers + self.E_layers:
            if l == self.L:
                out += [f"op{k}" for k in range(ncls)] + [f"on{k}" for k in range(ncls)]
            else:
                out += [f"h{l}_{j}" for j in range(n[l])]
        return out


#: auto picks the CG path when the dense Schur complement has at least this many nodes. Measured
#: on the 2-core machine (benchmarks/deep_speed.py --crossover, README "Speed"), CG is already
#: faster from about 64 nodes (784-64-64-10); the threshold stays above 100 so that the default
#: networks (784-100-10, 784-100-100-10, 784-1024-10: 20, 100 and 20 nodes) keep the dense path
#: and their bit-identical results (CG agrees to 1e-9 V, not bit for bit): linear = "cg" opts in.
CG_FROM_NODES = 128

#: auto picks the CG path for one hidden layer of at least this many nodes. There the dense
#: Schur complement is only the output layer (2 n_classes nodes), but forming it costs
#: (2 n_classes)^2 multiply-adds per hidden node, sample and Newton step, against two products
#: with W_2 per CG iteration (about 2 per direction). Measured on the 2-core machine (training
#: step, batch 20, both paths in one process, one thread, shared machine; README "One wide
#: hidden layer"): CPU time per step CG / dense 0.77 (pwl) and 0.73 (Shockley) at 784-2048-10,
#: 0.75 and 0.67 at 784-4096-10, 0.66 and 0.68 at 784-8192-10 (it was 8192 before the CG line
#: search and residual of one hidden layer got faster). 784-1024-10 (a default network) keeps
#: the dense path and its bit-identical results.
CG_FROM_WIDTH = 2048


class LayeredSystem:
    """A layered network's :class:`~fastres.system.KernelSystem` with its layer blocks, solved
    without a dense matrix by :mod:`fastres.kernels.layered` (conjugate gradients on the
    layer-parity Schur complement, products with the shared conductances over the minibatch).

    ``kernel`` the KernelSystem (its ``GKK``, ``GKE`` are not used), ``Ws`` the ``W_l``
    (n_{l-1}, n_l) S for l = 2..L, ``gains`` (L + 1,), ``off``, ``nl`` (L + 1,) layer offsets
    and sizes in kernel order, ``d`` (nF,) S the conductance sums. ``last_cg_iterations`` (B,)
    holds the CG iterations of the last solve, summed over its Newton steps.
    """

    #: first forcing term and CG iterations per direction at most (see kernels/layered.py)
    ETA0 = 0.0
    ETA_MAX = 0.0
    MAXCG = 1000
    #: how two or more threads share a solve: "samples" (each thread solves a chunk of the
    #: minibatch, one parallel region), "products" (every product split over the threads,
    #: per-sample work over samples) or "auto": "samples" for one hidden layer (the CG class
    #: is the output layer, the products are small and the per-node loops over the wide hidden
    #: layer dominate, which only "samples" splits), else "products" (deep networks, measured
    #: faster there with free cores: README "Deep, wide networks")
    PARALLEL = "auto"
    #: the adjoint's CG stops at this scaled residual relative to its right-hand side's
    ADJOINT_RTOL = 1e-14

    def __init__(self, net: "LayeredNetwork", params, kernel: KernelSystem):
        self.kernel = kernel
        L = net.L
        Ws = tuple(np.ascontiguousarray(params[f"W{l}"], dtype=np.float64) for l in range(2, L + 1))
        self.Ws = Ws if Ws else (np.zeros((0, 0)),)
        self.gains = np.array(net.gains[:L + 1], dtype=np.float64)
        self.off = np.array([0] + [net.offset[l] for l in range(1, L + 1)], dtype=np.int64)
        self.nl = np.array(net.nodes_per_layer, dtype=np.int64)
        self.nK = net.nK
        self.d = np.concatenate([np.diag(kernel.GKK), kernel.gEE])
        # diodes sharing one kind and one parameter row (every layered network) pass that row
        # alone (kernels/layered.py: dev), so a wide layer's line search does not stream the
        # (nD, NPAR) table from memory per sample and trial
        self.dkind, self.dpar = kernel.dkind, kernel.dpar
        if kernel.dkind.size and np.all(kernel.dkind == kernel.dkind[0]) \
                and np.all(kernel.dpar == kernel.dpar[0]):
            self.dkind = np.ascontiguousarray(kernel.dkind[:1])
            self.dpar = np.ascontiguousarray(kernel.dpar[:1])
        #: some diode carries an exponential cache between Newton steps (Shockley; not pwl)
        self.carry = bool(_layered.carries(self.dkind)) if self.dkind.size else False
        self.last_cg_iterations = None
        self._last = None  # (x, G_FF x, valid, di, dg, ev) of the last solve started from scratch

    def solve_batch(self, b, vdfix, x, alg):
        """The :func:`fastres.solver.solve_system` contract: solve in place on ``x`` (B, nF) V,
        return ``(iterations, residual (A), status)`` (B,)."""
        k = self.kernel
        B = x.shape[0]
        it = np.zeros(B, dtype=np.int64)
        res = np.zeros(B)
        st = np.zeros(B, dtype=np.int64)
        cg = np.zeros(B, dtype=np.int64)
        t = numba.get_num_threads()
        args = (np.ascontiguousarray(b), np.ascontiguousarray(vdfix), k.da, k.db, self.dkind, self.dpar, x,
                float(alg.reltol), float(alg.vntol), float(alg.abstol), int(alg.maxiter), self.ETA0,
                self.ETA_MAX, self.MAXCG)
        # G_FF x and the diode states of a start that is the free phase's solution (EqProp's
        # nudged phases both start there) are known exactly: reuse them rather than recompute
        # (row copies into fresh arrays: boolean-mask gathers of these (B, nD) arrays cost
        # 2-5x more, about 16 ms per 784-32768-10 nudged phase; the exponential caches are
        # neither read nor copied when no diode carries one, e.g. pwl)
        nD = k.da.shape[0]
        gx = np.empty_like(x)
        di, dg, ev = np.empty((B, nD)), np.empty((B, nD)), np.empty((B, nD))
        ok = np.zeros(B, dtype=np.bool_)
        if self._last is not None and self._last[0].shape == x.shape:
            x0, gx0, ok0, di0, dg0, ev0 = self._last
            ok = ok0 & np.all(x0 == x, axis=1)
            pairs = ((gx, gx0), (di, di0), (dg, dg0)) + (((ev, ev0),) if self.carry else ())
            if ok.all():
                for a, a0 in pairs:
                    np.copyto(a, a0)
            else:
                for s in np.flatnonzero(ok):
                    for a, a0 in pairs:
                        a[s] = a0[s]
        cold = not ok.any()
        mode = self.PARALLEL
        if mode == "auto":
            mode = "samples" if self.nl.shape[0] == 3 else "products"
        n = min(B, t) if mode == "samples" else 1
        if n <= 1:  # one thread or one sample: products split over the threads instead
            _layered.solve_layered(self.Ws, self.gains, self.off, self.nl, t, self.nK, self.d, *args,
                                   gx, ok, di, dg, ev, it, res, st, cg)
        else:
            _layered.solve_layered_b(self.Ws, self.gains, self.off, self.nl, self.nK, self.d, *args,
                                     gx, ok, di, dg, ev, n, it, res, st, cg)
        if cold:  # a phase started from scratch (the free phase): the start of the ones to come
            self._last = (x.copy(), gx, ok, di, dg, ev)
        self.last_cg_iterations = cg
        return it, res, st

    def adjoint(self, vdfix, x, rhs):
        """``lam`` (B, nF) with ``J(x) lam = rhs`` per sample (rows NaN where J is singular)."""
        k = self.kernel
        lam = np.zeros_like(x)
        _layered.adjoint_layered(self.Ws, self.gains, self.off, self.nl, numba.get_num_threads(),
                                 self.nK, self.d,
                                 np.ascontiguousarray(vdfix), k.da, k.db, self.dkind, self.dpar,
                                 np.ascontiguousarray(x), np.ascontiguousarray(rhs), lam,
                                 self.ADJOINT_RTOL, self.MAXCG)
        return lam


@dataclass
class NetworkSolution(_Result):
    """Result of solving a :class:`NetworkProblem`: ``x`` (B, nF) free-node voltages (V) in
    kernel order (``net.layer(x, l)``, ``net.outputs(x)``); ``iterations``, ``residual`` (A),
    ``status``, ``converged``, ``retcode`` as for a circuit."""

    net: LayeredNetwork
    x: np.ndarray
    iterations: np.ndarray
    residual: np.ndarray
    status: np.ndarray

    def layer(self, l) -> np.ndarray:
        """Voltages (B, nodes of layer l) of layer ``l`` (1..L), V."""
        return self.net.layer(self.x, l)

    def outputs(self) -> np.ndarray:
        """Class outputs ``V(o_k+) - V(o_k-)`` (B, n_classes), V."""
        return self.net.outputs(self.x)


class NetworkProblem:
    """The DC problem of a layered network for a batch of inputs (see
    :meth:`LayeredNetwork.problem`); solved by :func:`fastres.solver.solve`.

    Attributes built once and shared with the problems derived by :meth:`nudged`: ``U``
    (B, 2 n_in) input source voltages (V), ``b`` (B, nF) the free phase's source currents (A),
    ``system`` the :class:`KernelSystem`.
    """

    what = "network solve"

    def __init__(self, net: LayeredNetwork, params, X, *, system=None, x0=None, cache=None,
                 inj=None, U=None, b=None):
        self.net = net
        self.params = params
        self.X = X
        self.system_ = net.system(params) if system is None else system
        self.U = net.input_voltages(X) if U is None else U
        self.b = net.source_currents(self.U, params, self.system_) if b is None else b
        self.x0 = x0
        self.cache = cache
        self.inj = inj
        self._layered = None

    def nudged(self, inj, x0) -> "NetworkProblem":
        """The same problem with currents ``inj`` (B, nF) in A injected (EqProp's nudged
        phase), started from ``x0`` (B, nF) V and sharing the factor cache."""
        p = NetworkProblem(self.net, self.params, self.X, system=self.system_, x0=x0,
                           cache=self.cache, inj=inj, U=self.U, b=self.b)
        p._layered = self._layered
        return p

    # -- the solve protocol (see fastres.solver.solve) ---------------------------------------
    def system(self, alg):
        """The :class:`KernelSystem` (Schur path) or, when ``alg.linear`` picks the CG path
        (:meth:`LayeredNetwork.linear_path`), a :class:`LayeredSystem` around it."""
        if self.net.linear_path(getattr(alg, "linear", "auto")) == "schur":
            if self.net.is_diagonal_only(self.system_):
                self.system_ = self.net.system(self.params, dense=True)
            return self.system_
        if self._layered is None or self._layered.kernel is not self.system_:
            self._layered = LayeredSystem(self.net, self.params, self.system_)
        return self._layered

    def batch(self, alg):
        b = self.b if self.inj is None else self.b + self.inj
        return b, self.net.vdfix

    def start(self, alg, B) -> np.ndarray:
        if self.x0 is None:
            return self.net.initial_guess(self.b, self.params, self.system_)
        return np.array(self.x0, dtype=np.float64, copy=True)

    def solution(self, alg, x, it, res, st) -> NetworkSolution:
        return NetworkSolution(self.net, x, it, res, st)
