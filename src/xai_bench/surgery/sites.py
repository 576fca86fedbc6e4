"""What each node of a traced model is, as far as rule-based attribution cares."""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

RELU = "relu"
POINTWISE = "pointwise"
MAX_POOL = "max_pool"
PRODUCT = "product"  # a product of two activations (element-wise, matrix, einsum)
COMPOSITE = "composite"  # layer norm, softmax, attention, a quotient: rewritten as the operations above
LINEAR = "linear"
STRUCTURAL = "structural"
UNKNOWN = "unknown"

RELU_FUNCTIONS = {F.relu, F.relu_, torch.relu, torch.relu_}
RELU_METHODS = {"relu", "relu_"}

POINTWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid,
    nn.Tanh, nn.Softplus, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.LogSigmoid, nn.Softsign,
    nn.Tanhshrink, nn.PReLU,
)  # fmt: skip
POINTWISE_FUNCTIONS = {
    F.relu6, F.leaky_relu, F.leaky_relu_, F.elu, F.elu_, F.selu, F.celu, F.gelu, F.silu, F.mish,
    F.sigmoid, torch.sigmoid, F.tanh, torch.tanh, F.softplus, F.hardtanh, F.hardtanh_,
    F.hardswish, F.hardsigmoid, F.logsigmoid, F.softsign, F.tanhshrink, torch.exp, torch.sqrt, torch.rsqrt,
    torch.reciprocal, torch.square, torch.erf, torch.log, torch.special.erf,
}  # fmt: skip
POINTWISE_METHODS = {"sigmoid", "sigmoid_", "tanh", "tanh_", "exp", "exp_", "sqrt", "sqrt_", "rsqrt", "rsqrt_",
                     "reciprocal", "reciprocal_", "square", "square_", "erf", "erf_", "log", "log_"}  # fmt: skip
POWER_FUNCTIONS = {operator.pow, torch.pow}
POWER_METHODS = {"pow", "pow_", "__pow__"}
# Bilinear in their two operands: linear when one of them is a constant, a product otherwise.
BILINEAR_FUNCTIONS = {operator.matmul, torch.matmul, torch.bmm, torch.mm, torch.einsum}
BILINEAR_METHODS = {"matmul", "bmm", "mm", "__matmul__"}
LAYER_NORM_FUNCTIONS = {F.layer_norm}
SOFTMAX_FUNCTIONS = {F.softmax, torch.softmax}
SOFTMAX_METHODS = {"softmax"}
ATTENTION_FUNCTIONS = {F.scaled_dot_product_attention}

MAX_POOL_MODULES: dict[type[nn.Module], Callable[..., Any]] = {
    nn.MaxPool1d: F.max_pool1d, nn.MaxPool2d: F.max_pool2d, nn.MaxPool3d: F.max_pool3d,
    nn.AdaptiveMaxPool1d: F.adaptive_max_pool1d, nn.AdaptiveMaxPool2d: F.adaptive_max_pool2d,
    nn.AdaptiveMaxPool3d: F.adaptive_max_pool3d,
}  # fmt: skip
MAX_POOL_FUNCTIONS = {
    F.max_pool1d: F.max_pool1d, F.max_pool2d: F.max_pool2d, F.max_pool3d: F.max_pool3d,
    torch.max_pool1d: F.max_pool1d, torch.max_pool2d: F.max_pool2d, torch.max_pool3d: F.max_pool3d,
    F.adaptive_max_pool1d: F.adaptive_max_pool1d, F.adaptive_max_pool2d: F.adaptive_max_pool2d,
    F.adaptive_max_pool3d: F.adaptive_max_pool3d,
}  # fmt: skip

# Affine in eval mode (normalisation layers whose statistics are frozen), or pure data movement.
LINEAR_MODULES: tuple[type[nn.Module], ...] = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
    nn.Linear, nn.Identity, nn.Flatten, nn.Unflatten, nn.modules.batchnorm._BatchNorm,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d,
    nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReplicationPad1d, nn.ReplicationPad2d,
    nn.PixelShuffle, nn.PixelUnshuffle, nn.ChannelShuffle,
)  # fmt: skip
LINEAR_FUNCTIONS = {
    operator.add, operator.iadd, operator.sub, operator.isub, operator.neg, operator.pos,
    operator.getitem, torch.add, torch.sub, torch.neg, torch.cat, torch.concat, torch.stack,
    torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.transpose, torch.permute, torch.unbind,
    torch.movedim, torch.flip, torch.roll,
    torch.chunk, torch.split, torch.narrow, torch.mean, torch.sum, F.avg_pool1d, F.avg_pool2d,
    F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
    F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.pad, F.linear, F.conv1d, F.conv2d,
    F.conv3d, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d, F.batch_norm,
    F.pixel_shuffle, F.pixel_unshuffle,
}  # fmt: skip
# Linear as long as at most one operand is a tensor computed from the input.
SCALING_FUNCTIONS = {operator.mul, operator.imul, operator.truediv, operator.itruediv, torch.mul, torch.div}
STRUCTURAL_FUNCTIONS = {getattr, torch._assert, len}
# Comparisons: of shapes and flags, structural; of activations, a step function with no exact rule.
COMPARISONS = {operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge}
# Linear in every tensor argument together: activations may arrive in several of them.
ADDITIVE_FUNCTIONS = {operator.add, operator.iadd, operator.sub, operator.isub, torch.add, torch.sub, torch.cat,
                      torch.concat, torch.stack}  # fmt: skip
ADDITIVE_METHODS = {"add", "add_", "sub", "sub_"}
# Methods whose second tensor argument lends only its shape or dtype.
SHAPE_METHODS = {"view_as", "reshape_as", "expand_as", "type_as"}
LINEAR_METHODS = {
    "view", "view_as", "reshape", "reshape_as", "flatten", "contiguous", "permute", "transpose",
    "t", "mean", "sum", "chunk", "split", "squeeze", "unsqueeze", "expand", "expand_as", "repeat",
    "narrow", "add", "add_", "sub", "sub_", "neg", "__getitem__", "to", "float", "double", "type_as",
    "clone", "unbind", "movedim", "swapaxes", "flip", "roll",
}  # fmt: skip
SCALING_METHODS = {"mul", "mul_", "div", "div_"}
STRUCTURAL_METHODS = {"size", "dim"}

# Out-of-place twins of in-place ops, so no rule's saved tensor is overwritten later.
OUT_OF_PLACE_FUNCTIONS = {
    operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
    operator.itruediv: operator.truediv, torch.relu_: torch.relu, F.relu_: F.relu,
    F.leaky_relu_: F.leaky_relu, F.elu_: F.elu, F.hardtanh_: F.hardtanh,
}  # fmt: skip
OUT_OF_PLACE_METHODS = {"add_": "add", "sub_": "sub", "mul_": "mul", "div_": "div", "relu_": "relu",
                        "sigmoid_": "sigmoid", "tanh_": "tanh", "exp_": "exp", "sqrt_": "sqrt", "rsqrt_": "rsqrt",
                        "reciprocal_": "reciprocal", "square_": "square", "erf_": "erf", "log_": "log",
                        "pow_": "pow"}  # fmt: skip


@dataclass(frozen=True)
class Site:
    """One call of a non-linearity (or an operation xai_bench does not know) in the traced graph."""

    node: str
    kind: str
    where: str
    fn: Callable[..., Any] | None = None  # element-wise function, pooling returning (y, indices), or product
    # What the replacement module is called with (graph nodes and constants); None: the first input alone.
    args: tuple[Any, ...] | None = None
    kwargs: dict[str, Any] | None = None
    composite: str = ""  # for COMPOSITE sites: "layer_norm", "softmax", "attention", "quotient", "mha"


def qualified_name(obj: Any) -> str:
    if isinstance(obj, str):
        return f"Tensor.{obj}"
    module = getattr(obj, "__module__", None) or ""
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", repr(obj))
    if module.startswith("torch._C") or module == "torch" or name.startswith("_VariableFunctionsClass."):
        module, name = "torch", name.removeprefix("_VariableFunctionsClass.")
    module = module.lstrip("_")  # '_operator' reads better as 'operator'
    return f"{module}.{name}" if module else name


def describe(node: fx.Node, gm: fx.GraphModule) -> str:
    """Say in words where ``node`` was called, for error messages and reports."""
    if node.op == "call_module":
        mod = gm.get_submodule(node.target)
        return f"module '{node.target}' ({type(mod).__name__})"
    stack = node.meta.get("nn_module_stack") or {}
    owner = ""
    if stack:
        path, (_, cls) = list(stack.items())[-1]
        owner = f" inside '{path}' ({getattr(cls, '__name__', cls)})"
    return f"{qualified_name(node.target)}(){owner} [graph node '{node.name}']"


def tensor_valued(graph: fx.Graph) -> dict[fx.Node, bool]:
    """Tell which nodes carry tensors derived from the model's input (not shapes, flags or ints)."""
    result: dict[fx.Node, bool] = {}
    for node in graph.nodes:
        if node.op == "placeholder":
            result[node] = True
        elif node.op == "get_attr":
            result[node] = False  # parameters and buffers are constants for attribution
        elif (
            node.op == "output"
            or (node.op == "call_function" and node.target in STRUCTURAL_FUNCTIONS)
            or (node.op == "call_method" and node.target in STRUCTURAL_METHODS)
        ):
            result[node] = False
        else:
            result[node] = any(result.get(a, False) for a in node.all_input_nodes)
    return result


_MAX_POOL_PARAMS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")


def _pool_from_call(target: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]):
    canonical = MAX_POOL_FUNCTIONS[target]
    rest = list(args[1:])
    extra = dict(kwargs)
    if canonical in (F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d):
        names = ("output_size", "return_indices")
    else:
        names = _MAX_POOL_PARAMS
    params = dict(zip(names, rest, strict=False))
    params.update(extra)
    if params.pop("return_indices", False):
        return None
    if any(isinstance(v, fx.Node) for v in params.values()):
        return None
    return functools.partial(canonical, **params, return_indices=True)


def _pool_from_module(mod: nn.Module):
    canonical = MAX_POOL_MODULES[type(mod)]
    if getattr(mod, "return_indices", False):
        return None
    if isinstance(mod, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)):
        return functools.partial(canonical, output_size=mod.output_size, return_indices=True)
    return functools.partial(
        canonical,
        kernel_size=mod.kernel_size,
        stride=mod.stride,
        padding=mod.padding,
        dilation=mod.dilation,
        ceil_mode=mod.ceil_mode,
        return_indices=True,
    )


def _pointwise_from_module(mod: nn.Module) -> Callable[..., Any]:
    if getattr(mod, "inplace", False):
        # The user's module must not change; call its functional form out of place instead.
        clone = type(mod).__new__(type(mod))
        clone.__dict__.update(mod.__dict__)
        clone.inplace = False
        return clone.forward
    return mod.forward


def _constant_args(node: fx.Node) -> bool:
    return not any(isinstance(a, fx.Node) for a in node.args[1:]) and not any(
        isinstance(v, fx.Node) for v in node.kwargs.values()
    )


def _without_inplace(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: (False if k == "inplace" else v) for k, v in kwargs.items()}


def _is_clamp_relu(node: fx.Node) -> bool:
    """``x.clamp(min=0)`` and friends are ReLUs in disguise."""
    is_clamp = (node.op == "call_function" and node.target in (torch.clamp, torch.clamp_min)) or (
        node.op == "call_method" and node.target in ("clamp", "clamp_", "clamp_min", "clamp_min_")
    )
    if not is_clamp:
        return False
    lower = node.kwargs.get("min", node.args[1] if len(node.args) > 1 else None)
    upper = node.kwargs.get("max", node.args[2] if len(node.args) > 2 else None)
    return lower == 0 and upper is None


def _is_identity_in_eval(node: fx.Node) -> bool:
    """torchvision's stochastic depth, wrapped as one call by fx, traced with ``training=False``."""
    if node.op != "call_function" or qualified_name(node.target) != "torchvision.ops.stochastic_depth.stochastic_depth":
        return False
    training = node.kwargs.get("training", node.args[3] if len(node.args) > 3 else True)
    return training is False


def classify(node: fx.Node, gm: fx.GraphModule, tensors: dict[fx.Node, bool]) -> Site | None:
    """Return the site ``node`` is, or ``None`` for nodes attribution rules need not touch."""
    if node.op in ("placeholder", "output", "get_attr"):
        return None
    if not tensors.get(node, False):
        return None  # shape arithmetic, assertions, flags
    where = describe(node, gm)
    if node.op == "call_module":
        mod = gm.get_submodule(node.target)
        if type(mod) is nn.ReLU:
            return Site(node.name, RELU, where)
        if isinstance(mod, POINTWISE_MODULES):
            return Site(node.name, POINTWISE, where, _pointwise_from_module(mod))
        if type(mod) is nn.LayerNorm:
            return Site(node.name, COMPOSITE, where, mod, composite="layer_norm")
        if type(mod) is nn.Softmax:
            return Site(node.name, COMPOSITE, where, None, (node.args[0],), {"dim": mod.dim}, composite="softmax")
        if type(mod) is nn.MultiheadAttention:
            return Site(node.name, COMPOSITE, where, mod, tuple(node.args), dict(node.kwargs), composite="mha")
        if type(mod) in MAX_POOL_MODULES:
            pool = _pool_from_module(mod)
            return Site(node.name, MAX_POOL, where, pool) if pool else Site(node.name, UNKNOWN, where)
        if isinstance(mod, LINEAR_MODULES):
            return _linear(node, tensors, where, additive=False)
        return Site(node.name, UNKNOWN, where)
    target = node.target
    if _is_identity_in_eval(node):
        return Site(node.name, LINEAR, where)
    if _is_clamp_relu(node):
        return Site(node.name, RELU, where)
    if node.op == "call_function":
        if target in RELU_FUNCTIONS:
            return Site(node.name, RELU, where)
        if target in POINTWISE_FUNCTIONS and _constant_args(node):
            fn = OUT_OF_PLACE_FUNCTIONS.get(target, target)
            fn = functools.partial(fn, *node.args[1:], **_without_inplace(dict(node.kwargs)))
            return Site(node.name, POINTWISE, where, fn)
        if target in MAX_POOL_FUNCTIONS:
            pool = _pool_from_call(target, node.args, dict(node.kwargs))
            return Site(node.name, MAX_POOL, where, pool) if pool else Site(node.name, UNKNOWN, where)
        if target in COMPARISONS:
            return Site(node.name, UNKNOWN, where)  # a step function of activations
        if target in LINEAR_FUNCTIONS:
            return _linear(node, tensors, where, additive=target in ADDITIVE_FUNCTIONS)
        if target in POWER_FUNCTIONS:
            return _power(node, tensors, where)
        if target in SOFTMAX_FUNCTIONS:
            return _softmax(node, tensors, where)
        if target in LAYER_NORM_FUNCTIONS | ATTENTION_FUNCTIONS:
            kind = "layer_norm" if target in LAYER_NORM_FUNCTIONS else "attention"
            if kind == "layer_norm" and _activation_args(node, tensors) not in ([0], ["input"]):
                return Site(node.name, UNKNOWN, where)  # weights computed from activations: a product
            return Site(node.name, COMPOSITE, where, None, tuple(node.args), dict(node.kwargs), composite=kind)
        if target in SCALING_FUNCTIONS or target in BILINEAR_FUNCTIONS:
            return _scaling(node, tensors, where, target)
        return Site(node.name, UNKNOWN, where)
    if node.op == "call_method":
        if target in RELU_METHODS:
            return Site(node.name, RELU, where)
        if target in POINTWISE_METHODS and _constant_args(node):
            name = OUT_OF_PLACE_METHODS.get(target, target)
            return Site(node.name, POINTWISE, where, getattr(torch, name))
        if target in LINEAR_METHODS:
            return _linear(node, tensors, where, additive=target in ADDITIVE_METHODS | SHAPE_METHODS)
        if target in POWER_METHODS:
            return _power(node, tensors, where)
        if target in SOFTMAX_METHODS:
            return _softmax(node, tensors, where)
        if target in SCALING_METHODS or target in BILINEAR_METHODS:
            return _scaling(node, tensors, where, target)
    return Site(node.name, UNKNOWN, where)


def _activation_args(node: fx.Node, tensors: dict[fx.Node, bool]) -> list[int | str]:
    """Positions (and keyword names) of the arguments that carry activations, nested ones included."""
    found: list[int | str] = []
    for key, value in [*enumerate(node.args), *node.kwargs.items()]:
        carried: list[bool] = []
        fx.node.map_arg(value, lambda n, carried=carried: carried.append(tensors.get(n, False)) or n)
        if any(carried):
            found.append(key)
    return found


def _linear(node: fx.Node, tensors: dict[fx.Node, bool], where: str, *, additive: bool) -> Site:
    """A linear operation is linear in its first argument; weights, indices and the like must be constants,
    or the operation is a product (an activation as a convolution's weight, say) without a rule here."""
    if additive:
        return Site(node.name, LINEAR, where)
    carried = _activation_args(node, tensors)
    return Site(node.name, LINEAR if carried in ([], [0]) else UNKNOWN, where)


def _softmax(node: fx.Node, tensors: dict[fx.Node, bool], where: str) -> Site:
    """Softmax in any of its spellings, as ``(input, dim=, dtype=)``."""
    names = ("input", "dim", "_stacklevel", "dtype") if node.target is F.softmax else ("input", "dim", "dtype")
    bound = dict(zip(names, node.args, strict=False)) | dict(node.kwargs)
    options = {"dim": bound.get("dim"), "dtype": bound.get("dtype")}
    if _activation_args(node, tensors) not in ([0], ["input"]) or any(isinstance(v, fx.Node) for v in options.values()):
        return Site(node.name, UNKNOWN, where)
    return Site(node.name, COMPOSITE, where, None, (bound["input"],), options, composite="softmax")


def _callable(target: Any) -> Callable[..., Any]:
    """The node's target as a function of its arguments (a method name becomes a call on the first)."""
    if isinstance(target, str):
        return lambda first, *rest, **kwargs: getattr(first, target)(*rest, **kwargs)
    return target


def _substituting(node: fx.Node, positions: tuple[int, ...]) -> Callable[..., Any]:
    """``node``'s call as a function of the arguments at ``positions`` (the others are constants)."""
    call, args, kwargs = _callable(node.target), list(node.args), dict(node.kwargs)

    def fn(*operands: Any) -> Any:
        filled = list(args)
        for position, value in zip(positions, operands, strict=True):
            filled[position] = value
        return call(*filled, **kwargs)

    return fn


def _operands(node: fx.Node, tensors: dict[fx.Node, bool]) -> tuple[tuple[int, ...], bool]:
    """Positions of the activation operands, and whether another argument is a graph value (a parameter,
    a shape, an activation passed by keyword or inside a list): such a call has no rule here."""
    carried = _activation_args(node, tensors)
    positions = tuple(i for i in carried if isinstance(i, int) and isinstance(node.args[i], fx.Node))
    others = [a for i, a in enumerate(node.args) if i not in positions] + list(node.kwargs.values())
    nested = len(positions) != len(carried)  # activations by keyword or in a list
    graph_values: list[bool] = []
    for value in others:
        fx.node.map_arg(value, lambda n: graph_values.append(True) or n)
    return positions, nested or any(graph_values)


def _power(node: fx.Node, tensors: dict[fx.Node, bool], where: str) -> Site:
    """``x ** c`` and ``c ** x`` are element-wise; ``x ** y`` of two activations has no exact rule."""
    positions, other_nodes = _operands(node, tensors)
    if other_nodes or len(positions) != 1:
        return Site(node.name, UNKNOWN, where)
    # In-place forms were made out-of-place before classification, so the call is safe to repeat.
    return Site(node.name, POINTWISE, where, _substituting(node, positions), (node.args[positions[0]],))


def _scaling(node: fx.Node, tensors: dict[fx.Node, bool], where: str, target: Any) -> Site:
    """Products and quotients: linear with one activation operand (a constant factor or divisor of an
    activation), a product rule with two, the reciprocal's rule for an activation divisor."""
    positions, other_nodes = _operands(node, tensors)
    if node.kwargs.get("rounding_mode") is not None:
        return Site(node.name, UNKNOWN, where)  # floor or truncating division: a step function
    carried = _activation_args(node, tensors)
    divides = target in (operator.truediv, operator.itruediv, torch.div, "div", "div_")
    divisor_varies = divides and (1 in carried or "other" in carried)
    if target is torch.einsum and not isinstance(node.args[0], str):
        return Site(node.name, UNKNOWN, where)  # the sublist form
    if len(carried) <= 1 and not divisor_varies:
        return Site(node.name, LINEAR, where)  # a constant factor (a parameter, a number) or divisor
    if other_nodes:
        return Site(node.name, UNKNOWN, where)
    if divides:
        if len(positions) == 1:  # c / x: element-wise in x
            return Site(node.name, POINTWISE, where, _substituting(node, positions), (node.args[1],))
        return Site(node.name, COMPOSITE, where, None, (node.args[0], node.args[1]), composite="quotient")
    if len(positions) != 2:
        return Site(node.name, UNKNOWN, where)
    plain = target in (operator.mul, torch.mul, "mul") and positions == (0, 1) and not node.kwargs
    fn = operator.mul if plain else _substituting(node, positions)  # the rule has a fast path for a * b
    return Site(node.name, PRODUCT, where, fn, tuple(node.args[p] for p in positions))
