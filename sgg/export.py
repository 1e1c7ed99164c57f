"""Export the one-stage model's field network for deployment (TorchScript, or ONNX when installed).

What is exported is ``model.net`` (:class:`~sgg.modeling.onestage.fields.CompositeFieldNet`):
a normalised image batch in, the seven raw field tensors out, as a tuple in this fixed order
(:data:`FIELD_NAMES`)::

    obj_logits [B, C, Hg, Wg]     obj_offset [B, 2, Hg, Wg]     obj_size [B, 2, Hg, Wg]
    rel_logits [B, P, Hg, Wg]     rel_subj [B, P, 2, Hg, Wg]    rel_obj [B, P, 2, Hg, Wg]
    rel_scale [B, P, 2, Hg, Wg]

with ``Hg, Wg = ceil(H / 16), ceil(W / 16)``, all float32 and raw (logits, not sigmoids), grid
units as documented in :mod:`sgg.modeling.onestage.fields`. ``offsets`` (the deformable trunks'
sampling offsets) and ``features`` (the backbone map) are training-time outputs for the depth
teacher and are not exported.

Outside the exported graph (do them as :class:`~sgg.modeling.meta_arch.one_stage.OneStageSGG`
does; the values are stored in the export's metadata, see :func:`load_exported`):

* input: uint8 RGB resized as the test mapper does (``INPUT.MIN/MAX_SIZE_TEST``), then
  ``x / 255`` (or BGR 0..255 with ``to_bgr255``), ``(x - pixel_mean) / pixel_std``, zero-padded at
  the bottom / right to a multiple of ``size_divisibility`` (32) -- :meth:`OneStageSGG.preprocess`;
* decoding: :func:`sgg.modeling.onestage.decoder.decode_fields` on ``dict(zip(FIELD_NAMES,
  outputs))`` with the unpadded sizes (data-dependent top-k / NMS / assignment: kept in Python).

Input size: the traced graph has no size-dependent branch (all three head trunks -- conv,
deformable conv, transformer with its Fourier position encoding -- and the dilated ResNets compute
their shapes from the input), so a TorchScript export traced at ``image_size`` runs at any other
size and batch size and gives the same fields as the PyTorch model (``tests/test_export.py``
checks a second size). A timm backbone (``timm:<name>``, e.g. Swin with its window partition) may
bake the traced size in: check your sizes with :func:`verify_export`. ONNX exports declare the
batch, height and width axes dynamic.

Trace on the CPU for a file that loads anywhere (``load_exported(path, device)`` moves it; a graph
traced on a GPU keeps that device for the tensors it creates, e.g. the transformer's position
features). TorchScript needs nothing beyond torch / torchvision (``import torchvision`` before
loading it in another program, for the ``torchvision::deform_conv2d`` op). ONNX needs ``pip install
onnx onnxruntime`` (not a dependency of sgg); the deformable trunk exports as ONNX ``DeformConv``
(opset 19; this module registers that mapping, which torchvision lacks) and runs in onnxruntime.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from sgg.modeling.onestage.fields import OBJECT_FIELDS, RELATION_FIELDS

logger = logging.getLogger(__name__)

__all__ = ["FIELD_NAMES", "FORMATS", "FieldNetExport", "ExportedFieldNet", "export_onestage", "load_exported",
           "verify_export", "export_metadata"]

#: order of the exported outputs
FIELD_NAMES: Tuple[str, ...] = tuple(OBJECT_FIELDS) + tuple(RELATION_FIELDS)
FORMATS = ("torchscript", "onnx")
_META_NAME = "sgg_export.json"
_ONNX_HINT = ("ONNX export needs the onnx package (and onnxruntime to run or verify the file): "
              "`pip install onnx onnxruntime`. They are not dependencies of sgg; the TorchScript export "
              "(format='torchscript', the default) works without them.")


class FieldNetExport(nn.Module):
    """``net(images)`` -> the field tensors as a tuple in :data:`FIELD_NAMES` order (what is traced).

    ``forward(images [B, 3, H, W] normalised float32) -> Tuple[Tensor, ...]`` (7 tensors).
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        fields = self.net(images)
        return tuple(fields[k] for k in FIELD_NAMES)


def export_metadata(model: nn.Module, image_size: Sequence[int], fmt: str) -> Dict[str, Any]:
    """What a deployment needs besides the graph: field order, stride, normalisation, classes."""
    return {
        "format": fmt,
        "fields": list(FIELD_NAMES),
        "traced_image_size": [int(image_size[0]), int(image_size[1])],
        "stride": int(getattr(model, "stride", 16)),
        "num_classes": int(model.num_classes),
        "num_predicates": int(model.num_predicates),
        "mode": getattr(model, "mode", None),
        "pixel_mean": [float(v) for v in model.pixel_mean.flatten().tolist()],
        "pixel_std": [float(v) for v in model.pixel_std.flatten().tolist()],
        "to_bgr255": bool(getattr(model, "to_bgr255", False)),
        "size_divisibility": int(getattr(model, "size_divisibility", 32)),
        "decode": {k: getattr(model, k, None) for k in ("topk_objects", "rel_threshold", "max_relations",
                                                         "sgcls_iou", "pair_score_filter")},
        "torch": torch.__version__,
    }


def _example_input(model: nn.Module, image_size: Sequence[int], batch_size: int) -> torch.Tensor:
    h, w = int(image_size[0]), int(image_size[1])
    div = int(getattr(model, "size_divisibility", 32))
    if h <= 0 or w <= 0:
        raise ValueError(f"image_size must be two positive ints (H, W), got {tuple(image_size)}")
    if h % div or w % div:
        raise ValueError(f"image_size {h}x{w} must be a multiple of the model's size_divisibility {div} "
                         f"(OneStageSGG.preprocess pads every batch to it); e.g. use "
                         f"({-(-h // div) * div}, {-(-w // div) * div})")
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch_size, 3, h, w, generator=g).to(device)


@contextlib.contextmanager
def _no_jit_deprecation():
    """Silence torch's "torch.jit.* is deprecated" FutureWarnings: TorchScript is used on purpose
    (it is what C++ / mobile runtimes load); other warnings pass."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=FutureWarning)
        yield


def _require_onnx():
    try:
        import onnx  # noqa: F401
    except ImportError as e:
        raise ImportError(_ONNX_HINT) from e
    return onnx


def export_onestage(model: nn.Module, path: str, image_size: Sequence[int] = (512, 512),
                    format: str = "torchscript", *, batch_size: int = 1, opset: int = 19) -> str:
    """Export ``model.net`` of a :class:`~sgg.modeling.meta_arch.one_stage.OneStageSGG` to ``path``.

    Args:
        model: the one-stage model (its ``net`` is exported in eval mode, on its device, float32;
            the model's train / eval state is restored afterwards).
        path: output file (``.pt`` / ``.ts`` for TorchScript, ``.onnx`` for ONNX).
        image_size: ``(H, W)`` of the example input, a multiple of ``model.size_divisibility``
            (the graph also runs at other sizes, see the module docstring).
        format: ``"torchscript"`` (``torch.jit.trace``) or ``"onnx"`` (``torch.onnx.export``;
            needs ``pip install onnx onnxruntime``).
        batch_size: batch of the example input.
        opset: ONNX opset (>= 19 for the deformable trunk's ``DeformConv``).

    Returns ``path``. The metadata of :func:`export_metadata` is stored in the file (TorchScript
    ``_extra_files["sgg_export.json"]``, ONNX ``metadata_props``).
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    net = getattr(model, "net", None)
    if net is None or not all(hasattr(model, k) for k in ("num_classes", "num_predicates", "pixel_mean")):
        raise TypeError(f"export_onestage needs a OneStageSGG (MODEL.META_ARCHITECTURE OneStageSGG), got "
                        f"{type(model).__name__}: the two-stage model has data-dependent control flow "
                        f"(proposals, NMS, per-image pair sampling) and is not exported")
    if format == "onnx":
        _require_onnx()
    wrapper = FieldNetExport(net)
    example = _example_input(model, image_size, batch_size)
    meta = export_metadata(model, image_size, format)
    was_training = model.training
    model.eval()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        with torch.no_grad():
            if format == "torchscript":
                with warnings.catch_warnings(record=True) as caught:
                    # torch.jit.trace is deprecated upstream in favour of torch.export; it is what
                    # runs everywhere (C++ / mobile) today. Tracer warnings come from torchvision's
                    # deform_conv2d argument checks and the transformer's q/k/v unpacking, neither
                    # of which depends on the input size (the outputs are checked at two sizes).
                    warnings.simplefilter("always")
                    traced = torch.jit.trace(wrapper, example, check_trace=False)
                for w in caught:
                    logger.debug("trace: %s", w.message)
                with _no_jit_deprecation():
                    torch.jit.save(traced, path, _extra_files={_META_NAME: json.dumps(meta)})
            else:
                _export_onnx(wrapper, example, path, opset, meta)
    finally:
        model.train(was_training)
    logger.info("exported %s (%s, traced at %dx%d) to %s", type(model).__name__, format, int(image_size[0]),
                int(image_size[1]), path)
    return path


def _register_deform_conv_onnx(opset: int) -> None:
    """Map ``torchvision::deform_conv2d`` to ONNX ``DeformConv`` (opset >= 19) for the TorchScript
    based exporter (torchvision registers ONNX symbolics for nms / roi_align / roi_pool only)."""
    if opset < 19:
        return
    from torch.onnx import register_custom_op_symbolic
    from torch.onnx.symbolic_helper import _get_tensor_sizes, parse_args

    @parse_args("v", "v", "v", "v", "v", "i", "i", "i", "i", "i", "i", "i", "i", "b")
    def deform_conv2d(g, x, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                      n_weight_grps, n_offset_grps, use_mask):
        sizes = _get_tensor_sizes(weight)
        inputs = [x, weight, offset, bias] + ([mask] if use_mask else [])
        return g.op("DeformConv", *inputs, dilations_i=[dil_h, dil_w], group_i=n_weight_grps,
                    kernel_shape_i=list(sizes[2:]), offset_group_i=n_offset_grps,
                    pads_i=[pad_h, pad_w, pad_h, pad_w], strides_i=[stride_h, stride_w])

    register_custom_op_symbolic("torchvision::deform_conv2d", deform_conv2d, opset)


def _export_onnx(wrapper: nn.Module, example: torch.Tensor, path: str, opset: int, meta: Mapping[str, Any]) -> None:
    onnx = _require_onnx()
    _register_deform_conv_onnx(opset)
    dynamic: Dict[str, Dict[int, str]] = {"images": {0: "batch", 2: "height", 3: "width"}}
    for k in FIELD_NAMES:  # [B, C, Hg, Wg] or [B, P, 2, Hg, Wg]
        h_axis = 2 if k in ("obj_logits", "obj_offset", "obj_size", "rel_logits") else 3
        dynamic[k] = {0: "batch", h_axis: "grid_h", h_axis + 1: "grid_w"}
    kwargs = dict(input_names=["images"], output_names=list(FIELD_NAMES), dynamic_axes=dynamic,
                  opset_version=opset)
    try:
        torch.onnx.export(wrapper, (example,), path, dynamo=False, **kwargs)
    except TypeError:  # torch without the dynamo argument
        torch.onnx.export(wrapper, (example,), path, **kwargs)
    m = onnx.load(path)
    entry = m.metadata_props.add()
    entry.key, entry.value = _META_NAME, json.dumps(dict(meta))
    onnx.save(m, path)


class ExportedFieldNet:
    """A loaded export: ``exported(images) -> {field name: tensor}`` (float32, on ``device``).

    ``images``: normalised float ``[B, 3, H, W]`` (``OneStageSGG.preprocess``). ``metadata``: the
    dict of :func:`export_metadata` (field order, stride, normalisation, class counts, ...).
    ``fields_tuple(images)`` returns the raw output tuple.
    """

    def __init__(self, path: str, fmt: str, module: Any, metadata: Dict[str, Any], device: torch.device) -> None:
        self.path = path
        self.format = fmt
        self.module = module
        self.metadata = metadata
        self.device = device

    def fields_tuple(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        if self.format == "torchscript":
            with torch.no_grad():
                return tuple(self.module(images.to(self.device, torch.float32)))
        feeds = {self.module.get_inputs()[0].name: images.detach().cpu().float().numpy()}
        outs = self.module.run(list(FIELD_NAMES), feeds)
        return tuple(torch.from_numpy(o).to(self.device) for o in outs)

    def __call__(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        return dict(zip(FIELD_NAMES, self.fields_tuple(images)))

    def __repr__(self) -> str:
        return f"ExportedFieldNet({self.path!r}, format={self.format!r}, fields={list(FIELD_NAMES)})"


def load_exported(path: str, device: Union[str, torch.device] = "cpu") -> ExportedFieldNet:
    """Load a file written by :func:`export_onestage` (format from the extension: ``.onnx`` is
    ONNX through onnxruntime, anything else TorchScript)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"exported model not found: {path} (write one with tools/export_model.py)")
    device = torch.device(device)
    if path.endswith(".onnx"):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ImportError(_ONNX_HINT) from e
        onnx = _require_onnx()
        meta = {}
        for p in onnx.load(path, load_external_data=False).metadata_props:
            if p.key == _META_NAME:
                meta = json.loads(p.value)
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        return ExportedFieldNet(path, "onnx", sess, meta, device)
    import torchvision  # noqa: F401  (registers torchvision::deform_conv2d for the loaded graph)

    extra = {_META_NAME: ""}
    with _no_jit_deprecation():
        module = torch.jit.load(path, map_location=device, _extra_files=extra)
    module.eval()
    meta = json.loads(extra[_META_NAME]) if extra[_META_NAME] else {}
    return ExportedFieldNet(path, "torchscript", module, meta, device)


def verify_export(model: nn.Module, path: Union[str, ExportedFieldNet], image: Optional[torch.Tensor] = None
                  ) -> float:
    """Max absolute difference over all fields between ``model.net`` and the export at ``path``.

    ``image``: a normalised float batch ``[B, 3, H, W]`` (or ``[3, H, W]``); a uint8 RGB image
    ``[3, H, W]`` goes through ``model.preprocess`` (normalise, pad) first; None: a seeded random
    batch of the traced size. A shape mismatch of any field raises (it is not a small difference).
    """
    exported = path if isinstance(path, ExportedFieldNet) else load_exported(path, next(model.parameters()).device)
    if image is None:
        size = exported.metadata.get("traced_image_size", [512, 512])
        image = _example_input(model, size, 1)
    elif image.dtype == torch.uint8:
        image, _ = model.preprocess([image])
    elif image.dim() == 3:
        image = image[None]
    image = image.to(next(model.parameters()).device, torch.float32)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ref = FieldNetExport(model.net)(image)
    finally:
        model.train(was_training)
    got = exported.fields_tuple(image)
    diff = 0.0
    for name, a, b in zip(FIELD_NAMES, ref, got):
        if tuple(a.shape) != tuple(b.shape):
            raise AssertionError(f"exported field {name} has shape {tuple(b.shape)}, the model's {tuple(a.shape)} "
                                 f"(input {tuple(image.shape)})")
        diff = max(diff, float((a.float() - b.float().to(a.device)).abs().max()) if a.numel() else 0.0)
    return diff
