"""Where a compiled JAX step spends its time, per HLO op, from a `jax.profiler` trace.

    prof = op_profile.profile(lambda: run_steps(n), compiled.as_text(), steps=n)

Runs the callable under `jax.profiler.trace`, reads the trace's XSpace (the protobuf that
TensorBoard's profile plugin reads; parsed with TensorFlow's copy of its schema, so no plugin
is needed) and keeps the events whose name is an instruction of the compiled module: on CPU the
fusions, dots and copies that XLA's thunk executor runs (on its worker threads, so times are
summed over threads); on GPU, where the trace's "XLA Ops" line carries the same names, the
kernels (checked on CPU only: no GPU was available). Each op is labelled with the
`op_name` metadata of its HLO instruction (the JAX source op, e.g. `.../blocks_0/attn/qkv/
dot_general`), which is what says which layer a fusion belongs to. Control-flow instructions
(a `while` from `scan_layers`) may be traced around their bodies' ops and then count them twice;
this was not checked, profile unrolled models.
"""
from __future__ import annotations

import collections
import glob
import os
import re
import tempfile
from collections.abc import Callable

import jax

_INSTR = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = ")
_OP_NAME = re.compile(r'op_name="([^"]*)"')


def instructions(hlo_text: str) -> dict[str, str]:
    """{instruction name: op_name metadata or ''} of an HLO module's text."""
    out = {}
    for line in hlo_text.splitlines():
        m = _INSTR.match(line)
        if m:
            meta = _OP_NAME.search(line)
            out[m.group(1)] = meta.group(1) if meta else ""
    return out


def _kind(name: str) -> str:
    """`ynn_fusion.113` -> `ynn_fusion`: XLA numbers instances of one kind."""
    return re.sub(r"\.\d+$", "", name)


def _layer(source: str) -> str:
    """`jit(step_fn)/transpose(jvp(TimeSformer))/blocks_3/mlp/fc1/dot_general` ->
    `transpose(jvp(TimeSformer))/blocks_*/mlp/fc1/dot_general`: one entry per kind of layer
    and pass (`jvp`: forward, `transpose(jvp(...))`: backward), summed over the blocks."""
    source = re.sub(r"^jit\([^)]*\)/", "", source)
    return re.sub(r"blocks_\d+", "blocks_*", source) or "(no source)"


def read_events(trace_dir: str) -> list[tuple[str, float]]:
    """(event name, duration in ms) of every event in the trace's .xplane.pb files."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2  # TF ships the schema

    events = []
    for path in glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True):
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
        for plane in space.planes:
            names = {k: m.name for k, m in plane.event_metadata.items()}
            for line in plane.lines:
                for ev in line.events:
                    events.append((names.get(ev.metadata_id, ""), ev.duration_ps / 1e9))
    return events


def summarise(events: list[tuple[str, float]], hlo_text: str, steps: int,
              top: int = 15) -> dict:
    """Per-step op time: total, by op kind, by source layer (`top`) and the `top` single ops."""
    instrs = instructions(hlo_text)
    per_op = collections.Counter()
    calls = collections.Counter()
    for name, ms in events:
        if name in instrs:
            per_op[name] += ms / steps
            calls[name] += 1 / steps
    by_kind = collections.Counter()
    kind_calls = collections.Counter()
    for name, ms in per_op.items():
        by_kind[_kind(name)] += ms
        kind_calls[_kind(name)] += calls[name]
    by_layer = collections.Counter()
    for name, ms in per_op.items():
        by_layer[_layer(instrs[name])] += ms
    return {
        "op_ms_per_step": sum(per_op.values()),
        "by_layer": [{"layer": k, "ms": v} for k, v in by_layer.most_common(top)],
        "by_kind": [{"kind": k, "ms": v, "calls": kind_calls[k]} for k, v in by_kind.most_common()],
        "top_ops": [{"op": k, "ms": v, "source": instrs[k]} for k, v in per_op.most_common(top)],
    }


def profile(run: Callable[[], object], hlo_text: str, steps: int, top: int = 15) -> dict:
    """Traces `run()` (which must run `steps` steps and block on the result) and summarises."""
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir):
            run()
        return summarise(read_events(trace_dir), hlo_text, steps, top)


def markdown(prof: dict, kinds: int = 10) -> str:
    lines = [f"op time per step (summed over threads): {prof['op_ms_per_step']:.2f} ms", "",
             "| op kind | ms/step | calls/step |", "|---|---:|---:|"]
    lines += [f"| {k['kind']} | {k['ms']:.2f} | {k['calls']:.0f} |"
              for k in prof["by_kind"][:kinds]]
    lines += ["", "| source op (blocks summed) | ms/step |", "|---|---:|"]
    lines += [f"| {b['layer']} | {b['ms']:.2f} |" for b in prof["by_layer"]]
    lines += ["", "| op | ms/step | source op |", "|---|---:|---|"]
    lines += [f"| {o['op']} | {o['ms']:.2f} | {o['source'] or '-'} |" for o in prof["top_ops"]]
    return "\n".join(lines)
