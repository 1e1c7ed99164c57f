"""Depth encodings (HHA-like / normalised), the encoding tool, and the mapper's encoded depth: aligned
with the image through resize and flips, computed at the original resolution, untouched by colour
jitter."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from sgg.config import get_default_config
from sgg.data.depth_encoding import encode_depth, encode_depth_folder, fill_missing_depth
from sgg.data.mapper import SceneGraphMapper

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _plane_depth(h, w, focal, normal, offset):
    """Depth of the plane {P : normal . P = offset} seen through a pinhole at the origin (x right,
    y down, z forward), principal point at the image centre."""
    u = (np.arange(w) - (w - 1) / 2) / focal
    v = (np.arange(h) - (h - 1) / 2) / focal
    rays = np.stack(np.broadcast_arrays(u[None, :], v[:, None], np.ones((h, w))), -1)  # [H, W, 3]
    return offset / (rays @ np.asarray(normal, np.float64))


# ------------------------------------------------------------------------------------------------
# encode_depth
# ------------------------------------------------------------------------------------------------
def test_encodings_shapes_ranges_and_missing_depth():
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 30.0, (37, 53)).astype(np.float32)
    depth[5:9, 10:20] = 0.0  # a hole
    depth[0, 0] = np.nan
    for mode in ("hha", "normalized"):
        e = encode_depth(depth, mode)
        assert e.shape == (3, 37, 53) and e.dtype == np.float32
        assert np.isfinite(e).all() and e.min() >= 0.0 and e.max() <= 1.0
    n = encode_depth(depth, "normalized")
    assert np.array_equal(n[0], n[1]) and np.array_equal(n[0], n[2]) and n.max() == pytest.approx(1.0)
    assert n[0, 20, 30] == pytest.approx(depth[20, 30] / np.nanmax(depth), rel=1e-6)
    hha = encode_depth(depth, "hha")
    assert hha[1].min() == 0.0 and hha[1].max() == pytest.approx(1.0)  # height: per-image [0, 1]
    assert np.array_equal(encode_depth(np.zeros((4, 6), np.float32), "hha"), np.zeros((3, 4, 6), np.float32))
    with pytest.raises(ValueError, match="DEPTH_ENCODING"):
        encode_depth(depth, "hsv")
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        encode_depth(depth[None], "hha")


def test_missing_depth_takes_the_nearest_valid_depth():
    d = np.full((6, 10), 4.0)
    d[:, 6:] = 9.0
    d[1:5, 4:6] = 0.0  # 2 columns of hole: the left one is next to 4 m, the right one next to 9 m
    filled = fill_missing_depth(d)
    assert filled[2, 4] == 4.0 and filled[3, 4] == 4.0 and filled[2, 5] == 9.0 and filled[3, 5] == 9.0
    assert np.array_equal(filled[d > 0], d[d > 0])


def test_hha_of_planes_is_hand_checkable():
    h, w, f = 40, 60, 60.0
    # a tilted plane: one surface normal, so one angle everywhere
    n = np.array([0.2, -0.8, -0.5])
    n /= np.linalg.norm(n)
    depth = _plane_depth(h, w, f, n, -3.0)
    assert depth.min() > 0
    e = encode_depth(depth, "hha", focal=f)
    want = np.degrees(np.arccos(-n[1])) / 180.0  # angle between n (towards the camera) and up = (0, -1, 0)
    assert np.allclose(e[2], want, atol=1e-6)
    # the floor 1.5 m below the camera (rows below the horizon, a far wall above): angle 0 and
    # height 0 (the lowest points) on the floor rows whose central differences stay on the floor
    scene = np.full((h, w), 50.0)
    scene[h // 2:] = _plane_depth(h, w, f, [0.0, 1.0, 0.0], 1.5)[h // 2:]
    e = encode_depth(scene, "hha", focal=f)
    assert np.allclose(e[2, h // 2 + 1:], 0.0, atol=1e-6) and np.allclose(e[1, h // 2:], 0.0, atol=1e-6)
    assert np.allclose(e[2, : h // 2 - 1], 0.5, atol=1e-6)  # the wall
    # a wall facing the camera: angle 0.5, height rises linearly from the bottom row (0) to the top (1)
    e = encode_depth(np.full((5, 7), 3.0), "hha")
    assert np.allclose(e[2], 0.5)
    assert np.allclose(e[1][:, 0], [1.0, 0.75, 0.5, 0.25, 0.0]) and np.allclose(e[1], e[1][:, :1])
    # disparity min(1, 1 m / depth): strictly decreasing in depth beyond 1 m, saturated below
    ramp = np.tile(np.linspace(0.5, 20.0, 50), (4, 1))
    disp = encode_depth(ramp, "hha")[0, 2]
    far = ramp[2] > 1.0
    assert np.all(np.diff(disp[far]) < 0) and np.all(disp[~far] == 1.0)
    assert disp[-1] == pytest.approx(1.0 / 20.0)


# ------------------------------------------------------------------------------------------------
# The tool
# ------------------------------------------------------------------------------------------------
def test_encode_depth_folder_and_tool(tmp_path):
    src, out = tmp_path / "depth", tmp_path / "enc"
    src.mkdir()
    mm = np.full((12, 16), 2500, np.uint16)
    mm[:, :8] = 5000
    cv2.imwrite(str(src / "1.png"), mm)
    np.save(src / "2.npy", np.full((10, 10), 3.0, np.float32))
    res = encode_depth_folder(str(src), str(out), "hha", progress=False)
    assert res == {"written": 2, "skipped": 0}
    e1 = np.load(out / "1.npy")
    assert e1.dtype == np.float16 and e1.shape == (3, 12, 16)
    assert np.allclose(e1.astype(np.float32), encode_depth(mm.astype(np.float32) * 0.001, "hha"), atol=1e-3)
    assert np.allclose(np.load(out / "2.npy")[0].astype(np.float32), 1.0 / 3.0, atol=1e-3)
    assert encode_depth_folder(str(src), str(out), "hha", progress=False) == {"written": 0, "skipped": 2}
    # an unreadable file: a clear error naming it (library and tool)
    (src / "3.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="3.png"):
        encode_depth_folder(str(src), str(out), "hha", progress=False)
    r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "encode_depth.py"), "--depth-dir", str(src),
                        "--out", str(tmp_path / "enc2"), "--mode", "normalized", "--no-progress"],
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 1 and "3.png" in r.stderr and "cannot read depth map" in r.stderr
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no depth maps"):
        encode_depth_folder(str(tmp_path / "empty"), str(out), "hha", progress=False)


# ------------------------------------------------------------------------------------------------
# The mapper
# ------------------------------------------------------------------------------------------------
def _l_record(tmp_path, h=48, w=64, ext="png"):
    """An asymmetric scene: an L-shaped red block near the top-left corner, 2 m away, in front of a
    wall 8 m away; a non-square image."""
    img = np.zeros((h, w, 3), np.uint8)
    img[4:20, 6:30] = (255, 0, 0)
    img[20:40, 6:14] = (255, 0, 0)
    depth_mm = np.full((h, w), 8000, np.uint16)
    depth_mm[img[..., 0] > 0] = 2000
    path = str(tmp_path / "5.png")
    cv2.imwrite(path, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    dpath = str(tmp_path / f"5_depth.{ext}")
    if ext == "png":
        cv2.imwrite(dpath, depth_mm)
    else:
        np.save(dpath, encode_depth(depth_mm * 0.001, "hha").astype(np.float16))
    d = {"file_name": path, "image_id": 5, "height": h, "width": w, "depth_file": dpath,
         "boxes": np.array([[6, 4, 30, 40]], np.float32), "labels": np.array([1], np.int64),
         "relations": np.zeros((0, 3), np.int64)}
    return d, img, depth_mm


def _mapper(**kw):
    args = dict(is_train=True, mode="sgdet", min_size_train=(72,), max_size_train=1000, load_depth=True,
                depth_scale=0.001, depth_encoding="hha")
    args.update(kw)
    return SceneGraphMapper(**args)


def test_encoded_depth_stays_aligned_under_resize_and_flip(tmp_path):
    d, _, depth_mm = _l_record(tmp_path)
    out = _mapper(hflip_prob=1.0)(d)
    img, dep = out["image"], out["depth"]
    assert dep.dtype == torch.float32 and dep.shape == (3, 72, 96) and img.shape == (3, 72, 96)  # 4:3 kept
    block_img = img[0] > 127
    block_depth = dep[0] > 0.3  # disparity: 1 / 2 m = 0.5 on the block, 1 / 8 m = 0.125 behind it
    assert (block_img == block_depth).float().mean() > 0.98
    assert block_img[:, 48:].sum() > 3 * block_img[:, :48].sum()  # flipped: the block is on the right
    assert set(torch.unique(dep[0]).tolist()) == {0.125, 0.5}  # nearest resampling, no invented depths
    # the encoding is computed at the ORIGINAL resolution, then resized (nearest) and flipped
    enc = encode_depth(depth_mm.astype(np.float32) * 0.001, "hha").transpose(1, 2, 0)
    want = cv2.resize(np.ascontiguousarray(enc), (96, 72), interpolation=cv2.INTER_NEAREST_EXACT)[:, ::-1]
    assert torch.equal(dep, torch.from_numpy(np.ascontiguousarray(want.transpose(2, 0, 1))))
    # a ready float16 encoding (tools/encode_depth.py) gives the same input, up to float16 rounding
    d16, _, _ = _l_record(tmp_path, ext="npy")
    dep16 = _mapper(hflip_prob=1.0)(d16)["depth"]
    assert dep16.shape == dep.shape and torch.allclose(dep16, dep, atol=1e-3)
    with pytest.raises(ValueError, match="INPUT.DEPTH_ENCODING"):
        _mapper(depth_encoding="")(d16)


def test_color_jitter_never_touches_the_encoded_depth(tmp_path):
    d, _, _ = _l_record(tmp_path)
    plain = _mapper()(d)
    np.random.seed(1)
    jittered = _mapper(brightness=0.8, contrast=0.8, saturation=0.8, hue=0.3)(d)
    assert not torch.equal(jittered["image"], plain["image"])
    assert torch.equal(jittered["depth"], plain["depth"])


def test_encoding_from_config_and_missing_depth_map(tmp_path):
    d, _, _ = _l_record(tmp_path)
    cfg = get_default_config()
    cfg.merge_from_list(["INPUT.LOAD_DEPTH", True, "INPUT.DEPTH_ENCODING", "normalized", "INPUT.DEPTH_SCALE", 0.001,
                         "INPUT.MIN_SIZE_TEST", 48, "INPUT.MAX_SIZE_TEST", 64])
    out = SceneGraphMapper.from_config(cfg, False, "sgdet")(d)
    assert out["depth"].shape == (3, 48, 64) and out["depth"].max() == pytest.approx(1.0)
    assert torch.allclose(out["depth"][:, 0, 0], torch.tensor(1.0))  # the wall, the farthest point
    assert torch.allclose(out["depth"][:, 10, 10], torch.tensor(0.25))  # the block: 2 m / 8 m
    os.remove(d["depth_file"])
    with pytest.raises(FileNotFoundError, match="INPUT.LOAD_DEPTH") as e:
        SceneGraphMapper.from_config(cfg, False, "sgdet")(d)
    assert d["depth_file"] in str(e.value) and str(tmp_path) in str(e.value)
    with pytest.raises(ValueError, match="DEPTH_ENCODING"):
        _mapper(depth_encoding="jet")
