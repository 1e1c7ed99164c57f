from sgg.evaluation.report import format_comparison


def _m(r50, mr50, per):
    m = {f"{p}@{k}": 0.0 for p in ("R", "mR", "F") for k in (20, 50, 100)}
    m.update({"R@50": r50, "mR@50": mr50, "per_predicate_R@100": per, "predicate_names": ["a", "b", "c"]})
    return m


def test_comparison_table_orders_head_to_tail_and_averages_thirds():
    runs = {"plain": _m(0.8, 0.4, [0.9, 0.1, 0.5]), "hml": _m(0.7, 0.6, [0.8, 0.6, 0.7])}
    out = format_comparison(runs, predicate_frequency=[10, 1000, 100], predicate_names=["a", "b", "c"])
    lines = out.splitlines()
    assert lines[1].split()[:4] == ["plain", "0.00", "80.00", "0.00"]
    assert lines[2].split()[4:6] == ["0.00", "60.00"]  # mR@20, mR@50 of hml
    body = [ln.split()[0] for ln in lines[6:9]]
    assert body == ["b", "c", "a"]  # by training count 1000, 100, 10
    assert lines[-3].split()[-2:] == ["10.00", "60.00"]  # head third = predicate b
    assert lines[-1].split()[-2:] == ["90.00", "80.00"]  # tail third = predicate a
