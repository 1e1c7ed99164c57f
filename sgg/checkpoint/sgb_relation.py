"""Scene-Graph-Benchmark *relation* checkpoints -> sgg's two-stage relation model.

Used by :func:`sgg.checkpoint.sgb.sgb_to_sgg_state_dict` when the target state dict is a relation
model's (it has ``relation_head.*`` keys); that function stays the one public entry point. An SGB
relation checkpoint (``tools/relation_train_net.py`` of SGB, or of PE-Net, an SGB fork) holds the
whole ``GeneralizedRCNN``: the detector (maskrcnn_benchmark names, mapped by :mod:`.sgb` under
``detector.``) and ``roi_heads.relation.*`` (mapped here under ``relation_head.``).

Relation keys (``R`` = ``roi_heads.relation.``, checked against SGB HEAD 6f75881 and PE-Net HEAD
9c9f507):

=================================================================  =======================================
SGB                                                                sgg (``relation_head.``)
=================================================================  =======================================
``R.box_feature_extractor.fc6/fc7.*``                              ``box_feature_extractor.head.fc6/fc7.*``
``R.union_feature_extractor.feature_extractor.fc6/fc7.*``          ``union_feature_extractor.head.fc6/fc7.*``
``R.union_feature_extractor.feature_extractor.pooler``             ``union_feature_extractor.reduce_channel.0.*``
``.reduce_channel.0.*`` (``POOLING_ALL_LEVELS``)
``R.union_feature_extractor.rect_conv.{0,2,4,6}.*``                the same names
``R.union_feature_extractor.spatial_fc.{0,2}.*``                    the same names (``CAUSAL.SEPARATE_SPATIAL``)
``R.predictor.*`` (every predictor, contexts included)             ``predictor.*``: the same names
``R.predictor...pos_ffn.w_1/w_2.weight`` (Transformer, Conv1d      ``predictor...pos_ffn.w_1/w_2.weight``,
``[out, in, 1]``)                                                  Linear ``[out, in]`` (kernel dim dropped)
``R.predictor.context_layer.decoder_rnn.decoderLSTM.embed_layer``  aliases SGB's VCTree decoder registers
``.weight`` / ``.embed_out_layer.*``                               twice (``decoder_rnn.obj_embed`` /
                                                                   ``decoder_rnn.out``): expected skips
=================================================================  =======================================

Expected skips (reported under ``expected``, never an error): the modules sgg does not build by its
convention (modules that cannot learn in the protocol are not built), recognised by the target
model having no key of that module at all:

* ``predictor.context_layer.decoder_rnn.*`` (Motifs / VCTree / Causal motifs|vctree decoder), and the
  decoder-input average ``context_layer.untreated_dcd_feat`` -- PredCls;
* ``predictor.context_layer.obj_fc.*`` (IMP), ``predictor.context_layer.out_obj.*`` (Transformer) -- PredCls;
* ``predictor.pos_embed/obj_embed1/out_obj/lin_obj_cyx.*`` (PE-Net's object branch) -- PredCls;
  ``predictor.linear_pred.*`` (PE-Net) -- never used, never built;
* ``predictor.context_layer.untreated_obj_feat`` of the Causal motifs / vctree contexts (read only by
  SGB's ``all_average`` mode, which the predictor never uses); VTransE with
  ``CAUSAL.VTRANSE_LABELS protocol`` in PredCls: ``context_layer.obj_embed1/pred_layer.*`` and that average;
* ``union_feature_extractor.*`` and ``predictor.up_dim.*`` with ``PREDICT_USE_VISION False`` (SGB builds
  them anyway).

Everything else without a place in the model (an attribute model's ``att_feature_extractor``,
``CAUSAL.SEPARATE_SPATIAL``'s ``union_feature_extractor.spatial_fc`` when the config does not set
that key, a predictor or context other than the config's) is *unplaced*. Model tensors the checkpoint does not give are ``missing``, except those SGB may
legitimately lack, which keep their initial value (``defaulted``): the Causal moving averages
(SGB registers the context ones only with ``EFFECT_ANALYSIS``; they start at zero in both) and
BatchNorm ``num_batches_tracked`` (unused in eval).
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

SGB_RELATION = "roi_heads.relation."
SGG_RELATION = "relation_head."
SGG_DETECTOR = "detector."

Relayout = Optional[Callable[[torch.Tensor], torch.Tensor]]


def _drop_kernel_dim(t: torch.Tensor) -> torch.Tensor:
    """Conv1d kernel-size-1 weight ``[out, in, 1]`` -> Linear ``[out, in]``."""
    return t.squeeze(-1) if t.dim() == 3 and t.shape[-1] == 1 else t


# (SGB pattern relative to roi_heads.relation., sgg name relative to relation_head., re-layout)
_RULES: List[Tuple["re.Pattern[str]", Callable[["re.Match[str]"], str], Relayout]] = [
    (re.compile(r"^box_feature_extractor\.(fc6|fc7)\.(weight|bias)$"),
     lambda m: f"box_feature_extractor.head.{m.group(1)}.{m.group(2)}", None),
    (re.compile(r"^union_feature_extractor\.feature_extractor\.(fc6|fc7)\.(weight|bias)$"),
     lambda m: f"union_feature_extractor.head.{m.group(1)}.{m.group(2)}", None),
    (re.compile(r"^union_feature_extractor\.feature_extractor\.pooler\.reduce_channel\.0\.(weight|bias)$"),
     lambda m: f"union_feature_extractor.reduce_channel.0.{m.group(1)}", None),
    (re.compile(r"^union_feature_extractor\.((?:rect_conv|spatial_fc)\.\d+\.[A-Za-z_]+)$"),
     lambda m: f"union_feature_extractor.{m.group(1)}", None),
    (re.compile(r"^(predictor\.(?:.+\.)?pos_ffn\.w_[12]\.weight)$"), lambda m: m.group(1), _drop_kernel_dim),
    (re.compile(r"^(predictor\..+)$"), lambda m: m.group(1), None),
]

# SGB modules sgg leaves unbuilt by convention: (SGB prefix relative to roi_heads.relation.; why).
# A key under one is an expected skip when the model has no key under the (same-named) sgg prefix.
_NOT_BUILT: Tuple[Tuple[str, str], ...] = (
    ("union_feature_extractor.", "PREDICT_USE_VISION False: no union features"),
    ("predictor.up_dim.", "PREDICT_USE_VISION False: no union features to project"),
    ("predictor.context_layer.decoder_rnn.", "object decoder, not built in PredCls"),
    ("predictor.context_layer.untreated_dcd_feat", "decoder-input average, not kept in PredCls"),
    ("predictor.context_layer.obj_fc.", "IMP object classifier, not built in PredCls"),
    ("predictor.context_layer.out_obj.", "Transformer object classifier, not built in PredCls"),
    ("predictor.context_layer.untreated_obj_feat", "Causal object-input average, never read (all_average)"),
    ("predictor.context_layer.obj_embed1.", "VTransE classifier, not built in PredCls (VTRANSE_LABELS protocol)"),
    ("predictor.context_layer.pred_layer.", "VTransE classifier, not built in PredCls (VTRANSE_LABELS protocol)"),
    ("predictor.linear_pred.", "PE-Net linear_pred, never used"),
    ("predictor.pos_embed.", "PE-Net object branch, not built in PredCls"),
    ("predictor.obj_embed1.", "PE-Net object branch, not built in PredCls"),
    ("predictor.out_obj.", "PE-Net object branch, not built in PredCls"),
    ("predictor.lin_obj_cyx.", "PE-Net object branch, not built in PredCls"),
)

# Second names of one module in SGB's state dict (VCTree's DecoderTreeLSTM hands its obj_embed / out
# to its BiTreeLSTM, which registers them again): alias suffix -> primary suffix.
_ALIASES: Tuple[Tuple[str, str], ...] = (
    ("decoder_rnn.decoderLSTM.embed_layer.", "decoder_rnn.obj_embed."),
    ("decoder_rnn.decoderLSTM.embed_out_layer.", "decoder_rnn.out."),
)

# Model tensors an SGB checkpoint may lack; they keep their initial value (zeros / unused).
_DEFAULTED = re.compile(r"^relation_head\.predictor\.(?:context_layer\.)?"
                        r"(?:untreated_[a-z_]+|avg_post_ctx)$|\.num_batches_tracked$")


def is_relation_model_state(state: Optional[Mapping[str, torch.Tensor]]) -> bool:
    """Whether ``state`` is the state dict of sgg's two-stage relation model."""
    return state is not None and any(k.startswith(SGG_RELATION) for k in state)


def _alias_primary(rel_key: str) -> Optional[str]:
    for alias, primary in _ALIASES:
        i = rel_key.find(alias)
        if i >= 0:
            return rel_key[:i] + primary + rel_key[i + len(alias):]
    return None


def _not_built_reason(rel_key: str, model_prefixes: set) -> Optional[str]:
    for prefix, why in _NOT_BUILT:
        if rel_key.startswith(prefix) and SGG_RELATION + prefix not in model_prefixes:
            return why
    return None


def _module_prefixes(keys: Sequence[str]) -> set:
    """Every dotted prefix (``a.``, ``a.b.``, ...) and full key of ``keys``."""
    out = set()
    for k in keys:
        out.add(k)
        parts = k.split(".")
        for i in range(1, len(parts)):
            out.add(".".join(parts[:i]) + ".")
    return out


def relation_shape_hint(sgg_key: str) -> str:
    """The config keys that most likely explain a shape mismatch at a ``relation_head.*`` key."""
    k = sgg_key[len(SGG_RELATION):]
    if k.startswith(("box_feature_extractor.", "union_feature_extractor.head.")):
        return "MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM (SGB: 4096) and MODEL.RESNETS.BACKBONE_OUT_CHANNELS (SGB: 256)"
    if k.startswith("union_feature_extractor."):
        return "MODEL.RESNETS.BACKBONE_OUT_CHANNELS (SGB: 256) and ROI_RELATION_HEAD.POOLING_ALL_LEVELS"
    if "freq_bias" in k or "rel_compress" in k or "ctx_compress" in k or "vis_compress" in k:
        return ("the object / predicate counts of DATASETS.TRAIN (SGB's VG150: 151 / 51) and "
                "ROI_RELATION_HEAD.CONTEXT_POOLING_DIM")
    return ("the predictor's sizes: MODEL.ROI_RELATION_HEAD.CONTEXT_HIDDEN_DIM / CONTEXT_POOLING_DIM / EMBED_DIM "
            "(SGB: 512 / 4096 / 200), CONTEXT_OBJ_LAYER / CONTEXT_REL_LAYER, TRANSFORMER.*, PENET.MLP_DIM (PE-Net: "
            "2048), CAUSAL.CONTEXT_LAYER, and the class counts of DATASETS.TRAIN")


def convert_relation_state(state: Mapping[str, torch.Tensor], model_state: Mapping[str, torch.Tensor]
                           ) -> Tuple["OrderedDict[str, torch.Tensor]", Dict[str, List], List[Tuple]]:
    """``roi_heads.relation.*`` tensors of ``state`` (SGB names, no ``module.``) -> ``relation_head.*``.

    Returns ``(out, report, mismatched)``: ``report`` has ``mapped`` [(sgb_key, sgg_key)], ``expected``
    / ``unplaced`` [sgb_key] and ``reasons`` {sgb_key: why}; ``mismatched`` [(sgb_key, sgg_key,
    checkpoint shape, model shape)] (the caller raises).
    """
    prefixes = _module_prefixes(list(model_state))
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    report: Dict[str, List] = {"mapped": [], "expected": [], "unplaced": []}
    reasons: Dict[str, str] = {}
    mismatched: List[Tuple] = []
    aliases = []
    for key, value in state.items():
        if not key.startswith(SGB_RELATION):
            continue
        rel = key[len(SGB_RELATION):]
        if _alias_primary(rel) is not None:
            aliases.append((key, rel))
            continue
        why = _not_built_reason(rel, prefixes)
        if why is not None:
            report["expected"].append(key)
            reasons[key] = why
            continue
        new, relayout = None, None
        for pattern, fn, lay in _RULES:
            m = pattern.match(rel)
            if m is not None:
                new, relayout = SGG_RELATION + fn(m), lay
                break
        if new is None or new not in model_state:
            report["unplaced"].append(key)
            reasons[key] = ("no sgg name" if new is None else
                            f"'{new}' is not in the model (another predictor / context / option than the config's?)")
            continue
        if relayout is not None and torch.is_tensor(value):
            value = relayout(value)
        a, b = tuple(value.shape), tuple(model_state[new].shape)
        if a != b:
            mismatched.append((key, new, a, b))
            continue
        out[new] = value
        report["mapped"].append((key, new))
    for key, rel in aliases:
        primary_key = SGB_RELATION + _alias_primary(rel)
        why = _not_built_reason(rel, prefixes)
        if why is not None:
            report["expected"].append(key)
            reasons[key] = why
        elif primary_key in state and torch.equal(state[primary_key], state[key]):
            report["expected"].append(key)
            reasons[key] = f"second name of '{primary_key}' (same tensor)"
        elif primary_key not in state:
            # only the alias was saved: it gives the primary's tensor
            new = SGG_RELATION + _alias_primary(rel)
            if new in model_state and tuple(state[key].shape) == tuple(model_state[new].shape):
                out[new] = state[key]
                report["mapped"].append((key, new))
            else:
                report["unplaced"].append(key)
                reasons[key] = f"alias of '{primary_key}', which has no place in the model"
        else:
            report["unplaced"].append(key)
            reasons[key] = f"differs from '{primary_key}', whose second name it should be"
    report["reasons"] = reasons
    return out, report, mismatched


def defaulted_keys(missing: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Split missing model keys into (really missing, allowed to keep their initial value)."""
    keep, default = [], []
    for k in missing:
        (default if _DEFAULTED.search(k) else keep).append(k)
    return keep, default


def relation_unplaced_fix(unplaced: Sequence[str]) -> str:
    """What to change when ``roi_heads.relation.*`` tensors have no place in the relation model."""
    if any(".att_feature_extractor." in k for k in unplaced):
        return ("the checkpoint is an attribute model (MODEL.ATTRIBUTE_ON), which sgg does not build")
    if any(".spatial_fc." in k for k in unplaced):
        return ("the checkpoint was trained with CAUSAL.SEPARATE_SPATIAL: set MODEL.ROI_RELATION_HEAD.CAUSAL."
                "SEPARATE_SPATIAL True (with PREDICTOR CausalAnalysisPredictor)")
    return ("set MODEL.ROI_RELATION_HEAD.PREDICTOR (and CAUSAL.CONTEXT_LAYER / FUSION_TYPE / SPATIAL_FOR_VISION, "
            "PREDICT_USE_BIAS, CONTEXT_OBJ_LAYER / CONTEXT_REL_LAYER, TRANSFORMER.OBJ_LAYER / REL_LAYER) as the "
            "checkpoint's model was trained")
