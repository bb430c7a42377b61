"""Shape inference with data propagation over an ONNX graph, for one concrete input shape: no onnx package.

`vitexport.onnx.budget` asks, before a runtime runs an input of a new shape, how large every intermediate
tensor of the graph will be. This module answers from the graph's skeleton (`vitexport.security.onnxwire`):
it walks the nodes in order with the input's concrete dims, gives every output its shape and element type,
and carries the values of small tensors (at most `VALUE_LIMIT` elements: the shape arithmetic that
decides a Reshape's, Pad's, Expand's or Range's result) through the ops that compute them, with numpy.
Constants come from initializers and Constant nodes (`onnxwire` keeps the values of small tensors).

The op table covers what vitexport's exports hold in every form (attention ``sdpa``, ``chunked`` (a
``Loop``), ``mha``, ``onnx``; resampling ``interpolate``/``portable``/``resize``; float16; ONNX Runtime's
offline optimization and dynamic int8 with their contrib ops) and the common standard ops around them.
Anything else, or a shape that depends on values it cannot know (a Reshape of a computed tensor too large
to carry, ``NonZero`` of the input), raises `Uninferable` naming the node: a graph is run only if every
shape in it is known in advance. Torch-free, onnx-free.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from vitexport.security import onnxwire

VALUE_LIMIT = 4096  # tensors of at most this many elements carry their values (shape arithmetic)
MAX_RANK = 32
# ONNX TensorProto element types: bytes per element (4-bit types rounded up) and numpy types for values
ITEMSIZE = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 8: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 14: 8, 15: 16,
            16: 2, 17: 1, 18: 1, 19: 1, 20: 1, 21: 1, 22: 1, 23: 1}
NUMPY = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64,
         9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64}
FLOAT, UINT8, INT32, INT64, BOOL = 1, 2, 6, 7, 9


class Uninferable(Exception):
    """A node whose output shapes cannot be known before running it."""

    def __init__(self, node: onnxwire.Node, reason: str) -> None:
        super().__init__(f"{describe(node)} {reason}")
        self.node = node
        self.reason = reason


def describe(node: onnxwire.Node) -> str:
    """``'name' (Op)``, or the first output's name for a node without a name."""
    op = f"{node.domain}.{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
    name = node.name or (node.output[0] if node.output else "")
    return f"node {name[:80]!r} ({op[:80]})"


@dataclass
class Info:
    """What is known of a tensor: its shape, its ONNX element type and, when small, its values."""

    shape: tuple[int, ...]
    dtype: int
    value: np.ndarray | None = None

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * ITEMSIZE.get(self.dtype, 8)


Handler = Callable[["Ctx", onnxwire.Node, list[Info | None]], list[Info]]
_OPS: dict[str, Handler] = {}


def _op(*names: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for name in names:
            _OPS[name] = fn
        return fn

    return register


@dataclass
class Ctx:
    """The opset of the default domain (op semantics changed over versions: axes as inputs, ...)."""

    opset: int


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
def info_of(shape: Any, dtype: int, value: Any = None, node: onnxwire.Node | None = None) -> Info:
    """An `Info`, its shape checked (non-negative ints, rank at most `MAX_RANK`); ``value`` kept when small."""
    dims = tuple(int(d) for d in shape)
    if len(dims) > MAX_RANK or any(d < 0 for d in dims):
        raise Uninferable(node or onnxwire.Node(), f"would make a tensor of shape {list(dims)[:8]}")
    if value is not None and math.prod(dims) <= VALUE_LIMIT and dtype in NUMPY:
        value = np.asarray(value).astype(NUMPY[dtype], copy=False)
        if value.shape != dims:
            value = value.reshape(dims) if value.size == math.prod(dims) else None
    else:
        value = None
    return Info(dims, dtype, value)


def tensor_info(t: onnxwire.Tensor) -> Info:
    """An initializer or Constant tensor: its dims and type, its values when `onnxwire` kept them."""
    value = None
    np_type = NUMPY.get(t.data_type)
    size = math.prod(max(d, 0) for d in t.dims)
    if np_type is not None and size <= VALUE_LIMIT:
        try:
            if t.raw is not None:
                value = np.frombuffer(t.raw, dtype=np.dtype(np_type).newbyteorder("<"))
            elif t.values is not None:
                bits = t.data_type in (10,)  # float16 travels as its bits in int32_data
                value = np.asarray(t.values, np.uint16).view(np.float16) if bits else np.asarray(t.values)
            if value is not None and value.size != size:
                value = None
        except (ValueError, TypeError, OverflowError):
            value = None
    return info_of(t.dims, t.data_type, None if value is None else value.reshape([max(d, 0) for d in t.dims]))


def value(info: Info | None, node: onnxwire.Node, what: str) -> np.ndarray:
    """The values of an input the output's shape depends on; `Uninferable` when they are not known."""
    if info is None or info.value is None:
        raise Uninferable(node, f"has an output shape that depends on the values of its {what}, which are not "
                                "known before running the graph")
    return info.value


def ints(info: Info | None, node: onnxwire.Node, what: str) -> list[int]:
    found = value(info, node, what)
    if found.dtype.kind not in "iub":
        raise Uninferable(node, f"has a {what} that is not an integer tensor")
    return [int(v) for v in found.reshape(-1)]


def attr(node: onnxwire.Node, name: str, default: Any = None) -> Any:
    return node.attributes.get(name, default)


def need(ins: list[Info | None], node: onnxwire.Node, count: int) -> list[Info]:
    """The first ``count`` inputs, all present."""
    if len(ins) < count or any(i is None for i in ins[:count]):
        raise Uninferable(node, f"needs {count} inputs, has {len([i for i in ins if i is not None])}")
    return ins[:count]  # type: ignore[return-value]


def axis_of(axis: int, rank: int, node: onnxwire.Node) -> int:
    if not -rank <= axis < max(rank, 1):
        raise Uninferable(node, f"has axis {axis}, out of range for rank {rank}")
    return axis % max(rank, 1)


def broadcast(shapes: list[tuple[int, ...]], node: onnxwire.Node) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise Uninferable(node, f"has inputs {[list(s) for s in shapes]} that do not broadcast") from None


def computed(node: onnxwire.Node, fn: Callable[..., Any], *values: np.ndarray | None) -> Any:
    """``fn(*values)`` when every value is known, else None (numpy warnings and errors mean: not known)."""
    if any(v is None for v in values):
        return None
    try:
        with np.errstate(all="ignore"):
            return fn(*values)
    except (ValueError, TypeError, ZeroDivisionError, IndexError, OverflowError):
        return None


# ---------------------------------------------------------------------------
# elementwise
# ---------------------------------------------------------------------------
_UNARY_VALUES: dict[str, Callable[[np.ndarray], Any]] = {
    "Abs": np.abs, "Neg": np.negative, "Sqrt": np.sqrt, "Exp": np.exp, "Log": np.log, "Floor": np.floor,
    "Ceil": np.ceil, "Round": np.round, "Sign": np.sign, "Not": np.logical_not, "Reciprocal": np.reciprocal,
    "Relu": lambda x: np.maximum(x, 0), "Identity": lambda x: x, "Sin": np.sin, "Cos": np.cos,
}
_SAME_SHAPE = (
    "Abs", "Neg", "Sqrt", "Exp", "Log", "Erf", "Tanh", "Sigmoid", "Relu", "Reciprocal", "Floor", "Ceil", "Round",
    "Sign", "Sin", "Cos", "Not", "Softplus", "Softsign", "HardSigmoid", "HardSwish", "LeakyRelu", "Elu", "Selu",
    "Celu", "Gelu", "Mish", "Identity", "Softmax", "LogSoftmax", "Hardmax", "CumSum", "Clip", "Shrink",
    "ThresholdedRelu", "Trilu", "LpNormalization", "InstanceNormalization", "BatchNormalization",
    "GroupNormalization", "MeanVarianceNormalization", "FastGelu", "QuickGelu", "BiasAdd", "Dropout",
    "ScatterND", "ScatterElements", "Scatter",
)


@_op(*_SAME_SHAPE)
def _same_shape(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    (x,) = need(ins, node, 1)
    fn = _UNARY_VALUES.get(node.op_type)
    out = info_of(x.shape, x.dtype, computed(node, fn, x.value) if fn else None, node)
    if node.op_type == "Dropout" and len(node.output) > 1:
        return [out, info_of(x.shape, BOOL, None, node)]
    return [out]


@_op("IsNaN", "IsInf")
def _is_special(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    (x,) = need(ins, node, 1)
    return [info_of(x.shape, BOOL, None, node)]


@_op("Cast")
def _cast(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    (x,) = need(ins, node, 1)
    return [info_of(x.shape, int(attr(node, "to", FLOAT)), x.value, node)]


@_op("CastLike")
def _cast_like(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    x, like = need(ins, node, 2)
    return [info_of(x.shape, like.dtype, x.value, node)]


def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ONNX integer Div: truncation toward zero (C++), not numpy's floor."""
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        q = np.abs(a) // np.abs(b)
        return np.where((a < 0) != (b < 0), -q, q)
    return np.divide(a, b)


_BINARY_VALUES: dict[str, Callable[..., Any]] = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": _int_div, "Pow": np.power,
    "Equal": np.equal, "Less": np.less, "Greater": np.greater, "LessOrEqual": np.less_equal,
    "GreaterOrEqual": np.greater_equal, "And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor,
    "Max": np.maximum, "Min": np.minimum, "Sum": np.add,
}
_COMPARISONS = ("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor")


@_op(*_BINARY_VALUES, "Mod", "Mean", "PRelu", "BitShift", "BiasGelu", "BitwiseAnd", "BitwiseOr", "BitwiseXor")
def _broadcasting(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    present = [i for i in ins if i is not None]
    if not present:
        raise Uninferable(node, "has no inputs")
    shape = broadcast([i.shape for i in present], node)
    dtype = BOOL if node.op_type in _COMPARISONS else present[0].dtype
    result = None
    if node.op_type == "Mod":
        fn = np.fmod if attr(node, "fmod", 0) else np.mod
        result = computed(node, fn, *(i.value for i in present[:2])) if len(present) == 2 else None
    elif node.op_type in _BINARY_VALUES and math.prod(shape) <= VALUE_LIMIT:
        fn = _BINARY_VALUES[node.op_type]
        values = [i.value for i in present]

        def fold(*vs: np.ndarray) -> Any:
            out = vs[0]
            for v in vs[1:]:
                out = fn(out, v)
            return out

        result = computed(node, fold, *values)
    return [info_of(shape, dtype, result, node)]


@_op("Where")
def _where(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    c, x, y = need(ins, node, 3)
    shape = broadcast([c.shape, x.shape, y.shape], node)
    return [info_of(shape, x.dtype, computed(node, np.where, c.value, x.value, y.value), node)]


# ---------------------------------------------------------------------------
# matrix products and normalization
# ---------------------------------------------------------------------------
def _matmul_shape(a: tuple[int, ...], b: tuple[int, ...], node: onnxwire.Node) -> tuple[int, ...]:
    if not a or not b:
        raise Uninferable(node, "multiplies a scalar")
    a2 = (1, *a) if len(a) == 1 else a
    b2 = (*b, 1) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        raise Uninferable(node, f"multiplies {list(a)} by {list(b)}")
    out = (*broadcast([a2[:-2], b2[:-2]], node), a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return out


@_op("MatMul", "MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "FusedMatMul")
def _matmul(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    a, b = need(ins, node, 2)
    sa, sb = a.shape, b.shape
    if node.op_type == "FusedMatMul":
        if attr(node, "transBatchA", 0) or attr(node, "transBatchB", 0):
            raise Uninferable(node, "transposes batch axes (not read)")
        if attr(node, "transA", 0) and len(sa) >= 2:
            sa = (*sa[:-2], sa[-1], sa[-2])
        if attr(node, "transB", 0) and len(sb) >= 2:
            sb = (*sb[:-2], sb[-1], sb[-2])
    dtype = {"MatMulInteger": INT32, "DynamicQuantizeMatMul": FLOAT, "MatMulIntegerToFloat": FLOAT}.get(
        node.op_type, a.dtype)
    result = computed(node, np.matmul, a.value, b.value) if node.op_type == "MatMul" else None
    return [info_of(_matmul_shape(sa, sb, node), dtype, result, node)]


@_op("Gemm")
def _gemm(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    a, b = need(ins, node, 2)
    if len(a.shape) != 2 or len(b.shape) != 2:
        raise Uninferable(node, "multiplies tensors that are not matrices")
    m, k = a.shape[::-1] if attr(node, "transA", 0) else a.shape
    k2, n = b.shape[::-1] if attr(node, "transB", 0) else b.shape
    if k != k2:
        raise Uninferable(node, f"multiplies {list(a.shape)} by {list(b.shape)}")
    return [info_of((m, n), a.dtype, None, node)]


@_op("LayerNormalization", "SimplifiedLayerNormalization", "RMSNormalization")
def _layer_norm(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    (x,) = need(ins, node, 1)
    axis = axis_of(int(attr(node, "axis", -1)), len(x.shape), node)
    stats = info_of((*x.shape[:axis], *[1] * (len(x.shape) - axis)), FLOAT, None, node)
    return [info_of(x.shape, x.dtype, None, node), stats, stats][: len(node.output)]


@_op("SkipLayerNormalization", "SkipSimplifiedLayerNormalization")
def _skip_layer_norm(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    x, skip = need(ins, node, 2)
    shape = broadcast([x.shape, skip.shape], node)
    out = info_of(shape, x.dtype, None, node)
    stats = info_of((*shape[:-1], 1), FLOAT, None, node)
    return [out, stats, stats, out][: len(node.output)] if node.op_type == "SkipLayerNormalization" else \
        [out, stats, out][: len(node.output)]


@_op("DynamicQuantizeLinear")
def _dynamic_quantize(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    (x,) = need(ins, node, 1)
    return [info_of(x.shape, UINT8, None, node), info_of((), FLOAT, None, node), info_of((), UINT8, None, node)]


@_op("QuantizeLinear", "DequantizeLinear")
def _quantize(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    (x,) = need(ins, node, 1)
    if node.op_type == "DequantizeLinear":
        dtype = ins[1].dtype if len(ins) > 1 and ins[1] is not None else FLOAT
    else:
        dtype = ins[2].dtype if len(ins) > 2 and ins[2] is not None else int(attr(node, "output_dtype", 0) or UINT8)
    return [info_of(x.shape, dtype, None, node)]


# ---------------------------------------------------------------------------
# convolution and pooling
# ---------------------------------------------------------------------------
def _window(node: onnxwire.Node, spatial: tuple[int, ...], kernel: list[int], ceil_mode: bool = False) -> list[int]:
    """Output sizes of a sliding window (Conv, pooling) over ``spatial`` dims."""
    n = len(spatial)
    strides = list(attr(node, "strides", None) or [1] * n)
    dilations = list(attr(node, "dilations", None) or [1] * n)
    pads = list(attr(node, "pads", None) or [0] * (2 * n))
    auto_pad = attr(node, "auto_pad", "NOTSET") or "NOTSET"
    if len(kernel) != n or len(strides) != n or len(dilations) != n or len(pads) != 2 * n:
        raise Uninferable(node, "has a kernel, strides, dilations or pads that do not match the input's rank")
    if min([*strides, *dilations, *kernel, 1]) < 1 or min([*pads, 0]) < 0:
        raise Uninferable(node, "has non-positive strides, dilations or kernel sizes, or negative pads")
    out = []
    for i, size in enumerate(spatial):
        extent = dilations[i] * (kernel[i] - 1) + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out.append(-(-size // strides[i]))
        elif auto_pad == "VALID":
            out.append(max(-(-(size - extent + 1) // strides[i]), 0))
        else:
            span = size + pads[i] + pads[i + n] - extent
            steps = -(-span // strides[i]) if ceil_mode else span // strides[i]
            out.append(max(steps + 1, 0) if span >= 0 else 0)
    return out


@_op("Conv", "ConvInteger")
def _conv(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    x, w = need(ins, node, 2)
    if len(x.shape) < 3 or len(w.shape) != len(x.shape):
        raise Uninferable(node, f"convolves {list(x.shape)} with {list(w.shape)}")
    kernel = list(attr(node, "kernel_shape", None) or w.shape[2:])
    dtype = INT32 if node.op_type == "ConvInteger" else x.dtype
    return [info_of((x.shape[0], w.shape[0], *_window(node, x.shape[2:], kernel)), dtype, None, node)]


@_op("MaxPool", "AveragePool", "LpPool")
def _pool(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    (x,) = need(ins, node, 1)
    kernel = list(attr(node, "kernel_shape", None) or [])
    if len(x.shape) < 3 or len(kernel) != len(x.shape) - 2:
        raise Uninferable(node, "has a kernel that does not match the input's rank")
    shape = (*x.shape[:2], *_window(node, x.shape[2:], kernel, bool(attr(node, "ceil_mode", 0))))
    return [info_of(shape, x.dtype, None, node), info_of(shape, INT64, None, node)][: len(node.output)]


@_op("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
def _global_pool(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    (x,) = need(ins, node, 1)
    return [info_of((*x.shape[:2], *[1] * (len(x.shape) - 2)), x.dtype, None, node)]


# ---------------------------------------------------------------------------
# shapes and constants
# ---------------------------------------------------------------------------
@_op("Constant")
def _constant(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    attrs = node.attributes
    if isinstance(attrs.get("value"), onnxwire.Tensor):
        return [tensor_info(attrs["value"])]
    for key, dtype, scalar in (("value_float", FLOAT, True), ("value_floats", FLOAT, False),
                               ("value_int", INT64, True), ("value_ints", INT64, False)):
        if key in attrs:
            found = np.asarray(attrs[key])
            return [info_of(() if scalar else found.shape, dtype, found, node)]
    raise Uninferable(node, "holds a constant vitexport does not read (a string or sparse value)")


@_op("Shape")
def _shape(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    (x,) = need(ins, node, 1)
    dims = x.shape[int(attr(node, "start", 0)) : attr(node, "end", None)]
    return [info_of((len(dims),), INT64, np.array(dims, np.int64), node)]


@_op("Size")
def _size(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    (x,) = need(ins, node, 1)
    return [info_of((), INT64, np.array(x.size, np.int64), node)]


@_op("ConstantOfShape")
def _constant_of_shape(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    shape = ints(need(ins, node, 1)[0], node, "shape input")
    fill = attr(node, "value")
    dtype = fill.data_type if isinstance(fill, onnxwire.Tensor) else FLOAT
    scalar = tensor_info(fill).value if isinstance(fill, onnxwire.Tensor) else np.zeros((), np.float32)
    result = None
    if scalar is not None and math.prod(max(d, 0) for d in shape) <= VALUE_LIMIT:
        result = computed(node, lambda s: np.full(shape, s.reshape(-1)[0] if s.size else 0), scalar)
    return [info_of(shape, dtype, result, node)]


@_op("Range")
def _range(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    start, limit, delta = (value(i, node, "start, limit and delta") for i in need(ins, node, 3))
    s, lim, d = (v.reshape(-1)[0].item() for v in (start, limit, delta))
    if d == 0:
        raise Uninferable(node, "has a delta of 0")
    count = max(int(-((s - lim) // d)) if all(isinstance(v, int) for v in (s, lim, d)) else
                math.ceil((lim - s) / d), 0)
    result = np.arange(count, dtype=start.dtype) * delta.reshape(-1)[0] + start.reshape(-1)[0] \
        if count <= VALUE_LIMIT else None
    return [info_of((count,), need(ins, node, 1)[0].dtype, result, node)]


@_op("Reshape")
def _reshape(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    x, shape_info = need(ins, node, 2)
    shape = ints(shape_info, node, "shape input")
    allowzero = attr(node, "allowzero", 0)
    dims = [x.shape[i] if d == 0 and not allowzero and i < len(x.shape) else d for i, d in enumerate(shape)]
    if dims.count(-1) > 1 or any(d < -1 for d in dims):
        raise Uninferable(node, f"reshapes to {shape}")
    if -1 in dims:
        known = math.prod(d for d in dims if d != -1)
        if known == 0 or x.size % known:
            raise Uninferable(node, f"cannot reshape {list(x.shape)} to {shape}")
        dims[dims.index(-1)] = x.size // known
    if math.prod(dims) != x.size:
        raise Uninferable(node, f"cannot reshape {list(x.shape)} to {shape}")
    return [info_of(dims, x.dtype, x.value, node)]


@_op("Flatten")
def _flatten(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    (x,) = need(ins, node, 1)
    axis = int(attr(node, "axis", 1))
    axis = axis + len(x.shape) if axis < 0 else axis
    if not 0 <= axis <= len(x.shape):
        raise Uninferable(node, f"has axis {axis}, out of range")
    return [info_of((math.prod(x.shape[:axis]), math.prod(x.shape[axis:])), x.dtype, x.value, node)]


def _axes(node: onnxwire.Node, ins: list[Info | None], index: int) -> list[int] | None:
    """Axes from the input at ``index`` (newer opsets) or the ``axes`` attribute; None when neither is given."""
    if len(ins) > index and ins[index] is not None:
        return ints(ins[index], node, "axes input")
    found = attr(node, "axes")
    return None if found is None else [int(a) for a in found]


@_op("Squeeze")
def _squeeze(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    (x,) = need(ins, node, 1)
    axes = _axes(node, ins, 1)
    drop = {i for i, d in enumerate(x.shape) if d == 1} if axes is None else \
        {axis_of(a, len(x.shape), node) for a in axes}
    if any(x.shape[a] != 1 for a in drop):
        raise Uninferable(node, f"squeezes an axis of {list(x.shape)} that is not 1")
    return [info_of([d for i, d in enumerate(x.shape) if i not in drop], x.dtype, x.value, node)]


@_op("Unsqueeze")
def _unsqueeze(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    (x,) = need(ins, node, 1)
    axes = _axes(node, ins, 1) or []
    rank = len(x.shape) + len(axes)
    where = sorted(axis_of(a, rank, node) for a in axes)
    if len(set(where)) != len(where):
        raise Uninferable(node, "repeats an axis")
    dims, rest = [], iter(x.shape)
    for i in range(rank):
        dims.append(1 if i in where else next(rest))
    return [info_of(dims, x.dtype, x.value, node)]


@_op("Transpose")
def _transpose(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    (x,) = need(ins, node, 1)
    perm = [int(p) for p in (attr(node, "perm") or range(len(x.shape) - 1, -1, -1))]
    if sorted(perm) != list(range(len(x.shape))):
        raise Uninferable(node, f"permutes {list(x.shape)} by {perm}")
    return [info_of([x.shape[p] for p in perm], x.dtype, computed(node, lambda v: v.transpose(perm), x.value), node)]


@_op("Expand")
def _expand(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    x, shape_info = need(ins, node, 2)
    target = ints(shape_info, node, "shape input")
    shape = broadcast([x.shape, tuple(target)], node)
    return [info_of(shape, x.dtype, computed(node, lambda v: np.broadcast_to(v, shape), x.value), node)]


@_op("Tile")
def _tile(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    x, reps_info = need(ins, node, 2)
    reps = ints(reps_info, node, "repeats input")
    if len(reps) != len(x.shape) or min([*reps, 0]) < 0:
        raise Uninferable(node, f"tiles {list(x.shape)} by {reps}")
    shape = [d * r for d, r in zip(x.shape, reps, strict=True)]
    return [info_of(shape, x.dtype, computed(node, lambda v: np.tile(v, reps), x.value), node)]


@_op("Concat")
def _concat(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    parts = [i for i in ins if i is not None]
    if not parts:
        raise Uninferable(node, "has no inputs")
    rank = len(parts[0].shape)
    axis = axis_of(int(attr(node, "axis", 0)), rank, node)
    if any(len(p.shape) != rank or p.shape[:axis] + p.shape[axis + 1:] != parts[0].shape[:axis] +
           parts[0].shape[axis + 1:] for p in parts):
        raise Uninferable(node, f"concatenates {[list(p.shape) for p in parts]} on axis {axis}")
    shape = (*parts[0].shape[:axis], sum(p.shape[axis] for p in parts), *parts[0].shape[axis + 1:])
    result = computed(node, lambda *vs: np.concatenate(vs, axis=axis), *(p.value for p in parts))
    return [info_of(shape, parts[0].dtype, result, node)]


@_op("Split")
def _split(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    (x,) = need(ins, node, 1)
    axis = axis_of(int(attr(node, "axis", 0)), len(x.shape), node)
    size, parts = x.shape[axis], len(node.output)
    sizes = _axes(node, ins, 1) if len(ins) > 1 and ins[1] is not None else attr(node, "split")
    if sizes is None:
        if attr(node, "num_outputs") is not None:  # opset 18: equal parts, the last one smaller
            chunk = -(-size // parts)
            sizes = [min(chunk, max(size - i * chunk, 0)) for i in range(parts)]
        elif size % parts == 0:
            sizes = [size // parts] * parts
        else:
            raise Uninferable(node, f"cannot split {size} into {parts} equal parts")
    sizes = [int(s) for s in sizes]
    if len(sizes) != parts or sum(sizes) != size or min([*sizes, 0]) < 0:
        raise Uninferable(node, f"splits {size} into {sizes}")
    return [info_of((*x.shape[:axis], s, *x.shape[axis + 1:]), x.dtype, None, node) for s in sizes]


@_op("Slice")
def _slice(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    (x,) = need(ins, node, 1)
    if ctx.opset < 10:
        starts, ends = list(attr(node, "starts", [])), list(attr(node, "ends", []))
        axes, steps = list(attr(node, "axes", range(len(starts)))), [1] * len(starts)
    else:
        starts, ends = ints(ins[1] if len(ins) > 1 else None, node, "starts"), ints(
            ins[2] if len(ins) > 2 else None, node, "ends")
        axes = _axes(node, ins, 3) or list(range(len(starts)))
        steps = ints(ins[4], node, "steps") if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps) or 0 in steps:
        raise Uninferable(node, "has starts, ends, axes and steps of different lengths, or a step of 0")
    index = [slice(None)] * len(x.shape)
    for a, s, e, st in zip(axes, starts, ends, steps, strict=True):
        index[axis_of(a, len(x.shape), node)] = slice(s, e, st)
    shape = [len(range(d)[i]) for d, i in zip(x.shape, index, strict=True)]
    return [info_of(shape, x.dtype, computed(node, lambda v: v[tuple(index)], x.value), node)]


@_op("Gather")
def _gather(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    data, indices = need(ins, node, 2)
    axis = axis_of(int(attr(node, "axis", 0)), len(data.shape), node)
    shape = (*data.shape[:axis], *indices.shape, *data.shape[axis + 1:])
    result = None
    if indices.value is not None and data.value is not None:
        if ((indices.value < -data.shape[axis]) | (indices.value >= data.shape[axis])).any():
            raise Uninferable(node, "gathers an index out of range")
        result = computed(node, lambda d, i: np.take(d, i, axis=axis), data.value, indices.value)
    return [info_of(shape, data.dtype, result, node)]


@_op("GatherElements")
def _gather_elements(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    data, indices = need(ins, node, 2)
    return [info_of(indices.shape, data.dtype, None, node)]


@_op("GatherND")
def _gather_nd(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    data, indices = need(ins, node, 2)
    batch = int(attr(node, "batch_dims", 0))
    if not indices.shape or batch + indices.shape[-1] > len(data.shape):
        raise Uninferable(node, "has indices deeper than its data")
    return [info_of((*indices.shape[:-1], *data.shape[batch + indices.shape[-1]:]), data.dtype, None, node)]


@_op("Pad")
def _pad(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    (x,) = need(ins, node, 1)
    rank = len(x.shape)
    pads = ints(ins[1], node, "pads input") if ctx.opset >= 11 and len(ins) > 1 else list(attr(node, "pads", []))
    axes = _axes(node, ins, 3) if ctx.opset >= 18 else None
    axes = [axis_of(a, rank, node) for a in (axes if axes is not None else range(rank))]
    if len(pads) != 2 * len(axes):
        raise Uninferable(node, f"has {len(pads)} pads for {len(axes)} axes")
    shape = list(x.shape)
    for i, a in enumerate(axes):
        shape[a] += pads[i] + pads[i + len(axes)]
    return [info_of(shape, x.dtype, None, node)]


_REDUCE_VALUES: dict[str, Callable[..., Any]] = {"ReduceSum": np.sum, "ReduceProd": np.prod, "ReduceMax": np.max,
                                                 "ReduceMin": np.min}


@_op("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
     "ReduceLogSumExp", "ReduceSumSquare")
def _reduce(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    (x,) = need(ins, node, 1)
    axes = _axes(node, ins, 1)
    keep = bool(attr(node, "keepdims", 1))
    if not axes:
        if attr(node, "noop_with_empty_axes", 0):
            return [info_of(x.shape, x.dtype, x.value, node)]
        axes = list(range(len(x.shape)))
    where = tuple(sorted({axis_of(a, len(x.shape), node) for a in axes}))
    shape = [1 if i in where else d for i, d in enumerate(x.shape) if keep or i not in where]
    fn = _REDUCE_VALUES.get(node.op_type)
    result = computed(node, lambda v: fn(v, axis=where, keepdims=keep), x.value) if fn else None
    return [info_of(shape, x.dtype, result, node)]


@_op("ArgMax", "ArgMin")
def _arg(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    (x,) = need(ins, node, 1)
    axis = axis_of(int(attr(node, "axis", 0)), len(x.shape), node)
    keep = bool(attr(node, "keepdims", 1))
    shape = [1 if i == axis else d for i, d in enumerate(x.shape) if keep or i != axis]
    return [info_of(shape, INT64, None, node)]


@_op("TopK")
def _topk(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    x, k_info = need(ins, node, 2)
    (k,) = ints(k_info, node, "k input")[:1] or [-1]
    axis = axis_of(int(attr(node, "axis", -1)), len(x.shape), node)
    if not 0 <= k <= x.shape[axis]:
        raise Uninferable(node, f"takes the top {k} of {x.shape[axis]}")
    shape = (*x.shape[:axis], k, *x.shape[axis + 1:])
    return [info_of(shape, x.dtype, None, node), info_of(shape, INT64, None, node)]


@_op("OneHot")
def _one_hot(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    indices, depth_info, values = need(ins, node, 3)
    depth = int(value(depth_info, node, "depth").reshape(-1)[0])
    rank = len(indices.shape) + 1
    axis = axis_of(int(attr(node, "axis", -1)), rank, node)
    shape = (*indices.shape[:axis], depth, *indices.shape[axis:])
    return [info_of(shape, values.dtype, None, node)]


@_op("NonZero")
def _non_zero(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    found = np.array(np.nonzero(value(need(ins, node, 1)[0], node, "input")), np.int64)
    return [info_of(found.shape, INT64, found, node)]


@_op("Resize")
def _resize(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    (x,) = need(ins, node, 1)
    rank = len(x.shape)
    axes = [axis_of(int(a), rank, node) for a in (attr(node, "axes") or range(rank))]
    shape = list(x.shape)
    if len(ins) > 3 and ins[3] is not None and ins[3].size:
        sizes = ints(ins[3], node, "sizes input")
        if len(sizes) != len(axes) or (attr(node, "keep_aspect_ratio_policy", "stretch") or "stretch") != "stretch":
            raise Uninferable(node, "resizes with sizes vitexport does not read")
        for a, s in zip(axes, sizes, strict=True):
            shape[a] = s
    elif len(ins) > 2 and ins[2] is not None and ins[2].size:
        scales = [float(s) for s in value(ins[2], node, "scales input").reshape(-1)]
        if len(scales) != len(axes) or not all(math.isfinite(s) and s > 0 for s in scales):
            raise Uninferable(node, "resizes with scales vitexport does not read")
        for a, s in zip(axes, scales, strict=True):
            shape[a] = math.floor(x.shape[a] * s)
    else:
        raise Uninferable(node, "has neither sizes nor scales")
    return [info_of(shape, x.dtype, None, node)]


@_op("Einsum")
def _einsum(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    parts = [i for i in ins if i is not None]
    equation = str(attr(node, "equation", "")).replace(" ", "")
    if "->" not in equation or "." in equation:
        raise Uninferable(node, f"has the equation {equation[:40]!r} (explicit outputs without ellipses only)")
    inputs, output = equation.split("->")
    terms = inputs.split(",")
    dims: dict[str, int] = {}
    if len(terms) != len(parts):
        raise Uninferable(node, "has an equation for another number of inputs")
    for term, part in zip(terms, parts, strict=True):
        if len(term) != len(part.shape):
            raise Uninferable(node, f"has labels {term!r} that do not fit {list(part.shape)}")
        for label, d in zip(term, part.shape, strict=True):
            if dims.setdefault(label, d) != d and 1 not in (d, dims[label]):
                raise Uninferable(node, f"has label {label!r} both {dims[label]} and {d}")
            dims[label] = max(dims[label], d)
    if any(label not in dims for label in output):
        raise Uninferable(node, f"has an output label that is no input label: {output!r}")
    return [info_of([dims[label] for label in output], parts[0].dtype, None, node)]


# ---------------------------------------------------------------------------
# attention (their scores are workspace inside the kernel, not graph tensors: see `workspace`)
# ---------------------------------------------------------------------------
def _heads(node: onnxwire.Node, key: str, width: int) -> int:
    heads = int(attr(node, key, 0) or 0)
    if heads < 1 or width % heads:
        raise Uninferable(node, f"has {key}={heads} for a width of {width}")
    return heads


@_op("Attention")
def _attention(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    """ONNX Attention (opset 23) with 4-D (B, heads, S, d) or 3-D (B, S, heads * d) inputs, and ONNX Runtime's
    contrib Attention (input (B, S, D), packed QKV weights)."""
    if node.domain == "com.microsoft":
        x, w = need(ins, node, 2)
        sizes = attr(node, "qkv_hidden_sizes") or [w.shape[-1] // 3] * 3
        return [info_of((*x.shape[:2], int(sizes[2])), x.dtype, None, node)][: len(node.output)]
    q, _k, v = need(ins, node, 3)
    if len(q.shape) == 4:
        y = (q.shape[0], q.shape[1], q.shape[2], v.shape[-1])
    elif len(q.shape) == 3 and len(v.shape) == 3:
        kv_heads = _heads(node, "kv_num_heads", v.shape[2])
        y = (q.shape[0], q.shape[1], _heads(node, "q_num_heads", q.shape[2]) * (v.shape[2] // kv_heads))
    else:
        raise Uninferable(node, f"has a query of rank {len(q.shape)}")
    if len(node.output) > 1 and any(node.output[1:]):
        raise Uninferable(node, "returns its present keys and values or scores, which vitexport's exports do not")
    return [info_of(y, q.dtype, None, node)]


@_op("MultiHeadAttention")
def _multi_head_attention(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None]) -> list[Info]:
    """ONNX Runtime's contrib MultiHeadAttention with separate (B, S, D) query, key and value."""
    q, k, v = need(ins, node, 3)
    if len(q.shape) != 3 or len(k.shape) != 3 or len(v.shape) != 3:
        raise Uninferable(node, "has packed or 4-D query, key or value (vitexport's exports pass them 3-D)")
    if len(node.output) > 1 and any(node.output[1:]):
        raise Uninferable(node, "returns its present keys and values, which vitexport's exports do not")
    return [info_of((q.shape[0], q.shape[1], v.shape[2]), q.dtype, None, node)]


def workspace(node: onnxwire.Node, ins: list[Info | None]) -> int:
    """Bytes a node needs inside its kernel beyond its outputs: the scores of the attention ops that hold them
    all (ONNX Attention and the contrib Attention on ONNX Runtime's CPU: batch x heads x queries x keys, float32;
    MultiHeadAttention's kernel works in blocks)."""
    if node.op_type != "Attention" or not ins or ins[0] is None:
        return 0
    q = ins[0]
    if node.domain == "com.microsoft":
        heads = max(int(attr(node, "num_heads", 1) or 1), 1)
        return 4 * q.shape[0] * heads * q.shape[1] * q.shape[1] if len(q.shape) == 3 else 0
    k = ins[1]
    if k is None:
        return 0
    if len(q.shape) == 4:
        return 4 * q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2]
    heads = max(int(attr(node, "q_num_heads", 1) or 1), 1)
    return 4 * q.shape[0] * heads * q.shape[1] * k.shape[1] if len(k.shape) == 3 else 0


# ---------------------------------------------------------------------------
# walking a graph
# ---------------------------------------------------------------------------
_DOMAINS = ("", "ai.onnx", "com.microsoft")


@dataclass
class Footprint:
    """One run at one input shape: the most bytes of tensors alive at once (the input and every intermediate,
    each freed after its last reader; weights not counted) and the node where that happens, the largest single
    tensor and the node that makes it."""

    peak_bytes: int = 0
    peak_node: str = ""
    largest_bytes: int = 0
    largest_node: str = ""

    def merge_largest(self, other: Footprint) -> None:
        if other.largest_bytes > self.largest_bytes:
            self.largest_bytes, self.largest_node = other.largest_bytes, other.largest_node


def _subgraphs(node: onnxwire.Node) -> list[onnxwire.Graph]:
    found: list[onnxwire.Graph] = []
    for v in node.attributes.values():
        for item in v if isinstance(v, list) else [v]:
            if item == "<graph>":
                raise Uninferable(node, "holds subgraphs nested deeper than vitexport reads")
            if isinstance(item, onnxwire.Graph):
                found.append(item)
    return found


def _free_names(graph: onnxwire.Graph) -> set[str]:
    """Names a subgraph reads from the scopes around it."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    free: set[str] = set()
    for node in graph.node:
        free.update(n for n in _references(node) if n not in defined)
        defined.update(node.output)
    return free | {o.name for o in graph.output if o.name not in defined}


def _references(node: onnxwire.Node) -> list[str]:
    """What a node reads: its inputs and what its subgraphs read from outside them."""
    names = [n for n in node.input if n]
    for sub in _subgraphs(node):
        names += sorted(_free_names(sub))
    return names


def _loop(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None], env: dict[str, Info]) -> tuple[list[Info],
                                                                                               Footprint]:
    (body,) = _subgraphs(node) or [None]
    if body is None or len(ins) < 2:
        raise Uninferable(node, "has no body or no trip count")
    trips = ints(ins[0], node, "trip count")[0]
    carried = ins[2:]
    scope = dict(env)
    first = [info_of((), INT64, None, node), info_of((), BOOL, None, node)]
    for given, info in zip(body.input, [*first, *carried], strict=False):
        if info is None:
            raise Uninferable(node, "has a loop-carried value without an initial value")
        scope[given.name] = Info(info.shape, info.dtype)
    inner = walk(body, scope, ctx)
    outs = [scope[o.name] for o in body.output[1:]]
    for before, after in zip(carried, outs, strict=False):
        if before is not None and before.shape != after.shape:
            raise Uninferable(node, f"changes a loop-carried shape from {list(before.shape)} to {list(after.shape)}")
    n = len(carried)
    return [Info(o.shape, o.dtype) for o in outs[:n]] + [info_of((max(trips, 0), *s.shape), s.dtype, None, node)
                                                         for s in outs[n:]], inner


def _if(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None], env: dict[str, Info]) -> tuple[list[Info], Footprint]:
    branches = {k: v for k, v in node.attributes.items() if isinstance(v, onnxwire.Graph)}
    cond = ins[0].value if ins and ins[0] is not None else None
    if cond is not None:
        branches = {k: v for k, v in branches.items() if k == ("then_branch" if bool(cond.reshape(-1)[0])
                                                                else "else_branch")}
    results = []
    for branch in branches.values():
        scope = dict(env)
        results.append(([scope[o.name] for o in branch.output], walk(branch, scope, ctx)))
    if not results or any([o.shape for o in r[0]] != [o.shape for o in results[0][0]] for r in results):
        raise Uninferable(node, "has branches whose outputs differ in shape")
    inner = max((r[1] for r in results), key=lambda f: f.peak_bytes)
    for r in results:
        inner.merge_largest(r[1])
    return [Info(o.shape, o.dtype) for o in results[0][0]], inner


def _run_node(ctx: Ctx, node: onnxwire.Node, ins: list[Info | None], env: dict[str, Info]) -> tuple[
        list[Info], Footprint]:
    """A node's outputs and what runs inside it (a subgraph's footprint, or a kernel's workspace)."""
    if node.domain in ("", "ai.onnx") and node.op_type in ("Loop", "If"):
        return (_loop if node.op_type == "Loop" else _if)(ctx, node, ins, env)
    handler = _OPS.get(node.op_type) if node.domain in _DOMAINS else None
    if handler is None or _subgraphs(node):
        raise Uninferable(node, "is an op whose output shapes vitexport does not infer")
    return handler(ctx, node, ins), Footprint(peak_bytes=workspace(node, ins))


def in_order(nodes: list[onnxwire.Node]) -> list[onnxwire.Node]:
    """``nodes`` in an order where each comes after the nodes making what it reads, what its subgraphs read from
    outside included (ONNX Runtime's quantizer writes a Loop before the node making a value its body reads, and
    ONNX Runtime runs it): the file's order when it is one, else the earliest ready node first. A cycle, or a
    value no node makes, is left for the walk to name."""
    producer = {out: i for i, node in enumerate(nodes) for out in node.output if out}
    needs = [{producer[r] for r in _references(node) if producer.get(r, i) != i} for i, node in enumerate(nodes)]
    if all(j < i for i, js in enumerate(needs) for j in js):
        return list(nodes)
    users: dict[int, list[int]] = {}
    for i, js in enumerate(needs):
        for j in js:
            users.setdefault(j, []).append(i)
    waiting = [len(js) for js in needs]
    ready = [i for i, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for user in users.get(i, ()):
            waiting[user] -= 1
            if waiting[user] == 0:
                heapq.heappush(ready, user)
    placed = set(order)
    return [nodes[i] for i in order] + [node for i, node in enumerate(nodes) if i not in placed]


def walk(graph: onnxwire.Graph, env: dict[str, Info], ctx: Ctx) -> Footprint:
    """Infer every node of ``graph`` in order, adding its outputs to ``env`` (which holds the graph's inputs and
    what outer scopes define); the footprint of one run, each tensor freed after its last reader."""
    env.update({t.name: tensor_info(t) for t in graph.initializer})
    nodes = in_order(graph.node)
    last: dict[str, int] = {}
    for i, node in enumerate(nodes):
        last.update((name, i) for name in _references(node))
    last.update((o.name, len(nodes)) for o in graph.output)
    found, live, sizes = Footprint(), 0, {}
    for i, node in enumerate(nodes):
        missing = [n for n in node.input if n and n not in env]
        if missing:
            raise Uninferable(node, f"reads {missing[0][:80]!r} before any node makes it")
        outs, inner = _run_node(ctx, node, [env[n] if n else None for n in node.input], env)
        named = [n for n in node.output if n]
        if len(outs) < len(node.output) and any(node.output[len(outs):]):
            raise Uninferable(node, f"has {len(node.output)} outputs, vitexport infers {len(outs)}")
        for name, info in zip(node.output, outs, strict=False):
            if name:
                env[name], sizes[name] = info, info.nbytes
                live += info.nbytes
                if info.nbytes > found.largest_bytes:
                    found.largest_bytes, found.largest_node = info.nbytes, describe(node)
        found.merge_largest(inner)
        if live + inner.peak_bytes > found.peak_bytes:
            found.peak_bytes, found.peak_node = live + inner.peak_bytes, inner.peak_node or describe(node)
        for name in {*_references(node), *named}:
            if name in sizes and last.get(name, -1) <= i:
                live -= sizes.pop(name)
    missing = [o.name for o in graph.output if o.name not in env]
    if missing:
        raise Uninferable(onnxwire.Node(name=graph.name), f"no node makes the output {missing[0][:80]!r}")
    return found


def infer(model: onnxwire.Model, input_shape: tuple[int, ...]) -> tuple[Footprint, list[Info]]:
    """The footprint of running ``model`` on one input of ``input_shape``, and its outputs' `Info`;
    `Uninferable` when some shape cannot be known in advance (the graph input itself counts in the peak)."""
    graph = model.graph
    weights = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    where = onnxwire.Node(name=graph.name or "graph")
    if len(inputs) != 1:
        raise Uninferable(where, f"has {len(inputs)} inputs; vitexport's exports have one")
    declared = inputs[0].dims
    if len(declared) != len(input_shape) or any(isinstance(d, int) and d > 0 and d != s
                                                for d, s in zip(declared, input_shape, strict=False)):
        raise Uninferable(where, f"takes {declared}, not an input of shape {list(input_shape)}")
    x = info_of(input_shape, inputs[0].elem_type or FLOAT, None, where)
    env = {inputs[0].name: x}
    found = walk(graph, env, Ctx(model.opset or 18))
    found.peak_bytes += x.nbytes
    return found, [env[o.name] for o in graph.output]


__all__ = ["ITEMSIZE", "VALUE_LIMIT", "Footprint", "Info", "Uninferable", "describe", "infer", "tensor_info",
           "walk"]
