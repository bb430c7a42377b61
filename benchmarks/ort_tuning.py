"""ONNX Runtime CPU tuning, one step at a time: interleaved A/B of session options and graph forms against the default.

    python -m benchmarks.ort_tuning [--quick] [--iters 7] [--variants default,spin-off,...]
                                    [--cases vit_small_patch16_224:224x224:1,...] [--out-dir benchmarks/results]

Every variant is one ONNX Runtime CPU session (`vitexport.engines.ort.OrtEngine`, options through
`SessionTuning`) on one graph form; all variants of a case run interleaved (rotating order, a short untimed
pause before each run so spinning threads of one session do not steal the next one's cores), medians.
Each variant's output is checked against the default's (verify's fp32 tolerance): a variant that changes
the results is marked WRONG and never recommended.

Variants (`VARIANTS`):
- ``default``: the ``--attention sdpa`` export (the default before chunked attention), the library's session
  (level all, pre-packing on, spinning on);
- ``spin-off``: idle threads do not busy-wait; ``no-prepack``: MatMul weights not pre-packed;
  ``level-basic`` / ``level-extended``: lower graph optimization levels (``all`` is the default);
- ``mha``: the export with ``--attention mha`` (ORT's fused MultiHeadAttention);
- ``gemm2d`` / ``gemm2d-mha``: every Linear (MatMul by a transposed weight, then + bias) rewritten as a 2-D
  Gemm with the bias folded in, reshaped (B*N, D) around it (`gemm2d_rewrite`);
- ``ort-transformers``: onnxruntime.transformers' optimizer (model_type vit: LayerNorm/GELU/attention fusions).
Writes ``ort_tuning.json`` and ``ort_tuning.md`` into ``--out-dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from benchmarks.common import base_parser, machine_line, run_footer, time_case, write_results
from benchmarks.peak import load_average
from vitexport.engines import create_engine
from vitexport.export.onnx_export import export_onnx
from vitexport.model.vit import create_model

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "spin-off": {"spin": False},
    "no-prepack": {"session": {"prepack": False}},
    "level-basic": {"session": {"graph_level": "basic"}},
    "level-extended": {"session": {"graph_level": "extended"}},
    "mha": {"attention": "mha"},
    "gemm2d": {"rewrite": "gemm2d"},
    "gemm2d-mha": {"attention": "mha", "rewrite": "gemm2d"},
    "ort-transformers": {"rewrite": "ort-transformers"},
}
DEFAULT_CASES = "vit_small_patch16_224:224x224:1,vit_base_patch16_224:224x224:1,vit_base_patch16_224:224x224:8"
DEFAULT_VARIANTS = [v for v in VARIANTS if v != "level-basic"]


def _linear_pattern(node, producers, consumers, inits):
    """(weight name, bias name, Add node) when ``node`` is MatMul(x, Transpose(W)) + bias, else None."""
    if node.op_type != "MatMul":
        return None
    t = producers.get(node.input[1])
    if t is None or t.op_type != "Transpose" or t.input[0] not in inits or len(inits[t.input[0]].dims) != 2:
        return None
    if list(next((a.ints for a in t.attribute if a.name == "perm"), [1, 0])) != [1, 0]:
        return None
    users = consumers.get(node.output[0], [])
    if len(users) != 1 or users[0].op_type != "Add":
        return None
    add = users[0]
    bias = next((i for i in add.input if i != node.output[0]), None)
    if bias not in inits or len(inits[bias].dims) != 1:
        return None
    return t.input[0], bias, add


def gemm2d_rewrite(src: str, dst: str) -> int:
    """Rewrite every Linear of the graph as Reshape(x, (-1, K)) -> Gemm(transB=1, bias) -> Reshape back.

    The output shape is x's shape with its last dimension replaced by the weight's rows. Returns the number of
    Linears rewritten. Numerics: the same products and sums as MatMul + Add (Gemm adds the bias once at the end).
    """
    model = onnx.load(src)
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    g.initializer.extend([numpy_helper.from_array(np.array([0], np.int64), "g2d_start"),
                          numpy_helper.from_array(np.array([-1], np.int64), "g2d_end")])
    new_nodes, dropped, count = [], set(), 0
    for node in g.node:
        found = _linear_pattern(node, producers, consumers, inits)
        if found is None:
            if id(node) not in dropped:
                new_nodes.append(node)
            continue
        weight, bias, add = found
        x, k, p = node.input[0], inits[weight].dims[1], f"g2d{count}_"
        g.initializer.extend([numpy_helper.from_array(np.array([-1, k], np.int64), p + "flat"),
                              numpy_helper.from_array(np.array([inits[weight].dims[0]], np.int64), p + "n")])
        new_nodes += [
            helper.make_node("Shape", [x], [p + "shape"]),
            helper.make_node("Slice", [p + "shape", "g2d_start", "g2d_end"], [p + "lead"]),
            helper.make_node("Concat", [p + "lead", p + "n"], [p + "outshape"], axis=0),
            helper.make_node("Reshape", [x, p + "flat"], [p + "x2"]),
            helper.make_node("Gemm", [p + "x2", weight, bias], [p + "y2"], transB=1),
            helper.make_node("Reshape", [p + "y2", p + "outshape"], [add.output[0]]),
        ]
        dropped.add(id(add))
        count += 1
    del g.node[:]
    g.node.extend(new_nodes)
    onnx.save(model, dst)  # the now unused Transpose nodes are pruned by ORT at load
    return count


def ort_transformers_rewrite(src: str, dst: str, model: Any) -> int:
    """onnxruntime.transformers' offline optimizer for ViT (python fusions only, opt_level 0); fused node count."""
    from onnxruntime.transformers.optimizer import optimize_model

    cfg = model.config
    opt = optimize_model(src, model_type="vit", num_heads=cfg.num_heads, hidden_size=cfg.embed_dim, opt_level=0)
    opt.save_model_to_file(dst)
    return sum(opt.get_fused_operator_statistics().values())


def build_variants(model: Any, name: str, folder: str, variants: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """variant -> loaded OrtEngine (or the reason it could not be built)."""
    files: dict[str, str] = {}
    engines: dict[str, Any] = {}
    notes: dict[str, str] = {}

    def graph(attention: str, rewrite: str | None) -> str:
        key = f"{attention}-{rewrite}"
        if key not in files:
            base = os.path.join(folder, f"{name}_{attention}.onnx")
            if not os.path.exists(base):
                export_onnx(model, base, attention=attention)
            files[key] = base
            if rewrite == "gemm2d":
                files[key] = base.replace(".onnx", "_gemm2d.onnx")
                notes[f"{attention}-gemm2d"] = f"{gemm2d_rewrite(base, files[key])} Linears rewritten"
            elif rewrite == "ort-transformers":
                files[key] = base.replace(".onnx", "_ortt.onnx")
                notes["ort-transformers"] = f"{ort_transformers_rewrite(base, files[key], model)} fused nodes"
        return files[key]

    for v in variants:
        spec = VARIANTS[v]
        try:
            path = graph(spec.get("attention", "sdpa"), spec.get("rewrite"))
            engines[v] = create_engine("cpu", spin=spec.get("spin", True), session=spec.get("session")).load(path)
        except Exception as exc:  # a candidate that cannot be built is reported, not fatal
            notes[v] = f"not built: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return engines, notes


def run_case(engines: dict[str, Any], x: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    result = time_case({k: e.run for k, e in engines.items()}, x, args.warmup, args.iters, args.gap_ms / 1e3,
                       ref="default")
    base = result.get("default", {}).get("median_ms")
    for r in result.values():
        r["vs_default"] = base / r["median_ms"] if base else None
    return result


def markdown(rows: list[dict[str, Any]], variants: list[str]) -> list[str]:
    lines = ["| model | size | batch | " + " | ".join(variants) + " | best |",
             "| --- | --- | ---: |" + " ---: |" * len(variants) + " --- |"]
    for row in rows:
        cells = []
        for v in variants:
            r = row["variants"].get(v)
            if r is None:
                cells.append("n/a")
                continue
            cell = f"{r['median_ms']:.1f} ({r['vs_default']:.2f}x)"
            cells.append(cell if r["ok"] else cell + f" WRONG {r['max_abs']:.1e}")
        ok = {v: r for v, r in row["variants"].items() if r["ok"]}
        best = min(ok, key=lambda v: ok[v]["median_ms"]) if ok else "none"
        lines.append(f"| {row['model']} | {row['size']} | {row['batch']} | " + " | ".join(cells) + f" | {best} |")
    return lines


def verdicts(rows: list[dict[str, Any]], variants: list[str]) -> list[str]:
    """Per variant: geometric-mean speed-up over the default across cases, and whether it was right everywhere."""
    lines = []
    for v in variants:
        got = [r["variants"][v] for r in rows if v in r["variants"]]
        if not got or v == "default":
            continue
        gm = float(np.exp(np.mean([np.log(g["vs_default"]) for g in got])))
        right = all(g["ok"] for g in got)
        keep = "worth making a default" if right and gm >= 1.03 else "no gain" if right else "WRONG somewhere"
        lines.append(f"- {v}: {gm:.2f}x the default (geometric mean over {len(got)} cases), "
                     f"{'right' if right else 'WRONG'}: {keep}")
    return lines


def main() -> None:
    parser = base_parser(__doc__, "ViT-S/16 97x513 batch 1, 2 runs: a smoke test")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help=f"some of {', '.join(VARIANTS)}")
    parser.add_argument("--cases", default=DEFAULT_CASES, help="model:HxW:batch, comma-separated")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=0, help="untimed rounds after the parity run")
    parser.add_argument("--gap-ms", type=float, default=100.0)
    args = parser.parse_args()
    if args.quick:
        args.cases, args.iters, args.gap_ms = "vit_small_patch16_224:97x513:1", 2, 20.0
    variants = args.variants.split(",")
    start, load_start = time.perf_counter(), load_average() or 0.0
    cases = [c.split(":") for c in args.cases.split(",")]
    rows: list[dict[str, Any]] = []
    notes: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for name in dict.fromkeys(c[0] for c in cases):
            torch.manual_seed(0)
            model = create_model(name).eval()
            engines, notes[name] = build_variants(model, name, folder, variants)
            for _, size, batch in (c for c in cases if c[0] == name):
                h, w = (int(v) for v in size.split("x"))
                x = np.random.default_rng(0).standard_normal((int(batch), 3, h, w)).astype(np.float32)
                rows.append({"model": name, "size": size, "batch": int(batch),
                             "variants": run_case(engines, x, args)})
                print(markdown(rows[-1:], variants)[-1], flush=True)
    report = {"machine": machine_line(), "args": vars(args), "notes": notes, "rows": rows,
              "load_start": load_start, "load_end": load_average() or 0.0, "elapsed_s": time.perf_counter() - start}
    write(args.out_dir, report, variants)


def write(out_dir: str, report: dict[str, Any], variants: list[str]) -> None:
    a = report["args"]
    footer = (f"Medians of {a['iters']} interleaved runs after one parity run and {a['warmup']} warm-up round(s), "
              f"{a['gap_ms']:g} ms "
              f"untimed pause before each run; ms (speed-up over default). Notes: {json.dumps(report['notes'])}. "
              + run_footer(report))
    text = ["## ONNX Runtime tuning (benchmarks/ort_tuning.py)", "", *markdown(report["rows"], variants), "",
            *verdicts(report["rows"], variants), "", footer, ""]
    write_results(out_dir, "ort_tuning", report, text)


if __name__ == "__main__":
    main()
