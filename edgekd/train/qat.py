"""Quantization-aware training on a PT2E graph that deploys to INT8 TFLite and INT8 ONNX.

One prepared graph is trained and then converted twice, so both artifacts carry the same trained
quantization grid. Two defects of litert-torch 0.10 / torchao 0.18 are handled here:

A. litert-torch's conv-bn annotator hands a bare function to `torch.export`, which rejects it;
   the pattern is wrapped in a module while the quantizer annotates.
B. the default fused weight fake-quant computes symmetric scales that differ from what
   `convert_pt2e` deploys (by 254/255), so the model would be trained on one grid and shipped on
   another. Weights use a non-fused `FakeQuantize` whose scales come from the same observer
   `convert_pt2e` reads, so trained scales equal deployed scales.

Conversion also skips conv-bn folding passes for conv kinds the graph lacks (pure speed: ~13 s ->
~6 s for a 2-D CNN on a 2-core machine).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import types
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from torchao.quantization.pt2e import (
    FakeQuantize,
    MovingAveragePerChannelMinMaxObserver,
    WrapperModule,
    disable_observer,
    move_exported_model_to_eval,
    move_exported_model_to_train,
    qat_utils,
)
from torchao.quantization.pt2e import utils as torchao_pt2e_utils
from torchao.quantization.pt2e.constant_fold import constant_fold
from torchao.quantization.pt2e.export_utils import _EXPORTED_TRAINING_ATTR
from torchao.quantization.pt2e.quantize_pt2e import _quant_node_constraint, convert_pt2e, prepare_qat_pt2e

from edgekd.errors import EdgekdError
from edgekd.native_log import captured_stderr

# TensorFlow's runtime inside litert-torch announces oneDNN on its first load, whatever
# TF_CPP_MIN_LOG_LEVEL says: keep it off the user's terminal (edgekd.native_log)
with captured_stderr():
    from litert_torch.quantize import pt2e_quantizer_utils
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.pt2e_quantizer_utils import QuantizationConfig

_EPS = 2**-12  # litert-torch's observer floor; kept so weight scales match its activation specs


@dataclasses.dataclass(frozen=True)
class QatArtifacts:
    """The two conversions of one trained graph: litert-torch needs unfolded quantize ops, ONNX
    is smaller with weights folded to int8."""

    for_tflite: torch.fx.GraphModule
    for_onnx: torch.fx.GraphModule


def qat_quantization_config() -> QuantizationConfig:
    """litert-torch's symmetric per-channel QAT config with the weight fake-quant unfused (defect B)."""
    base = get_symmetric_quantization_config(is_per_channel=True, is_qat=True)
    weight = dataclasses.replace(
        base.weight,
        observer_or_fake_quant_ctr=FakeQuantize.with_args(
            observer=MovingAveragePerChannelMinMaxObserver, eps=_EPS
        ),
    )
    return dataclasses.replace(base, weight=weight)


def make_quantizer() -> PT2EQuantizer:
    """The quantizer handed to both `prepare_qat_pt2e` and litert-torch's converter."""
    return PT2EQuantizer().set_global(qat_quantization_config())


# The conv op each conv-bn folding pass of `convert_pt2e` looks for.
_FOLDED_CONV_OPS = {
    F.conv1d: torch.ops.aten.conv1d,
    F.conv2d: torch.ops.aten.conv2d,
    F.conv_transpose1d: torch.ops.aten.conv_transpose1d,
    F.conv_transpose2d: torch.ops.aten.conv_transpose2d,
}


@contextlib.contextmanager
def _fold_only_convs_present() -> Iterator[None]:
    """Skip conv-bn folding passes for conv kinds the graph does not contain.

    Each pass re-traces 24 patterns with strict `torch.export` (~5 s); a pass whose conv op is absent
    cannot match, so skipping it changes nothing but the time (4 passes -> 1 for a 2-D CNN).
    """
    original = qat_utils._fold_conv_bn_qat_helper

    def helper(
        m: torch.fx.GraphModule, conv_fn: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> torch.fx.GraphModule:
        op = _FOLDED_CONV_OPS.get(conv_fn)
        if op is not None and not any(getattr(n.target, "overloadpacket", None) is op for n in m.graph.nodes):
            return m
        return original(m, conv_fn, *args, **kwargs)

    qat_utils._fold_conv_bn_qat_helper = helper
    try:
        yield
    finally:
        qat_utils._fold_conv_bn_qat_helper = original


# Traced annotation patterns, per process: tracing the same 24 patterns costs ~13 s per prepare_qat,
# and a build or `eval` prepares the same student several times.
_PATTERN_CACHE: dict[tuple[Any, ...], torch.fx.GraphModule] = {}


def _pattern_key(pattern: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple | None:
    """What a traced pattern depends on: its code, its closure's values, the inputs' shapes and dtypes
    (tensors are traced as placeholders) and any other argument; None where that cannot be told."""
    fn = pattern.fn if isinstance(pattern, WrapperModule) else pattern  # torchao wraps its functions
    code = getattr(fn, "__code__", None)
    if code is None:
        return None
    cells = tuple(c.cell_contents for c in fn.__closure__ or ())
    inputs = tuple((tuple(a.shape), a.dtype) if isinstance(a, torch.Tensor) else a for a in args[0])
    key = (code, cells, inputs, args[1:], tuple(sorted(kwargs.items())))
    try:
        hash(key)
    except TypeError:
        return None
    return key


@contextlib.contextmanager
def _cached_patterns(utils: Any) -> Iterator[None]:
    """Trace each pattern of `utils._get_aten_graph_module_for_pattern` once per process (`_PATTERN_CACHE`)
    and hand out copies. Patterns given as functions are wrapped in modules first: litert-torch passes
    functions, which torch.export does not accept (defect A)."""
    original = utils._get_aten_graph_module_for_pattern

    def cached(pattern: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.fx.GraphModule:
        key = _pattern_key(pattern, args, kwargs) if args else None
        if key is not None and key in _PATTERN_CACHE:
            return copy.deepcopy(_PATTERN_CACHE[key])
        traced = original(
            pattern if isinstance(pattern, torch.nn.Module) else WrapperModule(pattern), *args, **kwargs
        )
        if key is not None:
            _PATTERN_CACHE[key] = copy.deepcopy(traced)
        return traced

    utils._get_aten_graph_module_for_pattern = cached
    try:
        yield
    finally:
        utils._get_aten_graph_module_for_pattern = original


def _trainable(prepared: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """`.train()`/`.eval()` on the exported graph, as torchao's `allow_exported_model_train_eval` gives,
    with the switches' batch-norm and dropout patterns traced once per process: torchao traces six of them
    on every switch (~1 s each time, and a build switches a few dozen times)."""

    def train(self: torch.fx.GraphModule, mode: bool = True) -> torch.fx.GraphModule:
        with _cached_patterns(torchao_pt2e_utils):
            (move_exported_model_to_train if mode else move_exported_model_to_eval)(self)
        return self

    def eval_(self: torch.fx.GraphModule) -> torch.fx.GraphModule:
        return self.train(False)

    prepared.train = types.MethodType(train, prepared)  # type: ignore[method-assign]
    prepared.eval = types.MethodType(eval_, prepared)  # type: ignore[method-assign]
    return prepared


def prepare_qat(model: torch.nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    """Export `model` with a dynamic batch and insert fake-quant for INT8 QAT.

    The model is copied and put in train mode first, so batch norms are captured in their training
    form (QAT folds them into the convs' weights) and the caller's model is left untouched.
    """
    if example.dim() < 1:
        raise EdgekdError(f"QAT example input must have a batch dimension, got shape {tuple(example.shape)}")
    # A batch of 1 would be specialised by torch.export; 2 keeps the batch dimension symbolic.
    if example.shape[0] < 2:
        example = example.expand(2, *example.shape[1:]).clone()
    model = copy.deepcopy(model).train()
    batch = torch.export.Dim("batch", min=1)
    try:
        exported = torch.export.export(model, (example,), dynamic_shapes=({0: batch},)).module()
    except torch._dynamo.exc.UserError as exc:
        raise EdgekdError(f"model cannot be exported with a dynamic batch dimension for QAT: {exc}") from exc
    with _cached_patterns(pt2e_quantizer_utils):
        prepared = prepare_qat_pt2e(exported, make_quantizer())
    return _trainable(prepared)


def _weight_fake_quants(prepared: torch.fx.GraphModule) -> Iterator[FakeQuantize]:
    """Weight fake-quants in the order their conv/linear runs (their own nodes sit wherever the
    weight's get_attr landed). Only weights are per-channel in this config, which identifies them."""
    seen: set[int] = set()
    for node in prepared.graph.nodes:
        for arg in node.all_input_nodes:
            if arg.op != "call_module":
                continue
            module = prepared.get_submodule(arg.target)
            if isinstance(module, FakeQuantize) and module.is_per_channel and id(module) not in seen:
                seen.add(id(module))
                yield module


def trained_weight_scales(prepared: torch.fx.GraphModule) -> list[np.ndarray]:
    """Per-channel weight scales used by the last training step, in execution order, to prove the
    deployed grid is the trained one."""
    return [fq.scale.detach().cpu().numpy().astype(np.float64) for fq in _weight_fake_quants(prepared)]


def freeze_observers(prepared: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Stop scales moving (fake-quant stays on): standard for the last QAT epochs, and required
    before evaluating the fake-quant model, since observers otherwise update on every forward."""
    prepared.apply(disable_observer)
    return prepared


def copy_prepared(prepared: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """A deep copy that keeps working `.train()`/`.eval()`: `copy.deepcopy` of a GraphModule drops
    the methods and the train/eval flag `_trainable` attached, so `.eval()` on a plain copy silently
    leaves batch norm in training form."""
    clone = copy.deepcopy(prepared)
    if hasattr(prepared, _EXPORTED_TRAINING_ATTR):
        setattr(clone, _EXPORTED_TRAINING_ATTR, getattr(prepared, _EXPORTED_TRAINING_ATTR))
    return _trainable(clone)


def convert_qat(prepared: torch.fx.GraphModule) -> QatArtifacts:
    """Convert a copy of the trained graph for each exporter; `prepared` stays trainable.

    `convert_pt2e` spends seconds re-tracing conv-bn folding patterns, so it runs once; the ONNX
    copy then gets the same weight-folding pass `convert_pt2e(fold_quantize=True)` ends with.
    """
    with _fold_only_convs_present():
        for_tflite = convert_pt2e(copy_prepared(prepared), fold_quantize=False)
    with _cached_patterns(torchao_pt2e_utils):
        move_exported_model_to_eval(for_tflite)
    # Only the flags: the graph is already in eval form, and exporters warn on training-mode modules.
    torch.nn.Module.train(for_tflite, False)
    for_onnx = copy.deepcopy(for_tflite)
    constant_fold(for_onnx, _quant_node_constraint)
    return QatArtifacts(for_tflite=for_tflite, for_onnx=for_onnx)
