import math

import pytest

from languini.compute import LOCAL, Charge, ComputeClass, compute_budget, get_class, load_classes
from languini.errors import UserError


def test_languini_classes_are_the_papers():
    classes = load_classes()
    for hours in (6, 12, 24, 48, 96):
        c = classes[f"{hours}h"]
        assert (c.hours, c.reference) == (hours, "rtx3090")


@pytest.mark.parametrize("hours", [6, 12, 24, 48, 96])
def test_budget_by_hand_for_every_languini_class(hours):
    # GPT small on the RTX 3090 itself: 55,416 tokens/s, batch 128, seq 512.
    b = compute_budget(get_class(f"{hours}h"), 55_416.0, 128, 512, device="NVIDIA GeForce RTX 3090")
    assert b.tokens == 55_416 * hours * 3600
    assert b.steps == (55_416 * hours * 3600) // (128 * 512)
    assert b.tokens_trained == b.steps * 128 * 512
    assert b.device_factor == 1.0
    assert b.reference_hours == pytest.approx(b.tokens_trained / 55_416 / 3600)
    assert hours - b.reference_hours < 128 * 512 / 55_416 / 3600 + 1e-12


def test_device_factor_converts_off_reference():
    # A device twice as fast as the reference: factor 0.5, so the budget is the reference's.
    b = compute_budget(get_class("6h"), 110_832.0, 128, 512, device="H100", calibration={"device_factor": 0.5})
    assert b.reference_tokens_per_second == 55_416.0
    assert b.tokens == 55_416 * 6 * 3600


def test_off_reference_without_factor_is_refused():
    with pytest.raises(UserError, match="calibrate"):
        compute_budget(get_class("6h"), 1000.0, 8, 128, device="AMD EPYC (2 threads)")


def test_local_classes_need_no_factor():
    c = ComputeClass("t", 1 / 60, LOCAL)
    b = compute_budget(c, 1000.0, 4, 10, device="anything")
    assert b.tokens == 60_000 and b.steps == 1500


@pytest.mark.parametrize("tps", [0.0, -1.0, math.nan, math.inf])
def test_bad_throughput_is_refused(tps):
    with pytest.raises(UserError):
        compute_budget(get_class("cpu-1m"), tps, 4, 10, device="cpu")


def test_budget_smaller_than_a_step_is_refused():
    with pytest.raises(UserError, match="less than one step"):
        compute_budget(get_class("cpu-10s"), 1.0, 64, 512, device="cpu")


def test_unknown_class_lists_known():
    with pytest.raises(UserError, match="known: .*cpu-2m"):
        get_class("7h")


def test_flop_classes_buy_tokens_by_six_n_d():
    b = compute_budget(get_class("flops-1e13"), 1000.0, 4, 10, device="cpu", params=1_000_000)
    assert b.mode == "flops" and b.tokens == 10**13 // (6 * 10**6)
    assert b.steps == b.tokens // 40
    with pytest.raises(UserError, match="parameter count"):
        compute_budget(get_class("flops-1e13"), 1000.0, 4, 10, device="cpu")


def test_the_reference_device_needs_no_calibration():
    b = compute_budget(get_class("12h"), 50_000.0, 8, 512, device="NVIDIA GeForce RTX 3090")
    assert (b.mode, b.device_factor) == ("reference", 1.0)


def test_a_calibration_against_another_reference_is_refused():
    with pytest.raises(UserError, match="calibration is against"):
        compute_budget(get_class("6h"), 1000.0, 8, 512, device="x", calibration={"device_factor": 2, "reference": "a100"})


def test_a_charge_keeps_budget_json_shape():
    """budget.json's `charge` is the charge asked for plus what the class gave up; it reads back."""
    charge = Charge(hours=0.25, flops=None, reference="local", source="a selection")
    b = compute_budget(ComputeClass("h", hours=1.0, reference=LOCAL), 1000.0, 2, 10, device="cpu", charge=charge)
    stored = b.to_dict()["charge"]
    assert stored == {"hours": 0.25, "flops": None, "reference": "local", "source": "a selection", "charged": 0.25}
    assert Charge.from_dict(stored) == b.charge and Charge.from_dict(None) is None
