"""Default configuration tree.

Key names follow Scene-Graph-Benchmark.pytorch (SGB) so that its YAML files and command-line
overrides (``MODEL.ROI_RELATION_HEAD.USE_GT_BOX True``, ``SOLVER.IMS_PER_BATCH 12``, ...) work
unchanged. Every key of every component is declared here, as plain yacs: loading a config imports
no torch, and a key is known (and type-checked) wherever a config is loaded. Research code that
adds its own component registers its keys with :func:`register_config_extension`.

Defaults are SGB's where SGB has the key. Keys that SGB read but that have no effect here are kept
(so old configs load) and documented as such.
"""
from __future__ import annotations

from typing import Callable, List

from yacs.config import CfgNode as CN

_C = CN()

# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------
_C.MODEL = CN()
_C.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
_C.MODEL.DEVICE = "cuda"  # falls back to cpu with a warning when CUDA is unavailable
_C.MODEL.RPN_ONLY = False
_C.MODEL.MASK_ON = False
_C.MODEL.RETINANET_ON = False
_C.MODEL.KEYPOINT_ON = False
_C.MODEL.ATTRIBUTE_ON = False
_C.MODEL.RELATION_ON = True
_C.MODEL.FLIP_AUG = False
_C.MODEL.CLS_AGNOSTIC_BBOX_REG = False
# Initial weights of the whole model (a local file); "" = none.
_C.MODEL.WEIGHT = ""
# Detector checkpoint used to initialise relation training (SGB: pretrained_faster_rcnn/model_final.pth).
_C.MODEL.PRETRAINED_DETECTOR_CKPT = ""

_C.MODEL.BACKBONE = CN()
# R-50-FPN, R-101-FPN, X-101-32x8d-FPN (via RESNETS.NUM_GROUPS/WIDTH_PER_GROUP), or "timm:<name>".
_C.MODEL.BACKBONE.CONV_BODY = "R-50-FPN"
_C.MODEL.BACKBONE.FREEZE_CONV_BODY_AT = 2
# Local file with ImageNet weights for the backbone ("" = random init; nothing is downloaded).
_C.MODEL.BACKBONE.WEIGHTS = ""

_C.MODEL.RESNETS = CN()
_C.MODEL.RESNETS.NUM_GROUPS = 1
_C.MODEL.RESNETS.WIDTH_PER_GROUP = 64
_C.MODEL.RESNETS.STRIDE_IN_1X1 = True
_C.MODEL.RESNETS.TRANS_FUNC = "BottleneckWithFixedBatchNorm"
_C.MODEL.RESNETS.STEM_FUNC = "StemWithFixedBatchNorm"
_C.MODEL.RESNETS.RES5_DILATION = 1
_C.MODEL.RESNETS.BACKBONE_OUT_CHANNELS = 256
_C.MODEL.RESNETS.RES2_OUT_CHANNELS = 256
_C.MODEL.RESNETS.STEM_OUT_CHANNELS = 64

_C.MODEL.FPN = CN()
_C.MODEL.FPN.USE_GN = False
_C.MODEL.FPN.USE_RELU = False

_C.MODEL.RPN = CN()
_C.MODEL.RPN.USE_FPN = True
_C.MODEL.RPN.ANCHOR_SIZES = (32, 64, 128, 256, 512)
_C.MODEL.RPN.ANCHOR_STRIDE = (4, 8, 16, 32, 64)
_C.MODEL.RPN.ASPECT_RATIOS = (0.23232838, 0.63365731, 1.28478321, 3.15089189)
_C.MODEL.RPN.STRADDLE_THRESH = 0
_C.MODEL.RPN.FG_IOU_THRESHOLD = 0.7
_C.MODEL.RPN.BG_IOU_THRESHOLD = 0.3
_C.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 256
_C.MODEL.RPN.POSITIVE_FRACTION = 0.5
_C.MODEL.RPN.PRE_NMS_TOP_N_TRAIN = 6000
_C.MODEL.RPN.PRE_NMS_TOP_N_TEST = 6000
_C.MODEL.RPN.POST_NMS_TOP_N_TRAIN = 1000
_C.MODEL.RPN.POST_NMS_TOP_N_TEST = 1000
_C.MODEL.RPN.NMS_THRESH = 0.7
_C.MODEL.RPN.MIN_SIZE = 0
_C.MODEL.RPN.FPN_POST_NMS_TOP_N_TRAIN = 1000
_C.MODEL.RPN.FPN_POST_NMS_TOP_N_TEST = 1000
_C.MODEL.RPN.FPN_POST_NMS_PER_BATCH = False
_C.MODEL.RPN.RPN_HEAD = "SingleConvRPNHead"

_C.MODEL.ROI_HEADS = CN()
_C.MODEL.ROI_HEADS.USE_FPN = True
_C.MODEL.ROI_HEADS.FG_IOU_THRESHOLD = 0.5
_C.MODEL.ROI_HEADS.BG_IOU_THRESHOLD = 0.3
_C.MODEL.ROI_HEADS.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
_C.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 256
_C.MODEL.ROI_HEADS.POSITIVE_FRACTION = 0.5
_C.MODEL.ROI_HEADS.SCORE_THRESH = 0.01
_C.MODEL.ROI_HEADS.NMS = 0.3
_C.MODEL.ROI_HEADS.POST_NMS_PER_CLS_TOPN = 300
_C.MODEL.ROI_HEADS.NMS_FILTER_DUPLICATES = True
_C.MODEL.ROI_HEADS.DETECTIONS_PER_IMG = 80
_C.MODEL.ROI_HEADS.MIN_DETECTIONS_PER_IMG = 0

_C.MODEL.ROI_BOX_HEAD = CN()
_C.MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR = "FPN2MLPFeatureExtractor"
_C.MODEL.ROI_BOX_HEAD.PREDICTOR = "FPNPredictor"
_C.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
_C.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = 2
_C.MODEL.ROI_BOX_HEAD.POOLER_SCALES = (0.25, 0.125, 0.0625, 0.03125)
_C.MODEL.ROI_BOX_HEAD.NUM_CLASSES = 151
_C.MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM = 4096
_C.MODEL.ROI_BOX_HEAD.USE_GN = False
_C.MODEL.ROI_BOX_HEAD.DILATION = 1
_C.MODEL.ROI_BOX_HEAD.CONV_HEAD_DIM = 256
_C.MODEL.ROI_BOX_HEAD.NUM_STACKED_CONVS = 4

_C.MODEL.ROI_ATTRIBUTE_HEAD = CN()
_C.MODEL.ROI_ATTRIBUTE_HEAD.NUM_ATTRIBUTES = 201
_C.MODEL.ROI_ATTRIBUTE_HEAD.SHARE_BOX_FEATURE_EXTRACTOR = True

_C.MODEL.ROI_RELATION_HEAD = CN()
_C.MODEL.ROI_RELATION_HEAD.PREDICTOR = "MotifPredictor"
_C.MODEL.ROI_RELATION_HEAD.FEATURE_EXTRACTOR = "RelationFeatureExtractor"
_C.MODEL.ROI_RELATION_HEAD.POOLING_ALL_LEVELS = True
_C.MODEL.ROI_RELATION_HEAD.NUM_CLASSES = 51
_C.MODEL.ROI_RELATION_HEAD.BATCH_SIZE_PER_IMAGE = 1024
_C.MODEL.ROI_RELATION_HEAD.POSITIVE_FRACTION = 0.25
# The protocol: PredCls = GT box + GT label, SGCls = GT box, SGDet = neither.
_C.MODEL.ROI_RELATION_HEAD.USE_GT_BOX = True
_C.MODEL.ROI_RELATION_HEAD.USE_GT_OBJECT_LABEL = False
_C.MODEL.ROI_RELATION_HEAD.EMBED_DIM = 200
_C.MODEL.ROI_RELATION_HEAD.CONTEXT_DROPOUT_RATE = 0.2
_C.MODEL.ROI_RELATION_HEAD.CONTEXT_HIDDEN_DIM = 512
_C.MODEL.ROI_RELATION_HEAD.CONTEXT_POOLING_DIM = 4096
_C.MODEL.ROI_RELATION_HEAD.CONTEXT_OBJ_LAYER = 1
_C.MODEL.ROI_RELATION_HEAD.CONTEXT_REL_LAYER = 1
_C.MODEL.ROI_RELATION_HEAD.LABEL_SMOOTHING_LOSS = False
_C.MODEL.ROI_RELATION_HEAD.PREDICT_USE_VISION = True
_C.MODEL.ROI_RELATION_HEAD.PREDICT_USE_BIAS = True
_C.MODEL.ROI_RELATION_HEAD.REQUIRE_BOX_OVERLAP = False
_C.MODEL.ROI_RELATION_HEAD.NUM_SAMPLE_PER_GT_REL = 4
_C.MODEL.ROI_RELATION_HEAD.ADD_GTBOX_TO_PROPOSAL_IN_TRAIN = True

# ---------------------------------------------------------------------------------------------
# Input
# ---------------------------------------------------------------------------------------------
_C.INPUT = CN()
_C.INPUT.MIN_SIZE_TRAIN = (600,)
_C.INPUT.MAX_SIZE_TRAIN = 1000
_C.INPUT.MIN_SIZE_TEST = 600
_C.INPUT.MAX_SIZE_TEST = 1000
# SGB's detector convention: BGR in 0..255, mean subtracted, std 1.
_C.INPUT.PIXEL_MEAN = [102.9801, 115.9465, 122.7717]
_C.INPUT.PIXEL_STD = [1.0, 1.0, 1.0]
_C.INPUT.TO_BGR255 = True
_C.INPUT.BRIGHTNESS = 0.0
_C.INPUT.CONTRAST = 0.0
_C.INPUT.SATURATION = 0.0
_C.INPUT.HUE = 0.0
_C.INPUT.VERTICAL_FLIP_PROB_TRAIN = 0.0

# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------
_C.DATASETS = CN()
# Root folder of the dataset files. "" = $SGG_DATA_DIR if set, else ./datasets.
_C.DATASETS.DATA_DIR = ""
# Dataset names (see sgg.data.catalog): SGB's VG150 names or "synthvg_<profile>_<split>".
_C.DATASETS.TRAIN = ("VG_stanford_filtered_with_attribute_train",)
_C.DATASETS.VAL = ("VG_stanford_filtered_with_attribute_val",)
_C.DATASETS.TEST = ("VG_stanford_filtered_with_attribute_test",)
# Number of train images carved out as the validation split (SGB: 5000).
_C.DATASETS.NUM_VAL_IMAGES = 5000
# Zero-shot triplet file for zR@K ("" = the dataset's zeroshot_triplet.pytorch if present,
# else computed as test triplets never seen in train).
_C.DATASETS.ZEROSHOT_FILE = ""

_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 4
_C.DATALOADER.SIZE_DIVISIBILITY = 32
_C.DATALOADER.ASPECT_RATIO_GROUPING = True

# ---------------------------------------------------------------------------------------------
# Solver
# ---------------------------------------------------------------------------------------------
_C.SOLVER = CN()
_C.SOLVER.MAX_ITER = 40000
_C.SOLVER.BASE_LR = 0.01
_C.SOLVER.BIAS_LR_FACTOR = 1.0
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.WEIGHT_DECAY = 0.0001
_C.SOLVER.WEIGHT_DECAY_BIAS = 0.0
_C.SOLVER.CLIP_NORM = 5.0
_C.SOLVER.GRAD_NORM_CLIP = 5.0
_C.SOLVER.GAMMA = 0.1
_C.SOLVER.STEPS = (10000, 16000)
_C.SOLVER.WARMUP_FACTOR = 0.1
_C.SOLVER.WARMUP_ITERS = 500
_C.SOLVER.WARMUP_METHOD = "linear"
_C.SOLVER.CHECKPOINT_PERIOD = 2000
_C.SOLVER.PRINT_GRAD_FREQ = 4000
_C.SOLVER.TO_VAL = True
_C.SOLVER.PRE_VAL = False
_C.SOLVER.VAL_PERIOD = 2000
_C.SOLVER.UPDATE_SCHEDULE_DURING_LOAD = False
# Global batch over all ranks.
_C.SOLVER.IMS_PER_BATCH = 12
# SGB multiplies BASE_LR by IMS_PER_BATCH without saying so. True reproduces that (the effective
# LR is logged at start-up); False uses BASE_LR as given.
_C.SOLVER.SCALE_LR_BY_BATCH = True
_C.SOLVER.SCHEDULE = CN()
_C.SOLVER.SCHEDULE.TYPE = "WarmupReduceLROnPlateau"  # or WarmupMultiStepLR, WarmupCosineLR
_C.SOLVER.SCHEDULE.PATIENCE = 2
_C.SOLVER.SCHEDULE.THRESHOLD = 0.001
_C.SOLVER.SCHEDULE.COOLDOWN = 0
_C.SOLVER.SCHEDULE.FACTOR = 0.1
_C.SOLVER.SCHEDULE.MAX_DECAY_STEP = 3

# ---------------------------------------------------------------------------------------------
# Test
# ---------------------------------------------------------------------------------------------
_C.TEST = CN()
_C.TEST.IMS_PER_BATCH = 8
_C.TEST.DETECTIONS_PER_IMG = 80
_C.TEST.ALLOW_LOAD_FROM_CACHE = False
_C.TEST.SAVE_PROPOSALS = False
_C.TEST.CUSTUM_EVAL = False
_C.TEST.CUSTUM_PATH = "."
# Recall cut-offs reported by the evaluator.
_C.TEST.TOP_K = (20, 50, 100)
# Draw the predicted scene graph of the first N images of each test split (PNG + JSON next to the
# split's relation_metrics; 0 = none).
_C.TEST.DRAW_IMAGES = 1
_C.TEST.RELATION = CN()
_C.TEST.RELATION.MULTIPLE_PREDS = False
_C.TEST.RELATION.IOU_THRESHOLD = 0.5
_C.TEST.RELATION.REQUIRE_OVERLAP = False
_C.TEST.RELATION.LATER_NMS_PREDICTION_THRES = 0.5
_C.TEST.RELATION.SYNC_GATHER = True
# PE-Net's rel_nms evaluation of PredCls/SGCls (any predictor; SGDet ignores it): per-predicate
# greedy NMS over pairs whose subject and object boxes overlap (IoU >= this, same classes), then
# ranking by rel score x subject score squared. PE-Net's README numbers used 0.6; 0 = off (SGB).
_C.TEST.RELATION.REL_NMS = 0.0

# ---------------------------------------------------------------------------------------------
# Misc
# ---------------------------------------------------------------------------------------------
_C.OUTPUT_DIR = "./output/relation_baseline"
_C.DETECTED_SGG_DIR = "."
_C.GLOVE_DIR = "."
# float32 | float16 | bfloat16 (torch.amp autocast; GradScaler for float16).
_C.DTYPE = "float32"
_C.SEED = 0
_C.PATHS_CATALOG = ""  # accepted for SGB configs; the catalog lives in sgg.data.catalog

# =============================================================================================
# Keys that SGB does not have, one block per component (documented where they are declared).
# =============================================================================================

# ---------------------------------------------------------------------------------------------
# Detector (sgg.modeling.detector)
# ---------------------------------------------------------------------------------------------
# SGB checkpoints want FROZEN_BN_EPS 0.0, LEGACY_BOX_CODING True, ALIGNED_ROI False with SGB's INPUT
# defaults (BGR 0..255, mean subtracted); see sgg.checkpoint.sgb for the full list.
_C.MODEL.DETECTOR = CN()
# Epsilon of the backbone's frozen batch norms; 0.0 is maskrcnn_benchmark's BN (SGB checkpoints).
_C.MODEL.DETECTOR.FROZEN_BN_EPS = 1e-5
# maskrcnn_benchmark's "+1" pixel conventions (anchors, box coder, IoU, NMS, clipping, pooler levels).
_C.MODEL.DETECTOR.LEGACY_BOX_CODING = False
# Half-pixel-aligned ROIAlign; False = the legacy ROIAlign of maskrcnn_benchmark (SGB checkpoints).
_C.MODEL.DETECTOR.ALIGNED_ROI = True
# Backbone normalisation: FrozenBN (SGB, with pretrained weights), GN (from scratch; pair with
# MODEL.FPN.USE_GN True and FREEZE_CONV_BODY_AT 0), BN, SyncBN.
_C.MODEL.DETECTOR.BACKBONE_NORM = "FrozenBN"
# Backbone and RPN head in NHWC memory format (faster on tensor-core GPUs; same results up to
# floating-point summation order).
_C.MODEL.DETECTOR.CHANNELS_LAST = False
# timm feature levels to use (() = those at strides 4, 8, 16, 32).
_C.MODEL.BACKBONE.TIMM_OUT_INDICES = ()
# Extra timm.create_model arguments as a Python dict literal, e.g. "{'drop_path_rate': 0.1}".
_C.MODEL.BACKBONE.TIMM_KWARGS = ""

# ---------------------------------------------------------------------------------------------
# Relation head (sgg.modeling.relation)
# ---------------------------------------------------------------------------------------------
# Pairs per chunk of union-feature computation (memory bound).
_C.MODEL.ROI_RELATION_HEAD.UNION_CHUNK_SIZE = 4096
# Frame of the 2-channel subject/object rectangle masks: "image" (SGB: boxes of the whole image
# drawn on a 27x27 grid) or "union" (neural-motifs: boxes drawn inside the pair's union box).
_C.MODEL.ROI_RELATION_HEAD.RECT_MASK_FRAME = "image"
# SGDet training, which proposal label must equal the GT label for a proposal to match a GT box:
# "assigned" (SGB: the label of its best-IoU GT, IoU >= FG_IOU_THRESHOLD) or "detector".
_C.MODEL.ROI_RELATION_HEAD.SGDET_MATCH_LABELS = "assigned"
# Which proposal pairs (at most NUM_SAMPLE_PER_GT_REL) a GT relation yields in SGDet training:
# "top" (highest subject IoU x object IoU) or "iou_weighted" (SGB: drawn without replacement with
# probability proportional to it).
_C.MODEL.ROI_RELATION_HEAD.SGDET_GT_REL_SAMPLING = "top"
# Keep only the best k relations per image at test (0 = all pairs; the no-graph-constraint
# metrics need them all).
_C.MODEL.ROI_RELATION_HEAD.TEST_REL_TOP_K = 0
# Cache the GloVe rows of the class names under OUTPUT_DIR.
_C.MODEL.ROI_RELATION_HEAD.WORD_VECTOR_CACHE = False
# Test-time logit adjustment of the predicate logits by the train predicate frequency,
# logits - tau * log(prior) (sgg.modeling.relation.debias; 0 = off). Trades R@K for mR@K.
_C.MODEL.ROI_RELATION_HEAD.LOGIT_ADJUSTMENT_TAU = 0.0

# TransformerPredictor (SGB's MODEL.ROI_RELATION_HEAD.TRANSFORMER).
_C.MODEL.ROI_RELATION_HEAD.TRANSFORMER = CN()
_C.MODEL.ROI_RELATION_HEAD.TRANSFORMER.DROPOUT_RATE = 0.1
_C.MODEL.ROI_RELATION_HEAD.TRANSFORMER.OBJ_LAYER = 4
_C.MODEL.ROI_RELATION_HEAD.TRANSFORMER.REL_LAYER = 2
_C.MODEL.ROI_RELATION_HEAD.TRANSFORMER.NUM_HEAD = 8
_C.MODEL.ROI_RELATION_HEAD.TRANSFORMER.KEY_DIM = 64
_C.MODEL.ROI_RELATION_HEAD.TRANSFORMER.VAL_DIM = 64
_C.MODEL.ROI_RELATION_HEAD.TRANSFORMER.INNER_DIM = 2048
# VCTreePredictor: tree score "sgb" (the reference's saturated bi_freq_prior, its published numbers)
# or "paper" (sigmoid(vision) x P(related | classes), the paper's form); sgg.modeling.relation.predictors.vctree.
_C.MODEL.ROI_RELATION_HEAD.VCTREE = CN()
_C.MODEL.ROI_RELATION_HEAD.VCTREE.TREE_SCORE = "sgb"
# PENetPredictor: the reference hard-codes the width of its semantic space (mlp_dim 2048; vis2sem and
# project_head are 2x that). 0 = the reference's 2048; a smaller value makes a CPU-sized PE-Net.
_C.MODEL.ROI_RELATION_HEAD.PENET = CN()
_C.MODEL.ROI_RELATION_HEAD.PENET.MLP_DIM = 0
# CausalAnalysisPredictor (SGB's MODEL.ROI_RELATION_HEAD.CAUSAL): context layer motifs | vctree |
# vtranse, fusion sum | gate, test-time effect none | TDE | NIE | TE.
_C.MODEL.ROI_RELATION_HEAD.CAUSAL = CN()
_C.MODEL.ROI_RELATION_HEAD.CAUSAL.CONTEXT_LAYER = "motifs"
_C.MODEL.ROI_RELATION_HEAD.CAUSAL.FUSION_TYPE = "sum"
_C.MODEL.ROI_RELATION_HEAD.CAUSAL.EFFECT_TYPE = "none"
_C.MODEL.ROI_RELATION_HEAD.CAUSAL.EFFECT_ANALYSIS = False
_C.MODEL.ROI_RELATION_HEAD.CAUSAL.SPATIAL_FOR_VISION = False
_C.MODEL.ROI_RELATION_HEAD.CAUSAL.SEPARATE_SPATIAL = False
# VTransE context in PredCls: "sgb" (the reference: predicted labels reach the bias and the output,
# the GT labels are ignored) or "protocol" (the GT labels, like every other context).
_C.MODEL.ROI_RELATION_HEAD.CAUSAL.VTRANSE_LABELS = "sgb"

# ---------------------------------------------------------------------------------------------
# Depth input (sgg.data.mapper)
# ---------------------------------------------------------------------------------------------
# Read depth_file (the dataset's depth/ folder) and return "depth" with each image.
_C.INPUT.LOAD_DEPTH = False
# Depth resampling on resize: "nearest" | "linear".
_C.INPUT.DEPTH_INTERP = "nearest"
# Factor applied to stored depth values (e.g. 0.001 for PNG in mm; the encodings want metres).
_C.INPUT.DEPTH_SCALE = 1.0
# "" | "hha" | "normalized": return depth as the 3-channel encoding of
# sgg.data.depth_encoding.encode_depth (at the original resolution, then resized with the image).
_C.INPUT.DEPTH_ENCODING = ""
# HHA back-projection focal length in pixels of the original image (0 = its width).
_C.INPUT.DEPTH_FOCAL = 0.0

# ---------------------------------------------------------------------------------------------
# Solver / trainer (sgg.solver, sgg.engine)
# ---------------------------------------------------------------------------------------------
# "SGD" (SGB) or "AdamW".
_C.SOLVER.OPTIMIZER = "SGD"
# AdamW betas.
_C.SOLVER.BETAS = (0.9, 0.999)
# LR multiplier for parameters whose name starts with BACKBONE_PREFIX (1.0 = no change).
_C.SOLVER.BACKBONE_PREFIX = "backbone."
_C.SOLVER.BACKBONE_LR_FACTOR = 1.0
# (regex, factor) pairs: the first regex found in a parameter's name (re.search) multiplies its
# LR, after the bias and backbone rules. () = none.
_C.SOLVER.PARAM_LR_FACTORS = ()
# Exponential moving average of the weights (0 = off); the EMA weights are used for validation
# and kept in checkpoints.
_C.SOLVER.EMA_DECAY = 0.0
# Console / metrics.json / tensorboard every LOG_PERIOD iterations.
_C.SOLVER.LOG_PERIOD = 20
_C.SOLVER.TENSORBOARD = True
# DistributedDataParallel(find_unused_parameters=...); SGB used True for relation training.
_C.SOLVER.FIND_UNUSED_PARAMETERS = True
# Validation metric that drives WarmupReduceLROnPlateau and picks model_best.pth (higher = better).
# Looked up in the evaluator's result dict (nested dicts flattened with "/"; a unique key ending
# in "/<name>" also matches).
_C.SOLVER.VAL_METRIC = "R@100"
# WarmupCosineLR: final LR = BASE_LR * MIN_LR_FACTOR.
_C.SOLVER.SCHEDULE.MIN_LR_FACTOR = 0.0

# ---------------------------------------------------------------------------------------------
# One-stage composite-field model (MODEL.META_ARCHITECTURE "OneStageSGG", sgg.modeling.onestage)
# ---------------------------------------------------------------------------------------------
_C.MODEL.ONESTAGE = CN()
# "R-18" | "R-34" | "R-50" | "R-101" (torchvision ResNet, last stage dilated, stride 16) or
# "timm:<name>" (e.g. "timm:swin_small_patch4_window7_224", + a one-level FPN to stride 16).
_C.MODEL.ONESTAGE.BACKBONE = "R-50"
# A local weight file for the backbone (never downloaded; read by the load step).
_C.MODEL.ONESTAGE.BACKBONE_WEIGHTS = ""
# "BN" | "FrozenBN" | "GN" | "SyncBN".
_C.MODEL.ONESTAGE.BACKBONE_NORM = "BN"
_C.MODEL.ONESTAGE.FREEZE_AT = 0
# Extra timm.create_model arguments as a dict literal.
_C.MODEL.ONESTAGE.TIMM_KWARGS = ""
# A norm after the timm backbones' FPN output conv ("BN" for from-scratch training).
_C.MODEL.ONESTAGE.FPN_NORM = ""
# Heads: trunks "conv" | "deform" | "transformer"; HEAD_CONVS for conv and deform trunks;
# HEAD_NORM "" | "BN" | "GN".
_C.MODEL.ONESTAGE.OBJ_TRUNK = "conv"
_C.MODEL.ONESTAGE.REL_TRUNK = "conv"
_C.MODEL.ONESTAGE.HEAD_WIDTH = 256
_C.MODEL.ONESTAGE.HEAD_CONVS = 2
_C.MODEL.ONESTAGE.HEAD_NORM = ""
_C.MODEL.ONESTAGE.TRANSFORMER_LAYERS = 6
_C.MODEL.ONESTAGE.TRANSFORMER_HEADS = 8
# "auto" (torchvision's deformable conv on CUDA, the grid_sample one elsewhere) | "torchvision" | "sampled".
_C.MODEL.ONESTAGE.DEFORM_IMPL = "auto"
# Targets: CenterNet radius overlap; the positive part of a subject->object segment is
# [REL_MARGIN, 1 - REL_MARGIN].
_C.MODEL.ONESTAGE.MIN_OVERLAP = 0.7
_C.MODEL.ONESTAGE.REL_MARGIN = 0.3
# Loss weights.
_C.MODEL.ONESTAGE.LOSS_OBJ_HEATMAP = 1.0
_C.MODEL.ONESTAGE.LOSS_OBJ_OFFSET = 1.0
_C.MODEL.ONESTAGE.LOSS_OBJ_SIZE = 0.1
_C.MODEL.ONESTAGE.LOSS_REL_HEATMAP = 1.0
_C.MODEL.ONESTAGE.LOSS_REL_VECTOR = 1.0
_C.MODEL.ONESTAGE.LOSS_REL_SCALE = 1.0
# Decoding: objects kept, relation field threshold, relations kept (0 = all pairs), SGCls IoU;
# PAIR_SCORE_FILTER: the reference's SGDet/SGCls rule keeping a relation candidate only when its
# score > min(subject score, object score) / 2.
_C.MODEL.ONESTAGE.TOPK_OBJECTS = 100
_C.MODEL.ONESTAGE.REL_THRESHOLD = 0.1
_C.MODEL.ONESTAGE.MAX_RELATIONS = 0
_C.MODEL.ONESTAGE.SGCLS_IOU = 0.5
_C.MODEL.ONESTAGE.PAIR_SCORE_FILTER = True
# At inference on a CUDA device, replay the field network as a CUDA graph captured per padded
# batch shape (sgg.utils.cuda_graph.CUDAGraphRunner; the decoder stays eager).
_C.MODEL.ONESTAGE.CUDA_GRAPHS = False

# ---------------------------------------------------------------------------------------------
# HML: hierarchical memory learning (training method "hml", sgg.distill.hml). SGB-HML's own names
# first; they only matter with MODEL.HML.ENABLED.
# ---------------------------------------------------------------------------------------------
# Weight each predicate's distillation term by the parent's per-predicate recall on validation.
_C.MODEL.USE_CONFIDENCE = False
# Softmax temperature T of the prediction distillation.
_C.MODEL.DISTILL_TEMPERATURE = 2.0
# λ of the parameter anchoring.
_C.SOLVER.LAMBDA_FOR_PARAM = 1.0
# EMA weight of the newest batch in the Fisher estimate.
_C.SOLVER.ALPHA_FOR_FISHER = 0.5
# Anchoring penalty: "l2" (squared) or "l1" (absolute difference).
_C.SOLVER.DISTILL_TYPE = "l2"
_C.MODEL.HML = CN()
# Train with HML (the single switch).
_C.MODEL.HML.ENABLED = False
# 0 = stage 1 then stage 2 in one command; 1 = stage 1 only (+ Fisher, stage files); 2 = stage 2
# only, from the stage files in STAGE1_DIR.
_C.MODEL.HML.STAGE = 0
# "frequency" (the NUM_COARSE most frequent train predicates are coarse), "dataset" (the
# predicate_hierarchy.json of the train dataset's folder) or the path of a JSON hierarchy file.
_C.MODEL.HML.HIERARCHY = "frequency"
_C.MODEL.HML.NUM_COARSE = 10
# β of the class-balanced stage-2 weights (0 = unweighted).
_C.MODEL.HML.CLASS_BALANCE_BETA = 0.999
# Share of SOLVER.MAX_ITER given to stage 1 when STAGE is 0.
_C.MODEL.HML.STAGE1_ITER_FRACTION = 0.5
# Stage-1 training batches (per rank) of the Fisher estimate.
_C.MODEL.HML.FISHER_BATCHES = 100
# Stage 2 starts from a fresh relation head (the released code) instead of the stage-1 weights.
_C.MODEL.HML.FRESH_INIT_STAGE2 = False
# Weight of loss_distill.
_C.MODEL.HML.DISTILL_WEIGHT = 1.0
# The K of the per-predicate recall R@K used as confidence.
_C.MODEL.HML.CONFIDENCE_K = 100
# Where stage 1 writes its checkpoints and the stage files ("" = OUTPUT_DIR/stage1).
_C.MODEL.HML.STAGE1_DIR = ""

# ---------------------------------------------------------------------------------------------
# STDG depth teacher (training method "stdg", sgg.distill.depth_teacher)
# ---------------------------------------------------------------------------------------------
_C.MODEL.STDG = CN()
# "" (plain RGB model), "depth" (stage 1: the one-stage model on the depth encoding) or "combine"
# (stage 2: RGB student + frozen depth teacher).
_C.MODEL.STDG.MODE = ""
# combine: the stage-1 checkpoint file, or its OUTPUT_DIR; its EMA weights when it has them.
_C.MODEL.STDG.TEACHER_WEIGHTS = ""
# Weight of the masked offset MSE (needs a deform trunk); teacher offsets with |offset| >=
# OFFSET_MASK (feature cells) are left out of it.
_C.MODEL.STDG.OFFSET_WEIGHT = 1.0
_C.MODEL.STDG.OFFSET_MASK = 10.0
# Weight of the MSE between the backbone feature maps (0 = off).
_C.MODEL.STDG.FEATURE_WEIGHT = 0.0
# Log the teacher's field losses on each batch (teacher_*).
_C.MODEL.STDG.LOG_TEACHER_LOSSES = True
# Normalisation of the depth encoding (already in [0, 1]) for the depth model.
_C.MODEL.STDG.DEPTH_PIXEL_MEAN = [0.0, 0.0, 0.0]
_C.MODEL.STDG.DEPTH_PIXEL_STD = [1.0, 1.0, 1.0]

_EXTENSIONS: List[Callable[[CN], None]] = []


def register_config_extension(fn: Callable[[CN], None]) -> Callable[[CN], None]:
    """Register ``fn(cfg)`` that adds keys of a component defined OUTSIDE ``sgg`` (research code)
    to the defaults; usable as a decorator. Every ``sgg`` component declares its keys above."""
    if fn not in _EXTENSIONS:
        _EXTENSIONS.append(fn)
    return fn


def get_default_config() -> CN:
    """A fresh, mutable copy of the defaults (plus any registered extension)."""
    cfg = _C.clone()
    for fn in _EXTENSIONS:
        fn(cfg)
    return cfg
