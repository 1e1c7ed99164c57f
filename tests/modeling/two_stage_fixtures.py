"""Shared helpers of the two-stage tests: a tiny SynthVG folder and tiny configs (R-18-FPN with 8
FPN channels, 64-128 px images, a small Motifs head), so a forward pass takes ~0.1 s on one CPU
thread."""
from __future__ import annotations

import contextlib
import os
from typing import Iterator, List, Sequence

import torch

DATASET = "synthvg_tiny"
PROTOCOLS = ("predcls", "sgcls", "sgdet")


#: TransformerPredictor at tiny sizes (its SGB sizes are config keys)
TINY_TRANSFORMER_OPTS = ["MODEL.ROI_RELATION_HEAD.TRANSFORMER.OBJ_LAYER", "1",
                         "MODEL.ROI_RELATION_HEAD.TRANSFORMER.REL_LAYER", "1",
                         "MODEL.ROI_RELATION_HEAD.TRANSFORMER.NUM_HEAD", "2",
                         "MODEL.ROI_RELATION_HEAD.TRANSFORMER.KEY_DIM", "4",
                         "MODEL.ROI_RELATION_HEAD.TRANSFORMER.VAL_DIM", "4",
                         "MODEL.ROI_RELATION_HEAD.TRANSFORMER.INNER_DIM", "16"]


def make_synthvg(root: str, num_images: int = 24, seed: int = 0, **overrides) -> str:
    """``root/synthvg_tiny`` (the catalog maps ``synthvg_tiny_{train,val,test}`` to it); returns root."""
    from sgg.data.synthvg import generate_synthvg

    generate_synthvg(os.path.join(str(root), DATASET), profile="tiny", seed=seed, num_images=num_images,
                     **overrides)
    return str(root)


def protocol_opts(mode: str) -> List[str]:
    gt_box = mode in ("predcls", "sgcls")
    gt_label = mode == "predcls"
    return ["MODEL.ROI_RELATION_HEAD.USE_GT_BOX", str(gt_box),
            "MODEL.ROI_RELATION_HEAD.USE_GT_OBJECT_LABEL", str(gt_label)]


def tiny_opts(data_dir: str, output_dir: str, mode: str = "predcls", *extra: str,
              num_val_images: int = 2) -> List[str]:
    """Config overrides of a tiny two-stage Motifs model on ``data_dir/synthvg_tiny``."""
    return [
        "MODEL.DEVICE", "cpu", "SEED", "3",
        "OUTPUT_DIR", str(output_dir), "GLOVE_DIR", os.path.join(str(output_dir), "no_glove"),
        "DATASETS.DATA_DIR", str(data_dir),
        "DATASETS.TRAIN", f'("{DATASET}_train",)', "DATASETS.VAL", f'("{DATASET}_val",)',
        "DATASETS.TEST", f'("{DATASET}_test",)', "DATASETS.NUM_VAL_IMAGES", str(num_val_images),
        "DATALOADER.NUM_WORKERS", "0", "DATALOADER.ASPECT_RATIO_GROUPING", "False",
        "MODEL.BACKBONE.CONV_BODY", "R-18-FPN", "MODEL.RESNETS.BACKBONE_OUT_CHANNELS", "8",
        "MODEL.DETECTOR.BACKBONE_NORM", "GN", "MODEL.FPN.USE_GN", "True",
        "MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM", "32",
        "MODEL.RPN.PRE_NMS_TOP_N_TRAIN", "100", "MODEL.RPN.PRE_NMS_TOP_N_TEST", "100",
        "MODEL.RPN.POST_NMS_TOP_N_TRAIN", "50", "MODEL.RPN.POST_NMS_TOP_N_TEST", "50",
        "MODEL.RPN.FPN_POST_NMS_TOP_N_TRAIN", "50", "MODEL.RPN.FPN_POST_NMS_TOP_N_TEST", "50",
        "MODEL.ROI_HEADS.DETECTIONS_PER_IMG", "8",
        "MODEL.ROI_RELATION_HEAD.PREDICTOR", "MotifPredictor",
        "MODEL.ROI_RELATION_HEAD.BATCH_SIZE_PER_IMAGE", "32",
        "MODEL.ROI_RELATION_HEAD.CONTEXT_HIDDEN_DIM", "16",
        "MODEL.ROI_RELATION_HEAD.CONTEXT_POOLING_DIM", "24",
        "MODEL.ROI_RELATION_HEAD.EMBED_DIM", "8",
        "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "128",
        "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "128",
        "SOLVER.IMS_PER_BATCH", "2", "TEST.IMS_PER_BATCH", "2",
        "SOLVER.TENSORBOARD", "False",
        *protocol_opts(mode), *extra,
    ]


def tiny_config(data_dir: str, output_dir: str, mode: str = "predcls", *extra: str, freeze: bool = True,
                num_val_images: int = 2):
    from sgg.config import load_config

    return load_config(opts=tiny_opts(data_dir, output_dir, mode, *extra, num_val_images=num_val_images),
                       freeze=freeze)


def write_config_yaml(path: str, data_dir: str, output_dir: str, mode: str = "predcls", *extra: str,
                      num_val_images: int = 2) -> str:
    """The full tiny config as a YAML file the tools read with ``--config-file``."""
    cfg = tiny_config(data_dir, output_dir, mode, *extra, freeze=False, num_val_images=num_val_images)
    with open(path, "w") as f:
        f.write(cfg.dump())
    return str(path)


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """One intra-op thread: on a shared, busy 2-core machine OpenMP spin-waiting makes 2 threads
    ~20x slower than 1 for these tiny convolutions."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def subprocess_env(repo: str, extra: Sequence[str] = ()) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([repo, *extra, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    env["MKL_NUM_THREADS"] = "1"
    env.pop("SGG_DATA_DIR", None)
    return env
