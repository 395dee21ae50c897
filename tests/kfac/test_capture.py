"""One capture of layer inputs and output gradients, shared by K-FAC, EK-FAC and the low-rank form."""

from __future__ import annotations

import pytest
import torch

from crispedit_lite.ekfac import collect_ekfac
from crispedit_lite.fastproject import TokenFactorCapture
from crispedit_lite.kfac import collect_kfac, resolve_modules
from crispedit_lite.kfac.capture import LayerCapture
from crispedit_lite.teaching.toy import MLP

f64 = torch.float64


@pytest.fixture(scope="module")
def mlp():
    torch.manual_seed(0)
    model = MLP((6, 5, 4, 3)).to(f64)
    x = torch.randn(30, 6, dtype=f64)
    y = torch.randint(0, 3, (30,))
    return model, x, y


def _capture(model, names, batch, labels="true"):
    with LayerCapture(model, resolve_modules(model, names), loss="cross_entropy", labels=labels,
                      ignore_index=-100, generator=torch.Generator().manual_seed(0),
                      max_type2_classes=16) as cap:
        return cap.run(batch)


def test_the_capture_is_the_layer_input_and_the_gradient_of_the_summed_loss(mlp):
    model, x, y = mlp
    seen, valid = _capture(model, ["fc1", "fc2"], (x, y))
    assert valid.all()
    inputs, outputs = {}, {}

    def keep(name):
        def hook(mod, args, out):
            inputs[name], outputs[name] = args[0], out
        return hook

    hooks = [model.get_submodule(n).register_forward_hook(keep(n)) for n in ("fc1", "fc2")]
    try:
        loss = torch.nn.functional.cross_entropy(model(x), y, reduction="sum")
        grads = torch.autograd.grad(loss, [outputs["fc1"], outputs["fc2"]])
    finally:
        for h in hooks:
            h.remove()
    for n, g in zip(("fc1", "fc2"), grads):
        torch.testing.assert_close(seen[n].a, inputs[n].detach(), rtol=0, atol=0)
        assert len(seen[n].g) == 1
        torch.testing.assert_close(seen[n].g[0], g, rtol=1e-12, atol=1e-14)


def test_kfac_and_ekfac_are_built_from_the_same_captured_tensors(mlp):
    model, x, y = mlp
    seen, _ = _capture(model, ["fc2"], (x, y), labels="type2")
    a, gs = seen["fc2"].a, seen["fc2"].g
    assert len(gs) == 3  # one backward per class of the Hessian square root
    kf = collect_kfac(model, ["fc2"], [(x, y)], labels="type2", progress=False)["fc2"]
    torch.testing.assert_close(kf.A, a.T @ a / len(x), rtol=0, atol=0)
    torch.testing.assert_close(kf.S, sum(g.T @ g for g in gs) / len(x), rtol=1e-15, atol=0)
    ek = collect_ekfac(model, ["fc2"], [(x, y)], factors={"fc2": kf}, labels="type2")["fc2"]
    coords_a = a @ ek.U_in
    eig = sum(((g @ ek.U_out) ** 2).T @ coords_a**2 for g in gs) / len(x)
    torch.testing.assert_close(ek.eig, eig, rtol=0, atol=0)


def test_the_capture_restores_the_model_and_takes_its_hooks_off(mlp):
    model, x, y = mlp
    model.train()
    model.fc1.weight.requires_grad_(False)
    _capture(model, ["fc1"], (x, y))
    assert model.training and not model.fc1.weight.requires_grad and model.fc2.weight.requires_grad
    assert not model.fc1._forward_hooks
    model.fc1.weight.requires_grad_(True)
    with pytest.raises(RuntimeError, match="needs the capture entered"):
        LayerCapture(model, {}, loss="cross_entropy", labels="true", ignore_index=-100,
                     generator=torch.Generator(), max_type2_classes=1).run((x, y))


def test_token_factor_capture_uses_the_same_hooks(mlp):
    model, x, y = mlp
    seen, _ = _capture(model, ["fc2"], (x, y))
    with TokenFactorCapture({"fc2": model.fc2}) as cap:
        torch.nn.functional.cross_entropy(model(x), y, reduction="sum").backward()
        g, a = cap.pop("fc2")
    model.zero_grad(set_to_none=True)
    torch.testing.assert_close(a, seen["fc2"].a, rtol=0, atol=0)
    torch.testing.assert_close(g, seen["fc2"].g[0], rtol=1e-12, atol=1e-14)
