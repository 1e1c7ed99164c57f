import pytest

from sgg.registry import Registry


def test_register_and_get():
    reg = Registry("PREDICTOR")

    @reg.register()
    class MotifPredictor:
        pass

    reg.register(dict, name="Other")
    assert reg.get("MotifPredictor") is MotifPredictor
    assert reg.get("Other") is dict
    assert "MotifPredictor" in reg and len(reg) == 2
    assert reg.names() == ["MotifPredictor", "Other"]


def test_unknown_name_lists_known():
    reg = Registry("PREDICTOR")
    reg.register(dict, name="MotifPredictor")
    reg.register(list, name="VCTreePredictor")
    with pytest.raises(KeyError) as e:
        reg.get("MotifPredicter")
    msg = str(e.value)
    assert "Known: MotifPredictor, VCTreePredictor" in msg and "Did you mean MotifPredictor" in msg


def test_double_registration_fails():
    reg = Registry("X")
    reg.register(dict, name="A")
    reg.register(dict, name="A")  # same object again is fine
    with pytest.raises(KeyError, match="already registered"):
        reg.register(list, name="A")
