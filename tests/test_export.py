"""Export of the one-stage field network (sgg.export, tools/export_model.py): TorchScript gives the
PyTorch fields for the conv / deformable / transformer trunks at the traced size and at another
size, decoding the exported fields gives the model's scene graphs, the tool runs as a script, and
ONNX is optional."""
import importlib.util
import os
import subprocess
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "modeling"))

from test_one_stage import onestage_opts  # noqa: E402
from two_stage_fixtures import make_synthvg, subprocess_env  # noqa: E402

from sgg.export import FIELD_NAMES, export_onestage, load_exported, verify_export  # noqa: E402

TRUNK_OPTS = ("MODEL.ONESTAGE.TRANSFORMER_LAYERS", "2", "MODEL.ONESTAGE.TRANSFORMER_HEADS", "2")
NUM_CLASSES, NUM_PREDICATES = 12, 10  # SynthVG tiny, without background


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_synthvg(tmp_path_factory.mktemp("export_data"), num_images=16, seed=2)


def _cfg(data_root, out, trunk="conv", mode="sgdet", *extra):
    from sgg.config import load_config

    return load_config(opts=onestage_opts(data_root, out, mode, "MODEL.ONESTAGE.OBJ_TRUNK", trunk,
                                          "MODEL.ONESTAGE.REL_TRUNK", trunk, *TRUNK_OPTS, *extra))


def _model(cfg, seed=0):
    """A OneStageSGG in eval mode; deformable offsets perturbed so they sample between cells (at
    init they are 0 and the layer is a plain conv)."""
    from sgg.modeling.meta_arch import build_sgg_model
    from sgg.modeling.onestage.fields import DeformLayer

    torch.manual_seed(seed)
    model = build_sgg_model(cfg, None, NUM_CLASSES + 1, NUM_PREDICATES + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, DeformLayer):
                m.offset.weight.normal_(0.0, 0.05)
                m.offset.bias.uniform_(-0.7, 0.7)
    return model.eval()


def _fields(model, x):
    with torch.no_grad():
        out = model.net(x)
    return [out[k] for k in FIELD_NAMES]


@pytest.mark.parametrize("trunk", ["conv", "deform", "transformer"])
def test_torchscript_fields_equal_pytorch_at_traced_and_other_size(trunk, data_root, tmp_path):
    model = _model(_cfg(data_root, tmp_path, trunk))
    path = export_onestage(model, str(tmp_path / f"{trunk}.pt"), image_size=(96, 64))
    exported = load_exported(path)
    meta = exported.metadata
    assert meta["fields"] == list(FIELD_NAMES) == ["obj_logits", "obj_offset", "obj_size", "rel_logits",
                                                   "rel_subj", "rel_obj", "rel_scale"]
    assert meta["traced_image_size"] == [96, 64] and meta["stride"] == 16
    assert (meta["num_classes"], meta["num_predicates"]) == (NUM_CLASSES, NUM_PREDICATES)
    assert meta["pixel_mean"] == pytest.approx([0.485, 0.456, 0.406]) and meta["to_bgr255"] is False
    g = torch.Generator().manual_seed(1)
    # the traced size, then another size and batch (the trace has no size-dependent branch)
    for shape in [(1, 3, 96, 64), (2, 3, 64, 128)]:
        x = torch.randn(*shape, generator=g)
        want = _fields(model, x)
        got = exported.fields_tuple(x)
        assert len(got) == 7
        hg, wg = shape[2] // 16, shape[3] // 16
        assert tuple(got[0].shape) == (shape[0], NUM_CLASSES, hg, wg)
        assert tuple(got[4].shape) == (shape[0], NUM_PREDICATES, 2, hg, wg)
        for name, a, b in zip(FIELD_NAMES, want, got):
            assert a.shape == b.shape and b.dtype == torch.float32, name
            assert torch.allclose(a, b, atol=1e-5, rtol=0), (name, (a - b).abs().max())
        assert verify_export(model, exported, x) < 1e-5
    if trunk == "deform":  # the perturbed offsets matter: a plain conv would give other fields
        with torch.no_grad():
            for m in model.modules():
                if hasattr(m, "offset") and isinstance(m.offset, torch.nn.Conv2d) and m.offset.out_channels == 18:
                    m.offset.bias.zero_()
                    m.offset.weight.zero_()
        assert verify_export(model, exported, x) > 1e-4
    assert model.training is False


def test_decoding_exported_fields_gives_the_models_scene_graphs(data_root, tmp_path):
    from sgg.data.build import build_dataset
    from sgg.data.mapper import SceneGraphMapper
    from sgg.modeling.onestage.decoder import decode_fields

    cfg = _cfg(data_root, tmp_path, "deform", "sgdet", "MODEL.ONESTAGE.REL_THRESHOLD", "0.09")
    model = _model(cfg)
    dataset = build_dataset(cfg, cfg.DATASETS.TEST[0], is_train=False, mode="sgdet")
    mapper = SceneGraphMapper.from_config(cfg, is_train=False, mode="sgdet")
    batch = [mapper(dataset[i]) for i in range(3)]
    images, sizes = model.preprocess([d["image"] for d in batch])
    assert any(tuple(s) != tuple(images.shape[-2:]) for s in sizes)  # padded batch, as the model sees it
    path = export_onestage(model, str(tmp_path / "fields.pt"), image_size=(96, 96))
    exported = load_exported(path)
    with torch.no_grad():
        # the model's decoding of the same padded batch (model(batch) would regroup by shape)
        want = model.inference(batch, fields=model.forward_fields(images))
    fields = exported(images)
    graphs = decode_fields(fields, sizes, stride=exported.metadata["stride"], mode="sgdet",
                           topk_objects=model.topk_objects, rel_threshold=model.rel_threshold,
                           max_relations=model.max_relations, pair_score_filter=model.pair_score_filter)
    graphs = [g.resized((d["height"], d["width"])) for g, d in zip(graphs, batch)]
    assert sum(len(g.rel_pairs) for g in want) > 0 and sum(len(g) for g in want) > 0  # non-trivial graphs
    for g, w in zip(graphs, want):
        assert g.image_size == w.image_size
        assert torch.equal(g.labels, w.labels) and torch.equal(g.rel_pairs, w.rel_pairs)
        assert torch.allclose(g.boxes, w.boxes, atol=1e-4) and torch.allclose(g.scores, w.scores, atol=1e-6)
        assert torch.allclose(g.rel_scores, w.rel_scores, atol=1e-6)


def test_export_tool_subprocess_uses_the_ema_weights(data_root, tmp_path):
    cfg = _cfg(data_root, tmp_path / "run", "transformer")
    cfg_file = tmp_path / "onestage.yaml"
    cfg_file.write_text(cfg.dump())
    raw = _model(cfg, seed=0)
    ema = _model(cfg, seed=1)
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": raw.state_dict(), "ema": {"model": ema.state_dict(), "updates": 3, "decay": 0.9},
                "iteration": 3}, run / "model_final.pth")
    (run / "last_checkpoint").write_text("model_final.pth\n")
    out = tmp_path / "exported" / "corf.pt"
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "export_model.py"), "--config-file",
                           str(cfg_file), "--weights", str(run), "--output", str(out), "--image-size", "64", "96"],
                          env=subprocess_env(REPO), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "using the EMA weights" in proc.stdout and "max |export - model|" in proc.stdout
    assert "obj_logits, obj_offset, obj_size, rel_logits, rel_subj, rel_obj, rel_scale" in proc.stdout
    exported = load_exported(str(out))
    assert exported.metadata["traced_image_size"] == [64, 96]
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(4))
    assert verify_export(ema, exported, x) < 1e-5
    assert verify_export(raw, exported, x) > 1e-4

    # in-process (saves an interpreter start): a two-stage config is refused with the reason
    spec = importlib.util.spec_from_file_location("_tool_export_model", os.path.join(REPO, "tools", "export_model.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    two = tmp_path / "two.yaml"
    two.write_text(cfg.dump().replace("META_ARCHITECTURE: OneStageSGG", "META_ARCHITECTURE: GeneralizedRCNN"))
    with pytest.raises(SystemExit, match=r"only the one-stage model \(OneStageSGG\) is exported"):
        tool.main(["--config-file", str(two), "--weights", str(run), "--output", str(tmp_path / "x.pt")])
    assert not os.path.exists(tmp_path / "x.pt")


def test_input_size_and_model_type_errors(data_root, tmp_path):
    model = _model(_cfg(data_root, tmp_path))
    with pytest.raises(ValueError, match=r"multiple of the model's size_divisibility 32.*\(96, 64\)"):
        export_onestage(model, str(tmp_path / "x.pt"), image_size=(90, 50))
    with pytest.raises(TypeError, match="needs a OneStageSGG"):
        export_onestage(torch.nn.Linear(2, 2), str(tmp_path / "x.pt"))
    with pytest.raises(ValueError, match="format must be one of"):
        export_onestage(model, str(tmp_path / "x.pt"), format="tflite")
    with pytest.raises(FileNotFoundError, match="tools/export_model.py"):
        load_exported(str(tmp_path / "nothing.pt"))


def test_onnx_without_onnx_installed_says_what_to_do(data_root, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    model = _model(_cfg(data_root, tmp_path))
    with pytest.raises(ImportError) as e:
        export_onestage(model, str(tmp_path / "x.onnx"), image_size=(64, 64), format="onnx")
    assert "pip install onnx onnxruntime" in str(e.value) and "TorchScript" in str(e.value)
    assert not os.path.exists(tmp_path / "x.onnx")


@pytest.mark.parametrize("trunk", ["conv", "deform", "transformer"])
def test_onnx_export_matches_pytorch(trunk, data_root, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    model = _model(_cfg(data_root, tmp_path, trunk))
    path = export_onestage(model, str(tmp_path / f"{trunk}.onnx"), image_size=(64, 64), format="onnx")
    exported = load_exported(path)
    assert exported.metadata["fields"] == list(FIELD_NAMES)
    for shape in [(1, 3, 64, 64), (2, 3, 96, 64)]:
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(2))
        assert verify_export(model, exported, x) < 1e-4
