"""Solver speed of fastres against the numpy reference and ngspice, on 784-100-10.

    python benchmarks/solver_speed.py [--batch 10000] [--repeats 5] [--ngspice-samples 3]
                                      [--numpy-batch 500] [--dc-points 5] [--json FILE]

The network is ``layered_circuit((784, 100, 10), rng)`` (Shockley diodes IS = 1e-14 A, N = 1;
conductances U[1e-6, 1e-4] S; rails at 0 V) with ``input_batch`` inputs U[0, 1] V, mirrored.

What is timed (wall clock, ``time.perf_counter``; medians over ``--repeats``):

* fastres: ``solve(prob, Newton())`` with ``prob = DCProblem(cc, sources)`` built and prepared
  once (after a warm-up solve that JIT-compiles the kernels); and end to end,
  ``solve(DCProblem(cc, sources), Newton())``, which includes ``cc.prepare(sources)``.
* numpy reference: ``reference_solve(circuit, sources)`` (of ``tests/naive.py``) on the first
  ``--numpy-batch`` samples (it builds its own nodal system each call: included in the time).
* ngspice: the whole ``ngspice -b deck.cir`` process, nothing subtracted, for decks that
  (0) only parse the netlist (a ``.control`` block with no analysis), (1) run one ``op``,
  (N) run ``op`` for each of N samples (``alter`` of the 1568 input sources between them), and
  (dc) run a ``dc`` sweep of one input source over ``--dc-points`` points. Derived: per-op
  marginal time ``(T_N - T_0) / N`` (parse excluded) and the one-process-per-sample time
  ``T_1``; per-dc-point marginal ``(T_dc - T_0) / points``. ngspice runs with
  ``--ngspice-options`` (tight tolerances by default, so that it can be compared to 1e-9 V).

Ratios: fastres samples/s over numpy samples/s; fastres samples/s times ngspice seconds per
operating point (how many fastres samples are solved in the time ngspice takes for one).
"""
import os

for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import fastres  # noqa: E402
from fastres import DCProblem, Newton, solve  # noqa: E402
from fastres.generators import input_batch, layered_circuit  # noqa: E402

# The numpy reference solver is a test twin, not part of the package: it lives in the
# repository's tests/naive.py, so put that directory on sys.path to import it.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests"))
from naive import reference_solve  # noqa: E402

SIZES = (784, 100, 10)
TARGET_SPS = 50_000
TARGET_NUMPY = 20.0
TARGET_NGSPICE = 20_000.0
_NG_FAIL = re.compile(r"no convergence|singular matrix|iteration limit|simulation\(s\) aborted"
                      r"|fatal error|error on line|^\s*error\b|transient op started",
                      re.IGNORECASE | re.MULTILINE)


def _median_time(fn, repeats):
    times = []
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), times, out


def _mark(ok):
    return "PASS" if ok else "MISS"


# ---------------------------------------------------------------------------------------------
# ngspice decks
# ---------------------------------------------------------------------------------------------
def _deck(base, control_lines, options):
    """The netlist text of ``write_netlist(..., analysis=None)`` with an ``.options`` line and a
    ``.control`` block inserted before ``.end``."""
    lines = base.rstrip("\n").split("\n")
    assert lines[-1].strip().lower() == ".end"
    extra = [f".options {options}"] if options else []
    return "\n".join(lines[:-1] + extra + [".control", *control_lines, ".endc", ".end"]) + "\n"


def _run_ngspice(text, tmp, name):
    """Run ``ngspice -b`` on ``text``; returns the process wall time (s).

    In batch mode ngspice exits with status 1 and "no simulations run" when the deck has no
    dot-analysis line, even if its ``.control`` block ran analyses: that status is accepted
    (the raw files the block writes are checked when read); any error message is not."""
    path = os.path.join(tmp, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    env = dict(os.environ, SPICE_NO_DATASEG_CHECK="1")
    t0 = time.perf_counter()
    proc = subprocess.run(["ngspice", "-b", path], cwd=tmp, env=env, capture_output=True,
                          text=True, timeout=3600)
    wall = time.perf_counter() - t0
    out = proc.stdout + "\n" + proc.stderr
    m = _NG_FAIL.search(out)
    bad_rc = proc.returncode != 0 and not (proc.returncode == 1 and "no simulations run" in out)
    if bad_rc or m:
        tail = "\n".join(out.strip().splitlines()[-20:])
        raise RuntimeError(f"ngspice failed on {name} ({m.group(0) if m else proc.returncode}):"
                           f"\n{tail}")
    return wall


def _alter_lines(circuit, sources, sample):
    """``alter`` commands setting every batched source to its value in ``sample``."""
    return [f"alter {name} = {float(vals[sample])!r}" for name, vals in sources.items()]


def ngspice_benchmark(circuit, sources, n_samples, dc_points, options, repeats, fastres_v,
                      free_cols, free_names):
    from fastres.netlist import write_netlist
    from fastres.ngspice import read_raw

    base = write_netlist(circuit, sources=sources, sample=0, analysis=None)
    n_res = sum(1 for ln in base.splitlines() if ln[:1].lower() == "r")
    res = {"netlist_lines": base.count("\n"), "resistors": n_res, "options": options,
           "repeats": repeats}
    with tempfile.TemporaryDirectory(prefix="fastres_speed_") as tmp:
        parse = _deck(base, ["echo parsed"], options)
        one = _deck(base, ["op", "write op0.raw"], options)
        ctl = []
        for s in range(n_samples):
            if s > 0:
                ctl += _alter_lines(circuit, sources, s)
            ctl += ["op", f"write op{s}.raw"]
        many = _deck(base, ctl, options)
        sweep_src = "vx0p"
        lo, hi = 0.0, 1.0
        step = (hi - lo) / (dc_points - 1)
        dc = _deck(base, [f"dc {sweep_src} {lo!r} {hi + 0.5 * step!r} {step!r}", "write dc.raw"],
                   options)
        t = {}
        for key, text in (("parse", parse), ("op1", one), ("opN", many), ("dc", dc)):
            walls = [_run_ngspice(text, tmp, f"{key}.cir") for _ in range(repeats)]
            t[key] = float(np.median(walls))
            res[f"t_{key}_all_s"] = walls
            print(f"  ngspice {key:5s} deck: median {t[key]:.3f} s over {repeats}"
                  f" ({', '.join(f'{w:.3f}' for w in walls)})", flush=True)
        # agreement on the op samples (free nodes)
        dv = []
        for s in range(n_samples):
            names, data = read_raw(os.path.join(tmp, f"op{s}.raw"))
            col = {n: i for i, n in enumerate(names)}
            ng = np.array([data[0, col[f"v({n})"]] for n in free_names])
            dv.append(float(np.max(np.abs(ng - fastres_v[s, free_cols]))))
        names, data = read_raw(os.path.join(tmp, "dc.raw"))
        col = {n: i for i, n in enumerate(names)}
        sweep = data[:dc_points, col["v(v-sweep)"]] if "v(v-sweep)" in col else \
            np.linspace(lo, hi, dc_points)
        ng_dc = np.array([[data[p, col[f"v({n})"]] for n in free_names] for p in range(dc_points)])
    res.update({f"t_{k}_s": v for k, v in t.items()})
    res["op_samples"] = n_samples
    res["dc_points"] = dc_points
    res["op_marginal_s"] = (t["opN"] - t["parse"]) / n_samples
    res["op_marginal_after_first_s"] = ((t["opN"] - t["op1"]) / (n_samples - 1)
                                        if n_samples > 1 else float("nan"))
    res["op_per_process_s"] = t["op1"]
    res["dc_marginal_per_point_s"] = (t["dc"] - t["parse"]) / dc_points
    res["dc_all_in_per_point_s"] = t["dc"] / dc_points
    res["max_abs_dv_op"] = max(dv)
    res["max_abs_dv_op_per_sample"] = dv
    return res, sweep_src, sweep, ng_dc


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=10_000, help="fastres batch size (samples)")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats (medians reported)")
    ap.add_argument("--ngspice-samples", type=int, default=3, help="operating points in ngspice")
    ap.add_argument("--ngspice-repeats", type=int, default=1, help="repeats of each ngspice deck")
    ap.add_argument("--ngspice-options", default="reltol=1e-9 abstol=1e-15 vntol=1e-12",
                    help="extra .options for ngspice ('' for its defaults)")
    ap.add_argument("--dc-points", type=int, default=5, help="points of the ngspice .dc sweep")
    ap.add_argument("--numpy-batch", type=int, default=500, help="samples for the numpy reference")
    ap.add_argument("--numpy-repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="Numba threads (default: all)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args(argv)
    if args.dc_points < 2:
        ap.error("--dc-points must be >= 2")

    import numba
    out = {"command": " ".join([os.path.basename(sys.executable)] + sys.argv),
           "python": platform.python_version(), "numpy": np.__version__,
           "numba": numba.__version__, "fastres": fastres.__version__,
           "cpus": os.cpu_count(), "numba_threads": args.threads or numba.get_num_threads(),
           "sizes": list(SIZES), "batch": args.batch, "repeats": args.repeats}
    print(f"fastres solver speed, {'-'.join(map(str, SIZES))}, batch {args.batch}, "
          f"{out['numba_threads']} Numba threads, OPENBLAS_NUM_THREADS=1", flush=True)

    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    circuit = layered_circuit(SIZES, rng)
    out["build_circuit_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cc = circuit.compile()
    out["compile_s"] = time.perf_counter() - t0
    sources = input_batch(SIZES[0], args.batch, rng)
    print(f"circuit: {len(circuit.elements)} elements, {cc.nF} free nodes (K {cc.nK}, E {cc.nE});"
          f" build {out['build_circuit_s']:.2f} s, compile {out['compile_s']:.2f} s", flush=True)

    # -- fastres ---------------------------------------------------------------------------
    alg = Newton(threads=args.threads)
    prob = DCProblem(cc, sources)
    t0 = time.perf_counter()
    sol = solve(prob, alg)  # JIT compile (or load from cache) + prepare
    out["warmup_s"] = time.perf_counter() - t0
    t_solve, all_solve, sol = _median_time(lambda: solve(prob, alg), args.repeats)
    t_e2e, all_e2e, _ = _median_time(lambda: solve(DCProblem(cc, sources), alg), args.repeats)
    sps = args.batch / t_solve
    sps_e2e = args.batch / t_e2e
    out.update(fastres_solve_s=t_solve, fastres_solve_all_s=all_solve, fastres_sps=sps,
               fastres_end_to_end_s=t_e2e, fastres_end_to_end_all_s=all_e2e,
               fastres_end_to_end_sps=sps_e2e,
               fastres_iterations_mean=float(sol.iterations.mean()),
               fastres_iterations_max=int(sol.iterations.max()),
               fastres_converged=bool(sol.converged.all()))
    print(f"fastres : solve (prepared)   {t_solve * 1e3:9.1f} ms  -> {sps:12,.0f} samples/s"
          f"   [target >= {TARGET_SPS:,}: {_mark(sps >= TARGET_SPS)}]")
    print(f"          end to end (+prep) {t_e2e * 1e3:9.1f} ms  -> {sps_e2e:12,.0f} samples/s")
    print(f"          Newton iterations mean {sol.iterations.mean():.2f}, max {sol.iterations.max()};"
          f" warm-up {out['warmup_s']:.2f} s", flush=True)
    V = sol.v

    # -- numpy reference ---------------------------------------------------------------------
    nb = min(args.numpy_batch, args.batch)
    sub = {k: v[:nb] for k, v in sources.items()}
    t_np, all_np, (nodes, Vref) = _median_time(lambda: reference_solve(circuit, sub),
                                               args.numpy_repeats)
    np_sps = nb / t_np
    dv_np = float(np.max(np.abs(Vref - V[:nb])))
    ratio_np = sps / np_sps
    out.update(numpy_batch=nb, numpy_s=t_np, numpy_all_s=all_np, numpy_sps=np_sps,
               max_abs_dv_numpy=dv_np, ratio_fastres_over_numpy=ratio_np)
    assert nodes == sol.nodes
    print(f"numpy   : {nb} samples {t_np:9.3f} s   -> {np_sps:12,.0f} samples/s"
          f"   (median of {args.numpy_repeats})")
    print(f"          fastres/numpy = {ratio_np:,.1f}x   [target >= {TARGET_NUMPY:g}x:"
          f" {_mark(ratio_np >= TARGET_NUMPY)}];  max|dV| fastres vs numpy over {nb} samples ="
          f" {dv_np:.3g} V", flush=True)

    # -- ngspice -----------------------------------------------------------------------------
    if shutil.which("ngspice") is None:
        print("ngspice  : not installed, skipped")
        out["ngspice"] = None
    else:
        ns = min(args.ngspice_samples, args.batch)
        free_cols = [sol.nodes.index(n) for n in cc.free_nodes]
        print(f"ngspice : {ns} operating points + a {args.dc_points}-point .dc sweep"
              f" (.options {args.ngspice_options or '(defaults)'})", flush=True)
        ng, src_name, sweep, ng_dc = ngspice_benchmark(
            circuit, sources, ns, args.dc_points, args.ngspice_options, args.ngspice_repeats,
            V, free_cols, list(cc.free_nodes))
        # fastres on the same sweep: sample 0 with the swept source replaced
        sw = {k: np.full(args.dc_points, v[0]) for k, v in sources.items()}
        sw[src_name] = sweep
        sol_dc = solve(DCProblem(cc, sw), alg)
        ng["max_abs_dv_dc"] = float(np.max(np.abs(ng_dc - sol_dc.x)))
        ng["ratio_fastres_over_ngspice_op"] = sps * ng["op_marginal_s"]
        ng["ratio_fastres_over_ngspice_op_per_process"] = sps * ng["op_per_process_s"]
        ng["ratio_fastres_over_ngspice_dc"] = sps * ng["dc_marginal_per_point_s"]
        out["ngspice"] = ng
        r_op = ng["ratio_fastres_over_ngspice_op"]
        print(f"          netlist {ng['netlist_lines']} lines ({ng['resistors']} resistors);"
              f" parse-only process {ng['t_parse_s']:.3f} s")
        print(f"          .op: 1 per process {ng['t_op1_s']:.3f} s;  {ns} in one process"
              f" {ng['t_opN_s']:.3f} s -> marginal {ng['op_marginal_s'] * 1e3:.1f} ms/op"
              f" ((T_N - T_parse)/N), {ng['op_marginal_after_first_s'] * 1e3:.1f} ms/op"
              f" ((T_N - T_1)/(N-1))")
        print(f"          .dc: {args.dc_points} points {ng['t_dc_s']:.3f} s -> marginal"
              f" {ng['dc_marginal_per_point_s'] * 1e3:.1f} ms/point, all-in"
              f" {ng['dc_all_in_per_point_s'] * 1e3:.1f} ms/point")
        print(f"          fastres/ngspice-op (marginal) = {r_op:,.0f}x   [target >="
              f" {TARGET_NGSPICE:,.0f}x: {_mark(r_op >= TARGET_NGSPICE)}];  per process"
              f" {ng['ratio_fastres_over_ngspice_op_per_process']:,.0f}x")
        print(f"          fastres/ngspice-dc (marginal per point) ="
              f" {ng['ratio_fastres_over_ngspice_dc']:,.0f}x")
        print(f"          max|dV| fastres vs ngspice over free nodes: .op {ng['max_abs_dv_op']:.3g} V"
              f" ({ns} samples), .dc {ng['max_abs_dv_dc']:.3g} V ({args.dc_points} points)",
              flush=True)
    out["targets"] = {
        "samples_per_s": {"target": TARGET_SPS, "value": sps, "pass": sps >= TARGET_SPS},
        "over_numpy": {"target": TARGET_NUMPY, "value": ratio_np, "pass": ratio_np >= TARGET_NUMPY},
    }
    if out["ngspice"]:
        r_op = out["ngspice"]["ratio_fastres_over_ngspice_op"]
        out["targets"]["over_ngspice_op"] = {"target": TARGET_NGSPICE, "value": r_op,
                                             "pass": r_op >= TARGET_NGSPICE}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)
        print(f"results written to {args.json}")
    return out


if __name__ == "__main__":
    main()
