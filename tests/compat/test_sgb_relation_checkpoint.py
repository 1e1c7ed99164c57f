"""Scene-Graph-Benchmark / PE-Net *relation* checkpoints (a whole maskrcnn_benchmark model: detector +
``roi_heads.relation.*``) loading into sgg's two-stage relation model, for every predictor.

The SGB key names below are transcribed from the reference code (not from sgg's modules): SGB HEAD
6f75881 (KaihuaTang/Scene-Graph-Benchmark.pytorch) and PE-Net HEAD 9c9f507 (VL-Group/PENET), files
under ``maskrcnn_benchmark/modeling/roi_heads/``. Their tensors get distinct random values of sgg's
shapes (in SGB's layout where it differs), are converted and loaded, and every tensor must land at
the sgg parameter of the same role. Tiny R-18-FPN (FrozenBN, 8 channels) models, CPU, one thread.
"""
import os
import sys
from collections import OrderedDict

import pytest
import torch

from sgg.checkpoint import CheckpointError
from sgg.checkpoint.sgb import (UnplacedTensorsError, convert_checkpoint_file, format_report, sgb_to_sgg_state_dict,
                                sgg_to_sgb_state_dict)
from sgg.modeling.meta_arch import build_sgg_model
from sgg.modeling.pretrained import load_pretrained, load_sgb_relation_checkpoint
from sgg.structures import Boxes, Instances

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "modeling"))
from two_stage_fixtures import make_synthvg, tiny_config  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

NUM_OBJ, NUM_REL = 7, 5  # C+1, P+1
FROZEN_BN = ("MODEL.DETECTOR.BACKBONE_NORM", "FrozenBN", "MODEL.FPN.USE_GN", "False")
TRANSFORMER = ("MODEL.ROI_RELATION_HEAD.TRANSFORMER.OBJ_LAYER", "1", "MODEL.ROI_RELATION_HEAD.TRANSFORMER.REL_LAYER", "1",
               "MODEL.ROI_RELATION_HEAD.TRANSFORMER.NUM_HEAD", "2", "MODEL.ROI_RELATION_HEAD.TRANSFORMER.KEY_DIM", "4",
               "MODEL.ROI_RELATION_HEAD.TRANSFORMER.VAL_DIM", "4", "MODEL.ROI_RELATION_HEAD.TRANSFORMER.INNER_DIM", "16")
PENET = ("MODEL.ROI_RELATION_HEAD.PENET.MLP_DIM", "16")
CAUSAL = ("MODEL.ROI_RELATION_HEAD.CONTEXT_POOLING_DIM", "32",  # SGB asserts CONTEXT_POOLING_DIM == MLP_HEAD_DIM
          "MODEL.ROI_RELATION_HEAD.CAUSAL.EFFECT_ANALYSIS", "True")


# ------------------------------------------------------------------ SGB key names (the reference)
def lin(p):  # nn.Linear / make_fc / Conv
    return [f"{p}.weight", f"{p}.bias"]


def bn(p):  # nn.BatchNorm1d/2d
    return [f"{p}.{n}" for n in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]


def lstm(p):  # torch.nn.LSTM(num_layers=1, bidirectional=True)
    return [f"{p}.{n}_l0{s}" for s in ("", "_reverse") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]


def gru(p):  # torch.nn.GRUCell
    return [f"{p}.{n}" for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]


# relation_head.py ROIRelationHead: box_feature_extractor = FPN2MLPFeatureExtractor
# (box_head/roi_box_feature_extractors.py: fc6, fc7); roi_relation_feature_extractors.py
# RelationFeatureExtractor: feature_extractor = FPN2MLPFeatureExtractor(cat_all_levels=True), whose
# Pooler (poolers.py) holds reduce_channel = make_conv3x3(use_relu=True) = Sequential(conv, ReLU);
# rect_conv = Sequential(Conv2d, ReLU, BatchNorm2d, MaxPool2d, Conv2d, ReLU, BatchNorm2d).
FEATURES = (lin("box_feature_extractor.fc6") + lin("box_feature_extractor.fc7")
            + lin("union_feature_extractor.feature_extractor.fc6") + lin("union_feature_extractor.feature_extractor.fc7")
            + lin("union_feature_extractor.feature_extractor.pooler.reduce_channel.0")
            + lin("union_feature_extractor.rect_conv.0") + bn("union_feature_extractor.rect_conv.2")
            + lin("union_feature_extractor.rect_conv.4") + bn("union_feature_extractor.rect_conv.6"))

C = "predictor.context_layer."
POS_EMBED = lin("pos_embed.0") + bn("pos_embed.1") + lin("pos_embed.2")  # Linear(9,32), BN(32), Linear(32,128), ReLU

# model_motifs.py LSTMContext (+ DecoderRNN: obj_embed, input_linearity, state_linearity, out_obj)
MOTIFS_DECODER = [C + k for k in ["decoder_rnn.obj_embed.weight"] + lin("decoder_rnn.input_linearity")
                  + lin("decoder_rnn.state_linearity") + lin("decoder_rnn.out_obj")]
MOTIFS_CONTEXT = [C + k for k in ["obj_embed1.weight", "obj_embed2.weight"] + POS_EMBED + lstm("obj_ctx_rnn")
                  + lstm("edge_ctx_rnn") + lin("lin_obj_h") + lin("lin_edge_h")] + MOTIFS_DECODER
# roi_relation_predictors.py MotifPredictor (up_dim: CONTEXT_POOLING_DIM 24 != MLP_HEAD_DIM 32; freq_bias:
# model_motifs.py FrequencyBias.obj_baseline)
MOTIFS = MOTIFS_CONTEXT + [f"predictor.{k}" for k in lin("post_emb") + lin("post_cat") + lin("rel_compress")
                           + lin("up_dim") + ["freq_bias.obj_baseline.weight"]]

# model_msg_passing.py IMPContext; roi_relation_predictors.py IMPPredictor (up_dim, no freq_bias)
IMP_OBJ_FC = [C + k for k in lin("obj_fc")]
IMP = [C + k for k in lin("rel_fc") + lin("obj_unary") + lin("edge_unary") + gru("edge_gru") + gru("node_gru")
       + lin("sub_vert_w_fc.0") + lin("obj_vert_w_fc.0") + lin("out_edge_w_fc.0") + lin("in_edge_w_fc.0")] \
    + IMP_OBJ_FC + lin("predictor.up_dim")


# utils_treelstm.py MultiLayer_BTreeLSTM.multi_layer_lstm[i] = BidirectionalTreeLSTM: treeLSTM_foreward /
# treeLSTM_backward = OneDirectionalTreeLSTM, .treeLSTM = BiTreeLSTM_Foreward (px, ioffux, ioffuh_left,
# ioffuh_right) / BiTreeLSTM_Backward (px, iofux, iofuh)
def tree_lstm(p):
    f, b = f"{p}.multi_layer_lstm.0.treeLSTM_foreward.treeLSTM", f"{p}.multi_layer_lstm.0.treeLSTM_backward.treeLSTM"
    return (lin(f"{f}.px") + lin(f"{f}.ioffux") + lin(f"{f}.ioffuh_left") + lin(f"{f}.ioffuh_right")
            + lin(f"{b}.px") + lin(f"{b}.iofux") + lin(f"{b}.iofuh"))


# model_vctree.py DecoderTreeLSTM: obj_embed, out, decoderLSTM = BiTreeLSTM_Backward(embed_layer=obj_embed,
# embed_out_layer=out), which registers obj_embed / out a second time
VCTREE_ALIASES = [C + k for k in ["decoder_rnn.decoderLSTM.embed_layer.weight"]
                  + lin("decoder_rnn.decoderLSTM.embed_out_layer")]
VCTREE_DECODER = [C + k for k in ["decoder_rnn.obj_embed.weight"] + lin("decoder_rnn.out")
                  + lin("decoder_rnn.decoderLSTM.px") + lin("decoder_rnn.decoderLSTM.iofux")
                  + lin("decoder_rnn.decoderLSTM.iofuh")] + VCTREE_ALIASES
# model_vctree.py VCTreeLSTMContext
VCTREE_CONTEXT = [C + k for k in ["obj_embed1.weight", "obj_embed2.weight"] + POS_EMBED
                  + lin("overlap_embed.0") + bn("overlap_embed.1") + lin("box_embed.0") + bn("box_embed.1")
                  + ["bi_freq_prior.weight"] + lin("obj_reduce") + lin("emb_reduce") + lin("score_pre")
                  + lin("score_sub") + lin("score_obj") + lin("vision_prior") + tree_lstm("obj_ctx_rnn")
                  + tree_lstm("edge_ctx_rnn")] + VCTREE_DECODER
# roi_relation_predictors.py VCTreePredictor
VCTREE = VCTREE_CONTEXT + [f"predictor.{k}" for k in lin("post_emb") + lin("post_cat") + lin("ctx_compress")
                           + lin("up_dim") + ["freq_bias.obj_baseline.weight"]]


# model_transformer.py TransformerContext / TransformerEncoder.layer_stack[i] = EncoderLayer: slf_attn =
# MultiHeadAttention (w_qs, w_ks, w_vs, layer_norm, fc), pos_ffn = PositionwiseFeedForward (w_1, w_2: Conv1d k1)
def encoder(p):
    a, f = f"{p}.layer_stack.0.slf_attn", f"{p}.layer_stack.0.pos_ffn"
    return (lin(f"{a}.w_qs") + lin(f"{a}.w_ks") + lin(f"{a}.w_vs") + lin(f"{a}.layer_norm") + lin(f"{a}.fc")
            + lin(f"{f}.w_1") + lin(f"{f}.w_2") + lin(f"{f}.layer_norm"))


TRANSFORMER_OUT_OBJ = [C + k for k in lin("out_obj")]
TRANSFORMER_KEYS = [C + k for k in ["obj_embed1.weight", "obj_embed2.weight"] + lin("bbox_embed.0") + lin("bbox_embed.3")
                    + lin("lin_obj") + lin("lin_edge") + encoder("context_obj") + encoder("context_edge")] \
    + TRANSFORMER_OUT_OBJ + [f"predictor.{k}" for k in lin("post_emb") + lin("post_cat") + lin("rel_compress")
                             + lin("ctx_compress") + lin("up_dim") + ["freq_bias.obj_baseline.weight"]]

# PE-Net roi_relation_predictors.py PrototypeEmbeddingNetwork (MLP.layers = ModuleList of Linear;
# vis2sem = Sequential(Linear, ReLU, Dropout, Linear))
P = "predictor."
PENET_LINEAR_PRED = [P + k for k in lin("linear_pred")]
PENET_OBJECT_BRANCH = [P + k for k in POS_EMBED + ["obj_embed1.weight"] + lin("out_obj") + lin("lin_obj_cyx")]
PENET_KEYS = [P + k for k in ["logit_scale"] + lin("post_emb") + ["obj_embed.weight", "rel_embed.weight"]
              + lin("W_sub.layers.0") + lin("W_sub.layers.1") + lin("W_obj.layers.0") + lin("W_obj.layers.1")
              + lin("W_pred.layers.0") + lin("W_pred.layers.1") + lin("gate_sub") + lin("gate_obj") + lin("gate_pred")
              + lin("vis2sem.0") + lin("vis2sem.3") + lin("project_head.layers.0") + lin("project_head.layers.1")
              + lin("linear_sub") + lin("linear_obj") + lin("linear_rel_rep") + lin("norm_sub") + lin("norm_obj")
              + lin("norm_rel_rep") + lin("down_samp.layers.0") + lin("down_samp.layers.1")] \
    + PENET_LINEAR_PRED + PENET_OBJECT_BRANCH

# roi_relation_predictors.py CausalAnalysisPredictor: buffers untreated_spt / untreated_conv_spt /
# avg_post_ctx / untreated_feat; motifs / vctree: post_emb, post_cat = Sequential(Linear, ReLU),
# ctx_compress; vtranse: post_emb, ctx_compress (no bias); vis_compress, [ctx_gate_fc], freq_bias,
# [spt_emb = Sequential(Linear, ReLU, Linear, ReLU)]. Contexts with EFFECT_ANALYSIS register
# untreated_dcd_feat / untreated_obj_feat / untreated_edg_feat (LSTMContext, VCTreeLSTMContext) or
# untreated_obj_feat / untreated_edg_feat (model_vtranse.py VTransEFeature: obj_embed1/2, pos_embed,
# pred_layer, fc_layer).
CAUSAL_COMMON = [P + k for k in ["untreated_spt", "untreated_conv_spt", "avg_post_ctx", "untreated_feat"]
                 + lin("vis_compress") + ["freq_bias.obj_baseline.weight"]]
CAUSAL_GATE = [P + k for k in lin("ctx_gate_fc")]
CAUSAL_SPATIAL = [P + k for k in lin("spt_emb.0") + lin("spt_emb.2")]
CAUSAL_HEAD = [P + k for k in lin("post_emb") + lin("post_cat.0") + lin("ctx_compress")]
CAUSAL_MOTIFS = MOTIFS_CONTEXT + [C + "untreated_dcd_feat", C + "untreated_obj_feat", C + "untreated_edg_feat"] \
    + CAUSAL_HEAD + CAUSAL_COMMON
CAUSAL_VCTREE = VCTREE_CONTEXT + [C + "untreated_dcd_feat", C + "untreated_obj_feat", C + "untreated_edg_feat"] \
    + CAUSAL_HEAD + CAUSAL_COMMON
VTRANSE_CLASSIFIER = [C + k for k in ["obj_embed1.weight"] + lin("pred_layer") + ["untreated_obj_feat"]]
CAUSAL_VTRANSE = [C + k for k in ["obj_embed2.weight"] + POS_EMBED + lin("fc_layer") + ["untreated_edg_feat"]] \
    + VTRANSE_CLASSIFIER + [P + k for k in lin("post_emb") + ["ctx_compress.weight"]] + CAUSAL_COMMON

CTX = "MODEL.ROI_RELATION_HEAD.CAUSAL.CONTEXT_LAYER"
# case -> (predictor, protocol, config overrides, SGB relation keys, the keys sgg does not build)
CASES = {
    "motifs-predcls": ("MotifPredictor", "predcls", (), MOTIFS, MOTIFS_DECODER),
    "motifs-sgcls": ("MotifPredictor", "sgcls", (), MOTIFS, []),
    "imp-predcls": ("IMPPredictor", "predcls", (), IMP, IMP_OBJ_FC),
    "imp-sgdet": ("IMPPredictor", "sgdet", (), IMP, []),
    "vctree-predcls": ("VCTreePredictor", "predcls", (), VCTREE, VCTREE_DECODER),
    "vctree-sgcls": ("VCTreePredictor", "sgcls", (), VCTREE, VCTREE_ALIASES),
    "transformer-predcls": ("TransformerPredictor", "predcls", TRANSFORMER, TRANSFORMER_KEYS, TRANSFORMER_OUT_OBJ),
    "transformer-sgcls": ("TransformerPredictor", "sgcls", TRANSFORMER, TRANSFORMER_KEYS, []),
    "penet-predcls": ("PENetPredictor", "predcls", PENET, PENET_KEYS, PENET_LINEAR_PRED + PENET_OBJECT_BRANCH),
    "penet-sgcls": ("PENetPredictor", "sgcls", PENET, PENET_KEYS, PENET_LINEAR_PRED),
    "causal-motifs-predcls": ("CausalAnalysisPredictor", "predcls", CAUSAL + (CTX, "motifs"), CAUSAL_MOTIFS,
                              MOTIFS_DECODER + [C + "untreated_dcd_feat", C + "untreated_obj_feat"]),
    "causal-motifs-sgcls-gate-spatial": (
        "CausalAnalysisPredictor", "sgcls", CAUSAL + (CTX, "motifs", "MODEL.ROI_RELATION_HEAD.CAUSAL.FUSION_TYPE", "gate",
                                                      "MODEL.ROI_RELATION_HEAD.CAUSAL.SPATIAL_FOR_VISION", "True"),
        CAUSAL_MOTIFS + CAUSAL_GATE + CAUSAL_SPATIAL, [C + "untreated_obj_feat"]),
    # roi_relation_feature_extractors.py: spatial_fc = Sequential(make_fc, ReLU, make_fc, ReLU)
    "causal-motifs-predcls-separate-spatial": (
        "CausalAnalysisPredictor", "predcls", CAUSAL + (CTX, "motifs", "MODEL.ROI_RELATION_HEAD.CAUSAL.SEPARATE_SPATIAL",
                                                        "True"),
        CAUSAL_MOTIFS + lin("union_feature_extractor.spatial_fc.0")
        + lin("union_feature_extractor.spatial_fc.2"), MOTIFS_DECODER + [C + "untreated_dcd_feat", C + "untreated_obj_feat"]),
    "causal-vctree-sgcls": ("CausalAnalysisPredictor", "sgcls", CAUSAL + (CTX, "vctree"), CAUSAL_VCTREE,
                            VCTREE_ALIASES + [C + "untreated_obj_feat"]),
    "causal-vtranse-predcls": ("CausalAnalysisPredictor", "predcls", CAUSAL + (CTX, "vtranse"), CAUSAL_VTRANSE, []),
    "causal-vtranse-predcls-protocol": (
        "CausalAnalysisPredictor", "predcls", CAUSAL + (CTX, "vtranse", "MODEL.ROI_RELATION_HEAD.CAUSAL.VTRANSE_LABELS",
                                                        "protocol"), CAUSAL_VTRANSE, VTRANSE_CLASSIFIER),
}


def sgb_keys(case):
    """Every ``roi_heads.relation.`` key of the SGB model of ``case``: feature extractors + predictor."""
    return FEATURES + CASES[case][3]


# ------------------------------------------------------------------ where each SGB tensor belongs in sgg
def sgg_name(rel_key):
    """The sgg parameter of an SGB ``roi_heads.relation.`` key (test's own statement of the mapping)."""
    if rel_key.startswith("box_feature_extractor."):
        return "relation_head.box_feature_extractor.head." + rel_key[len("box_feature_extractor."):]
    pooler = "union_feature_extractor.feature_extractor.pooler."
    if rel_key.startswith(pooler):
        return "relation_head.union_feature_extractor." + rel_key[len(pooler):]
    fx = "union_feature_extractor.feature_extractor."
    if rel_key.startswith(fx):
        return "relation_head.union_feature_extractor.head." + rel_key[len(fx):]
    return "relation_head." + rel_key


def sgb_layout(rel_key, t):
    """SGB's layout of an sgg tensor: the Transformer FFN is Conv1d(k=1) in SGB, [out, in, 1]."""
    if ".pos_ffn.w_" in rel_key and rel_key.endswith(".weight"):
        return t.unsqueeze(-1)
    return t


def build(case, cfg_root, num_obj=NUM_OBJ, num_rel=NUM_REL, seed=0, data_root=None):
    predictor, mode, opts, _, _ = CASES[case]
    cfg = tiny_config(data_root or cfg_root, cfg_root, mode, "MODEL.ROI_RELATION_HEAD.PREDICTOR", predictor,
                      *opts, *FROZEN_BN)
    torch.manual_seed(seed)
    return build_sgg_model(cfg, None, num_obj, num_rel), cfg


def sgb_checkpoint(case, model, seed=1):
    """An SGB relation state dict for ``model``'s sizes: the detector (the tested reverse detector mapping)
    and the transcribed relation keys with distinct random values. Returns (state, expected sgg values)."""
    g = torch.Generator().manual_seed(seed)
    own = model.state_dict()
    state = OrderedDict((k, v.clone()) for k, v in sgg_to_sgb_state_dict(model.detector.state_dict()).items())
    for k in state:  # random detector too (small: 18 random layers must not overflow)
        if state[k].is_floating_point():
            state[k] = (torch.rand(state[k].shape, generator=g) + 0.5 if k.endswith("running_var")
                        else 0.05 * torch.randn(state[k].shape, generator=g))
    keys, not_built = sgb_keys(case), CASES[case][4]
    assert len(set(keys)) == len(keys), "duplicate SGB keys in the transcription"
    expect = {}
    for i, rel in enumerate(keys):
        key = "roi_heads.relation." + rel
        if rel in not_built:
            state[key] = torch.randn(3, generator=g)  # a module sgg does not build: any shape
            continue
        target = sgg_name(rel)
        assert target in own, f"{case}: SGB key {rel} has no sgg parameter {target}"
        ref = own[target]
        if ref.dtype == torch.long:
            value = torch.tensor(100 + i) if ref.dim() == 0 else torch.randint(0, 50, ref.shape, generator=g)
        elif "running_var" in rel:
            value = torch.rand(ref.shape, generator=g) + 0.5
        else:
            value = torch.randn(ref.shape, generator=g)
        expect[target] = value
        state[key] = sgb_layout(rel, value)
    for alias in VCTREE_ALIASES:  # SGB saves the second names of one module: the same tensors
        primary = alias.replace("decoderLSTM.embed_layer.", "obj_embed.").replace("decoderLSTM.embed_out_layer.", "out.")
        if "roi_heads.relation." + alias in state and primary not in not_built:
            state["roi_heads.relation." + alias] = state["roi_heads.relation." + primary]
    state["rpn.anchor_generator.cell_anchors.0"] = torch.zeros(3, 4)
    return state, expect


def inputs(mode, n_images=2):
    g = torch.Generator().manual_seed(5)
    out = []
    for i in range(n_images):
        boxes = torch.tensor([[2.0, 3.0, 40.0, 50.0], [20.0, 10.0, 90.0, 60.0], [5.0, 30.0, 60.0, 62.0]])[: 3 - i]
        inst = Instances((64, 96), gt_boxes=Boxes(boxes), gt_classes=torch.randint(1, NUM_OBJ, (len(boxes),), generator=g))
        out.append({"image": (torch.rand(3, 64, 96, generator=g) * 255).to(torch.uint8), "height": 64, "width": 96,
                    "image_id": i, "instances": inst})
    return out


def run_eval(model, mode):
    model.eval()
    with torch.no_grad():
        graphs = model(inputs(mode))
    assert len(graphs) == 2
    return graphs


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_sgb_tensor_lands_at_its_sgg_parameter(case, tmp_path):
    model, _ = build(case, str(tmp_path))
    state, expect = sgb_checkpoint(case, model)
    module_state = OrderedDict(("module." + k, v) for k, v in state.items())  # DDP-saved, as SGB's
    out, report = sgb_to_sgg_state_dict({"model": module_state, "iteration": 3}, model.state_dict())

    not_built = {"roi_heads.relation." + k for k in CASES[case][4]}
    assert report["unplaced"] == [], format_report(report)
    assert set(report["expected"]) == not_built, format_report(report)
    assert report["missing"] == [], format_report(report)
    assert all(k in report["reasons"] for k in report["expected"])
    mapped = dict(report["mapped"])
    for rel in sgb_keys(case):
        key = "roi_heads.relation." + rel
        if key in not_built:
            assert key not in mapped
            continue
        assert mapped[key] == sgg_name(rel), rel
        assert torch.equal(out[sgg_name(rel)], expect[sgg_name(rel)]), rel
    # every relation-head tensor of the sgg model comes from the checkpoint (the transcription is complete)
    rel_targets = {k for k in model.state_dict() if k.startswith("relation_head.")}
    assert rel_targets == set(expect), sorted(rel_targets ^ set(expect))
    # the detector too
    assert {k for k in model.state_dict() if k.startswith("detector.")} <= set(out)

    report2 = load_sgb_relation_checkpoint(model, module_state, "sgb test")
    assert report2["unplaced"] == []
    own = model.state_dict()
    for target, value in expect.items():
        assert torch.equal(own[target], value), target
    graphs = run_eval(model, CASES[case][1])
    for gr in graphs:
        assert all(torch.isfinite(t).all() for t in (gr.rel_scores,) if t.numel())


def test_wrong_shape_names_key_and_shapes(tmp_path):
    model, _ = build("motifs-sgcls", str(tmp_path))
    state, _ = sgb_checkpoint("motifs-sgcls", model)
    state["roi_heads.relation.predictor.post_cat.weight"] = torch.zeros(99, 32)
    with pytest.raises(CheckpointError) as e:
        sgb_to_sgg_state_dict(state, model.state_dict())
    msg = str(e.value)
    assert "roi_heads.relation.predictor.post_cat.weight" in msg and "relation_head.predictor.post_cat.weight" in msg
    assert "(99, 32)" in msg and "(24, 32)" in msg and "CONTEXT_POOLING_DIM" in msg


def test_unknown_relation_key_is_unplaced(tmp_path):
    model, _ = build("imp-predcls", str(tmp_path))
    state, expect = sgb_checkpoint("imp-predcls", model)
    extra = ["roi_heads.relation.predictor.context_layer.mystery.weight",
             "roi_heads.relation.att_feature_extractor.fc6.weight"]
    for k in extra:
        state[k] = torch.ones(2)
    _, report = sgb_to_sgg_state_dict(state, model.state_dict())
    assert report["unplaced"] == extra
    assert set(extra) <= set(report["skipped"]) and not set(extra) & set(report["expected"])
    assert "UNPLACED" in format_report(report)
    with pytest.raises(UnplacedTensorsError) as e:
        load_sgb_relation_checkpoint(model, state, "sgb test")
    assert e.value.unplaced == extra and "attribute model" in str(e.value)
    load_sgb_relation_checkpoint(model, state, "sgb test", allow_unplaced=True)
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in expect.items())


def test_convert_file_for_a_relation_model(tmp_path):
    """convert_checkpoint_file with a relation model's state: an sgg relation checkpoint file, which
    loads as sgg's own; unplaced relation tensors stop it with the relation fix."""
    model, _ = build("penet-sgcls", str(tmp_path))
    state, expect = sgb_checkpoint("penet-sgcls", model)
    src, dst = str(tmp_path / "sgb.pth"), str(tmp_path / "sgg.pth")
    torch.save({"model": state, "iteration": 1}, src)
    report = convert_checkpoint_file(src, dst, model_state=model.state_dict())
    assert report["unplaced"] == [] and report["missing"] == []
    written = torch.load(dst, weights_only=True)["model"]
    assert set(written) == set(model.state_dict())
    assert all(torch.equal(written[k], v) for k, v in expect.items())

    state["roi_heads.relation.predictor.context_layer.obj_ctx_rnn.weight_ih_l0"] = torch.ones(2)  # a Motifs key
    torch.save({"model": state}, src)
    with pytest.raises(UnplacedTensorsError) as e:
        convert_checkpoint_file(src, str(tmp_path / "no.pth"), model_state=model.state_dict())
    assert "MODEL.ROI_RELATION_HEAD.PREDICTOR" in str(e.value) and not os.path.exists(tmp_path / "no.pth")


def test_detector_target_still_skips_relation_keys(tmp_path):
    """A detector target (MODEL.PRETRAINED_DETECTOR_CKPT) keeps the old behaviour: relation keys are
    expected skips."""
    model, _ = build("motifs-sgcls", str(tmp_path))
    state, _ = sgb_checkpoint("motifs-sgcls", model)
    out, report = sgb_to_sgg_state_dict(state, model.detector.state_dict())
    assert report["unplaced"] == [] and report["missing"] == []
    assert set(report["expected"]) == {k for k in state if k.startswith("roi_heads.relation.")}
    assert set(out) == set(model.detector.state_dict())


def test_causal_without_effect_analysis_averages(tmp_path):
    """SGB registers the context averages only with EFFECT_ANALYSIS: they stay at zero (``defaulted``)."""
    model, _ = build("causal-motifs-predcls", str(tmp_path))
    state, _ = sgb_checkpoint("causal-motifs-predcls", model)
    for k in [k for k in state if "context_layer.untreated_" in k]:
        del state[k]
    _, report = sgb_to_sgg_state_dict(state, model.state_dict())
    assert report["missing"] == [] and report["unplaced"] == []
    assert report["defaulted"] == ["relation_head.predictor.context_layer.untreated_edg_feat"]


def test_model_weight_for_test_and_as_initialisation(tmp_path):
    """MODEL.WEIGHT = an SGB relation checkpoint file: load_trained_model (relation_test_net / Predictor;
    class names from DATASETS.TRAIN, SGB files have no metadata) and load_pretrained (training init)."""
    from sgg.engine.loading import load_class_names, load_trained_model

    data = make_synthvg(tmp_path / "data", num_images=8)
    model, cfg = build("transformer-sgcls", str(tmp_path / "out"), data_root=data)
    classes, predicates = load_class_names(cfg)
    model, cfg = build("transformer-sgcls", str(tmp_path / "out"), len(classes), len(predicates), data_root=data)
    state, expect = sgb_checkpoint("transformer-sgcls", model)
    path = str(tmp_path / "sgb_transformer_sgcls.pth")
    torch.save({"model": OrderedDict(("module." + k, v) for k, v in state.items()), "optimizer": {},
                "scheduler": {}, "iteration": 100}, path)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.WEIGHT = path
    cfg.freeze()

    trained = load_trained_model(cfg)
    own = trained.model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in expect.items())
    assert trained.class_names == classes
    run_eval(trained.model, "sgcls")

    # training: the load step leaves MODEL.WEIGHT alone (read once, by the trainer's Checkpointer)
    torch.manual_seed(7)
    fresh = build_sgg_model(cfg, None, len(classes), len(predicates))
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    done = load_pretrained(fresh, cfg)
    assert path not in done.values()
    assert all(torch.equal(fresh.state_dict()[k], before[k]) for k in expect if k.startswith("relation_head."))

    # ... whose load converts the SGB file as load_trained_model does, with the same strictness
    from sgg.checkpoint import CheckpointError, Checkpointer
    from sgg.checkpoint.sgb import UnplacedTensorsError

    Checkpointer(fresh, str(tmp_path / "ck")).load(path, model_only=True)
    own = fresh.state_dict()
    assert all(torch.equal(own[k], v) for k, v in expect.items())
    extra = dict(state, **{"roi_heads.relation.predictor.not_a_layer.weight": torch.zeros(3)})
    torch.save({"model": extra}, str(tmp_path / "extra.pth"))
    with pytest.raises(UnplacedTensorsError, match="not_a_layer"):
        Checkpointer(fresh).load(str(tmp_path / "extra.pth"), model_only=True)
    Checkpointer(fresh).load(str(tmp_path / "extra.pth"), model_only=True, allow_unplaced=True)
    lacking = {k: v for k, v in state.items() if "rel_compress" not in k}
    torch.save({"model": lacking}, str(tmp_path / "lacking.pth"))
    with pytest.raises(CheckpointError, match="lacks .*rel_compress"):
        Checkpointer(fresh).load(str(tmp_path / "lacking.pth"), model_only=True)


def test_convert_tool_writes_a_relation_checkpoint_with_metadata(tmp_path, capsys):
    """tools/convert_sgb_checkpoint.py on a whole SGB relation model: with the config, an sgg
    relation checkpoint carrying the names of DATASETS.TRAIN (SGB files have none), which
    load_trained_model then loads without the dataset; without a config, a clear error."""
    from sgg.cli.convert_sgb_checkpoint import main
    from sgg.engine.loading import load_class_names, load_trained_model

    data = make_synthvg(tmp_path / "data", num_images=8)
    _, cfg = build("causal-motifs-predcls", str(tmp_path / "out"), data_root=data)
    classes, predicates = load_class_names(cfg)
    model, cfg = build("causal-motifs-predcls", str(tmp_path / "out"), len(classes), len(predicates),
                       data_root=data)
    state, expect = sgb_checkpoint("causal-motifs-predcls", model)
    for k in [k for k in state if "context_layer.untreated_" in k]:
        del state[k]  # SGB registers these only with EFFECT_ANALYSIS: the converted file gets the initial values
    src, dst = str(tmp_path / "sgb_causal.pth"), str(tmp_path / "causal_sgg.pth")
    torch.save({"model": OrderedDict(("module." + k, v) for k, v in state.items()), "iteration": 9}, src)
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(cfg.dump())

    assert main(["--input", src, "--output", dst]) == 1
    assert "--config-file" in capsys.readouterr().err and not os.path.exists(dst)

    assert main(["--input", src, "--output", dst, "--config-file", str(cfg_file)]) == 0
    written = torch.load(dst, weights_only=False)
    assert written["metadata"]["class_names"] == classes
    assert written["metadata"]["predicate_names"] == predicates
    assert set(written["model"]) == set(model.state_dict())
    assert all(torch.equal(written["model"][k], v) for k, v in expect.items() if "untreated_" not in k)

    other = cfg.clone()
    other.defrost()
    other.DATASETS.TRAIN = ("no_such_dataset_train",)  # the names now come from the checkpoint
    other.freeze()
    trained = load_trained_model(other, dst)
    own = trained.model.state_dict()
    assert trained.class_names == classes
    assert all(torch.equal(own[k], written["model"][k]) for k in own)

    # a tensor of the model missing from the file: an error, nothing written
    lacking = {k: v for k, v in state.items() if "ctx_compress" not in k}
    torch.save({"model": lacking}, src)
    assert main(["--input", src, "--output", str(tmp_path / "no.pth"), "--config-file", str(cfg_file)]) == 1
    assert "ctx_compress" in capsys.readouterr().err and not os.path.exists(tmp_path / "no.pth")
