"""Default configuration tree.

Key names follow Scene-Graph-Benchmark.pytorch (SGB) so that its YAML files and command-line
overrides (``MODEL.ROI_RELATION_HEAD.USE_GT_BOX True``, ``SOLVER.IMS_PER_BATCH 12``, ...) work
unchanged. Components add their own subtrees with an ``add_*_config(cfg)`` function registered
through :func:`register_config_extension`; :func:`get_default_config` applies all of them.

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
_C.TEST.RELATION = CN()
_C.TEST.RELATION.MULTIPLE_PREDS = False
_C.TEST.RELATION.IOU_THRESHOLD = 0.5
_C.TEST.RELATION.REQUIRE_OVERLAP = False
_C.TEST.RELATION.LATER_NMS_PREDICTION_THRES = 0.5
_C.TEST.RELATION.SYNC_GATHER = True

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

_EXTENSIONS: List[Callable[[CN], None]] = []


def register_config_extension(fn: Callable[[CN], None]) -> Callable[[CN], None]:
    """Register ``fn(cfg)`` that adds a component's subtree to the defaults. Usable as decorator."""
    if fn not in _EXTENSIONS:
        _EXTENSIONS.append(fn)
    return fn


# Modules whose import registers a config extension. Importing them here (lazily, at call time)
# makes every component's keys known wherever a config is loaded, e.g. a saved config.yaml.
_COMPONENT_MODULES = (
    "sgg.solver",
    "sgg.data.mapper",
    "sgg.modeling.detector",
    "sgg.modeling.relation",
    "sgg.modeling.meta_arch.one_stage",
    "sgg.distill",
)


def get_default_config() -> CN:
    """A fresh, mutable copy of the defaults with every registered extension applied."""
    import importlib

    for name in _COMPONENT_MODULES:
        importlib.import_module(name)
    cfg = _C.clone()
    for fn in _EXTENSIONS:
        fn(cfg)
    return cfg
