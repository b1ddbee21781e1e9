"""Speed and energy table: the FFT-based FLOP count of the simulated ODU, the optical bench from its
parts, energy from RAPL or a stated power, and the PyTorch FLOP counter against PyTorch's own."""

import pytest

from optdiff.evaluation import costs


def test_fft_and_odu_flop_counts_by_hand():
    assert costs.fft_flops(1) == 0.0
    assert costs.fft_flops(1024) == 5 * 1024 * 10
    # n = 4, one layer, 2x2 image, padding 2: N' = 8, one hop
    f = costs.odu_flops(4, 1, 2, padding=2)
    want = {"fft": 2 * 5 * 64 * 6, "transfer": 6 * 64, "phase_masks": 6 * 16, "encode": 12, "camera": 48,
            "bin": 4 + 4, "readout": 20}
    assert f["by_part"] == want and f["total"] == sum(want.values())
    # one more hop with an input distance; padding 1 halves the grid side
    assert costs.odu_flops(4, 1, 2, input_hop=True)["by_part"]["fft"] == 2 * want["fft"]
    assert costs.odu_flops(4, 1, 2, padding=1)["by_part"]["transfer"] == 6 * 16
    # the default ODU (N = 128, L = 4, 20x20, k = 5): FFTs dominate
    d = costs.odu_flops(128, 4, 20, k=5)
    assert d["by_part"]["fft"] == 4 * 2 * 5 * 256 ** 2 * 16 and d["by_part"]["fft"] > 0.9 * d["total"]


def test_optical_bench_from_its_parts():
    power, pixel = costs.optical_bench_rows(20, 1000)
    assert power["images_per_s"] == pytest.approx(23.148)            # 23,148 patterns/s over 1000 steps
    assert power["joules_per_image"] == pytest.approx(7.5 / 23.148)   # 4.5 W DMD + 3 W camera
    assert pixel["joules_per_image"] == pytest.approx(38e-9 * 400 * 1000)  # 15.2 mJ: the reference's ~15 mJ
    assert power["flops_per_step"] == 0.0
    quoted = {r["model"]: r for r in costs.REFERENCE_ROWS}
    assert quoted["reference work: lab bench (quoted)"]["joules_per_image"] == 0.23
    md = costs.cost_table_markdown([power, pixel] + costs.REFERENCE_ROWS)
    assert md.count("\n") == 5 and "15.2 mJ" in md and "230 mJ" in md


def test_energy_from_stated_power_or_rapl(monkeypatch):
    monkeypatch.setattr(costs, "read_rapl_uj", lambda: None)
    rate = costs.measure_rate(lambda: sum(range(1000)), batch=8, repeats=3)
    assert rate["image_steps_per_s"] > 0 and rate["joules_per_image_step"] is None
    row = costs.energy_row("m", 10, 100.0, rate, steps=1000, watts=10.0, power_source="test")
    assert row["joules_per_image"] == pytest.approx(10.0 / rate["image_steps_per_s"] * 1000)
    assert row["images_per_s"] == pytest.approx(rate["image_steps_per_s"] / 1000)
    monkeypatch.setenv("OPTDIFF_CPU_WATTS", "12.5")
    assert costs.cpu_power_watts() == (12.5, "OPTDIFF_CPU_WATTS")
    counter = iter(range(0, 10**9, 2_000_000))  # +2 J between consecutive reads
    monkeypatch.setattr(costs, "read_rapl_uj", lambda: next(counter))
    rate = costs.measure_rate(lambda: None, batch=4, repeats=2, warmup=0)
    assert rate["joules_per_image_step"] == pytest.approx(0.5) and "RAPL" in rate["energy_source"]
    assert costs.energy_row("m", None, None, rate, steps=10)["joules_per_image"] == pytest.approx(5.0)


def test_rapl_reader_is_none_or_a_count():
    v = costs.read_rapl_uj()
    assert v is None or (isinstance(v, int) and v >= 0)


torch = pytest.importorskip("torch")


@pytest.mark.parametrize("kind", ["fc", "unet"])
def test_flop_counter_agrees_with_pytorch_on_linear_and_conv(kind):
    from torch.utils.flop_counter import FlopCounterMode

    from optdiff.evaluation.digital import nets
    from optdiff.evaluation.digital.flops import count_flops

    net = nets.build_net({"kind": kind, "image_size": 20, **nets.match_width(kind, 200_000)[0]})
    ours = count_flops(net, 20, batch=2)
    bias = 0  # our count adds one FLOP per output of a layer with a bias; PyTorch counts only the products
    hooks = []
    with torch.no_grad():
        outs = {}
        for name, m in net.named_modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and m.bias is not None:
                hooks.append(m.register_forward_hook(lambda m, i, o, name=name: outs.__setitem__(name, o.numel())))
        net.eval()(torch.zeros(2, 20, 20), torch.zeros(2, dtype=torch.long))
        for h in hooks:
            h.remove()
        bias = sum(outs.values()) // 2
        with FlopCounterMode(display=False) as fc:
            net(torch.zeros(2, 20, 20), torch.zeros(2, dtype=torch.long))
    theirs = fc.get_total_flops() // 2
    mine = ours["by_type"].get("Linear", 0) + ours["by_type"].get("Conv2d", 0)
    assert mine - bias == theirs
    assert ours["total"] > mine  # plus normalisation, activations, resizing
    if kind == "fc":  # the reference FC: 4 linear layers dominate, ~2 x params per image
        ref = count_flops(nets.FCDenoiser(20), 20)["total"]
        assert 2 * 16.9e6 < ref < 2 * 17.2e6
