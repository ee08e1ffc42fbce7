"""Heatmap generators: captum and finite differences as oracles, per-image maps under BatchNorm,
deconvNet on smooth activations, real smp models."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
from captum.attr import Deconvolution, GuidedBackprop
from scipy.ndimage import gaussian_filter
from torch import nn
from torch.func import functional_call

from tests.tiny import StageOutputs
from trainables.activations import RuleActivation, patch_activations
from trainables.generators import (
    GENERATORS as REGISTRY,
)
from trainables.generators import (
    generator_title,
    get_generator,
    list_generators,
    panel_generators,
    probe_generators,
    register_generator,
    training_generators,
)
from trainables.saliency import (
    PassConfig,
    batch_stats,
    batchnorm_mode,
    generator_map,
    record_batch_stats,
    to_heatmap,
)

GENERATORS = list_generators()


pytestmark = pytest.mark.usefixtures("one_thread")


class TinyNet(nn.Module):
    """conv -> [BN] -> act -> depthwise conv (stride 2) -> [BN] -> act -> grouped conv -> head."""

    def __init__(self, act: type[nn.Module] = nn.ReLU, bn: bool = False, maxpool: bool = False):
        super().__init__()

        def norm(channels: int) -> nn.Module:
            return nn.BatchNorm2d(channels) if bn else nn.Identity()

        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            norm(4),
            act(),
            nn.MaxPool2d(2) if maxpool else nn.Identity(),
            nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4),
            norm(4),
            act(),
            nn.Conv2d(4, 6, 3, padding=1, groups=2),
            norm(6),
            act(),
        )
        self.classification_head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3)
        )
        self.encoder = StageOutputs(self.features, ends=(4, 7, 10))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.classification_head(self.encoder(x)[-1])

    forward = classify  # captum calls forward


def _net(act: type[nn.Module] = nn.ReLU, bn: bool = False, seed: int = 0, **kw) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet(act, bn, **kw).double()


def _batch(b: int = 3, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 1, size, size, generator=torch.Generator().manual_seed(seed)).double()


TARGET = torch.tensor([0, 1, 2])


def test_registry_lists_and_rejects() -> None:
    assert set(GENERATORS) >= {"gbp", "deconv", "gradient", "gradcam"}
    with pytest.raises(KeyError, match="gbp"):
        get_generator("guided")
    with pytest.raises(ValueError, match="registered twice"):
        register_generator("gbp", title="GBP map")(get_generator("gbp"))
    # The generators crossed with the paper's model sets are those flagged at registration.
    assert training_generators() == tuple(e.name for e in REGISTRY if e.meta["training"])
    assert set(training_generators()) == {"gbp", "deconv"}
    # What the project knows about a generator is on its entry: which are probed on every model,
    # drawn in the panels, and titled how.
    assert probe_generators() == ("gbp", "deconv", "gradient", "logprob-gradient", "gradcam")
    assert panel_generators() == ("gbp", "deconv", "gradcam")
    assert generator_title("deconv") == "deconvNet map"


def test_a_new_training_generator_gets_arms_but_does_not_join_the_papers_eight():
    from trainables.model_sets import get_arm, list_arms, paper_arms

    before = paper_arms()
    register_generator("toy-gen", title="toy map", roles=("training",))(get_generator("gradient"))
    try:
        assert "set1-toy-gen" in list_arms() and get_arm("set3-toy-gen").group == "extension"
        assert paper_arms() == before and len(before) == 8
    finally:
        del REGISTRY._entries["toy-gen"]  # the registry is global: leave it as it was


@pytest.mark.parametrize("name", ["gbp", "deconv"])
def test_rule_generators_refuse_unpatched_models(name: str) -> None:
    with pytest.raises(ValueError, match="patch_activations"):
        generator_map(name, _net(), _batch(), TARGET, create_graph=False)


@pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")
@pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU activations")
@pytest.mark.parametrize(
    ("name", "captum_cls"), [("gbp", GuidedBackprop), ("deconv", Deconvolution)]
)
@pytest.mark.parametrize("fast_conv", [False, True])
def test_relu_net_maps_equal_captum(name: str, captum_cls: type, fast_conv: bool) -> None:
    net = _net(maxpool=True)
    patched = copy.deepcopy(net)
    assert patch_activations(patched) == 3
    x = _batch(size=12)
    reference = captum_cls(net).attribute(x, target=TARGET)
    for create_graph in (False, True):
        got = generator_map(
            name, patched, x, TARGET, create_graph=create_graph, how=PassConfig(fast_conv=fast_conv)
        )
        torch.testing.assert_close(got, reference, rtol=1e-10, atol=1e-12)
    plain = generator_map("gradient", patched, x, TARGET, create_graph=False)
    assert not torch.allclose(reference, plain)


def test_silu_net_gbp_differs_from_gradient_and_deconv() -> None:
    net = _net(nn.SiLU, bn=True)
    patch_activations(net)
    maps = {
        name: generator_map(name, net, _batch(), TARGET, create_graph=False)
        for name in ("gbp", "deconv", "gradient")
    }
    assert not torch.allclose(maps["gbp"], maps["gradient"])
    assert not torch.allclose(maps["gbp"], maps["deconv"])
    assert not torch.allclose(maps["deconv"], maps["gradient"])


class _SharpSiLU(nn.Module):
    """x * sigmoid(beta * x): SiLU for beta = 1, tends to ReLU as beta grows."""

    beta = 1000.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.beta * x)


def _sharpened(net: nn.Module, beta: float) -> nn.Module:
    out = copy.deepcopy(net)
    for parent in list(out.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, RuleActivation):
                setattr(parent, child_name, RuleActivation("silu", beta=beta))
    return out


@pytest.mark.parametrize("name", ["gbp", "deconv"])
def test_sharpened_silu_maps_converge_to_relu_maps(name: str) -> None:
    """With SiLU sharpened (beta = 1000) guided backprop and deconvNet give the ReLU net's maps:
    the deconv rule passes the positive gradient only and ignores the forward input (issue 9)."""
    relu_net = _net(nn.ReLU, bn=True, seed=2)
    patch_activations(relu_net)
    relu_net.eval()
    with torch.no_grad():
        for m in relu_net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    x = _batch(b=4, size=12, seed=4)
    target = torch.tensor([0, 1, 2, 1])
    relu_map = generator_map(name, relu_net, x, target, create_graph=False)
    cosines = []
    for beta in (1.0, 10.0, 1000.0):
        sharp = _sharpened(relu_net, beta).eval()
        got = generator_map(name, sharp, x, target, create_graph=False)
        cosines.append(nn.functional.cosine_similarity(got.flatten(1), relu_map.flatten(1)))
    assert (cosines[-1] > 0.999).all(), cosines[-1]
    if name == "deconv":  # the rule ignores the forward input: the ReLU map at every sharpness
        assert all((c > 1 - 1e-9).all() for c in cosines), cosines
    else:
        assert cosines[-1].mean() > cosines[0].mean()  # closer as SiLU sharpens
    # ... while the two rules stay distinct on the sharpened net.
    other = {"gbp": "deconv", "deconv": "gbp"}[name]
    sharp = _sharpened(relu_net, 1000.0).eval()
    assert not torch.allclose(
        generator_map(name, sharp, x, target, create_graph=False),
        generator_map(other, sharp, x, target, create_graph=False),
    )


@pytest.mark.parametrize("name", GENERATORS)
@pytest.mark.parametrize("act", [nn.ReLU, nn.SiLU])
def test_loss_on_map_trains_every_conv(name: str, act: type[nn.Module]) -> None:
    net = _net(act, bn=True)
    patch_activations(net)
    x = _batch()
    detached = generator_map(name, net, x, TARGET, create_graph=False)
    assert not detached.requires_grad
    raw = generator_map(name, net, x, TARGET, create_graph=True)
    assert raw.shape[0] == 3 and raw.shape[1] == 1 and raw.shape[-2:] == x.shape[-2:]
    torch.testing.assert_close(raw.detach(), detached)
    heat = to_heatmap(raw)
    loss = nn.functional.binary_cross_entropy(heat.clamp(1e-6, 1 - 1e-6), torch.rand_like(heat))
    loss.backward()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    for conv in convs:
        assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def _map_of(name: str, net: nn.Module, bn_mode: str, fast_conv: bool, stats=None):
    """The map as a function of the input and of every parameter (for gradcheck); in batch mode
    with the batch statistics ``stats`` as constants, as in training."""
    names = [n for n, _ in net.named_parameters()]

    class MapOf(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raw = generator_map(
                name, self.net, x, TARGET[: x.shape[0]], create_graph=True, how=PassConfig(bn_mode=bn_mode, bn_stats=stats, fast_conv=fast_conv))  # fmt: skip
            return raw

    wrapper = MapOf()

    def fn(x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        return functional_call(wrapper, {f"net.{n}": p for n, p in zip(names, params)}, (x,))

    params = [p.detach().clone().requires_grad_() for p in net.parameters()]
    return fn, params


@pytest.mark.parametrize("name", GENERATORS)
@pytest.mark.parametrize("bn_mode", ["frozen", "batch"])
@pytest.mark.parametrize("act", [nn.ReLU, nn.SiLU])
def test_map_gradgradcheck_float64(name: str, act: type[nn.Module], bn_mode: str) -> None:
    """d map / d (input, weights) by autograd equals finite differences (what training uses)."""
    net = _net(act, bn=True)
    patch_activations(net)
    net.train()
    with torch.no_grad():  # non-trivial frozen statistics
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    x = _batch(b=2, size=6)
    stats = _train_forward_stats(net, x) if bn_mode == "batch" else None
    fn, params = _map_of(name, net, bn_mode, fast_conv=True, stats=stats)
    inputs = _reachable(fn, (x.requires_grad_(), *params), order=1)
    assert torch.autograd.gradcheck(fn, inputs, fast_mode=True)
    # The saliency pass normalises with constant statistics (eval-mode batch_norm), which torch
    # differentiates to any order. Input and conv weights only: every extra tensor costs
    # finite-difference evaluations.
    conv_weight = [n.endswith("weight") and p.dim() == 4 for n, p in net.named_parameters()]
    inputs = tuple(
        t.detach().requires_grad_(t.requires_grad and keep)
        for t, keep in zip(_reachable(fn, inputs, order=2), [True, *conv_weight])
    )
    assert torch.autograd.gradgradcheck(fn, inputs, fast_mode=True)


def _reachable(fn, inputs: tuple[torch.Tensor, ...], order: int) -> tuple[torch.Tensor, ...]:
    """Inputs that the order-th derivative of fn reaches in the graph (others become constants).

    Some maps ignore some inputs (the ReLU deconvNet map ignores the biases); torch's fast gradcheck
    drops such outputs of the function it differentiates and then mismatches shapes.
    """
    diff = [t for t in inputs if t.requires_grad]
    out = fn(*inputs)
    grads = torch.autograd.grad(
        out, diff, torch.ones_like(out), create_graph=True, allow_unused=True
    )
    keep = iter([g is not None and (order == 1 or g.requires_grad) for g in grads])
    return tuple(t.detach().requires_grad_(t.requires_grad and next(keep)) for t in inputs)


def _train_forward_stats(net: nn.Module, x: torch.Tensor):
    """The batch statistics of a training forward, as the fit loop records them."""
    with torch.no_grad(), record_batch_stats(net) as stats:
        net.classify(x)
    return stats


def _coupled_map(name: str, net: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The old behaviour: BatchNorm computing batch statistics inside the saliency pass."""
    with batchnorm_mode(net, "frozen"):  # any mode, only to borrow its restore logic
        pass
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.track_running_stats = False
    try:
        x = x.detach().requires_grad_()
        score = net.classify(x).gather(1, target.view(-1, 1)).sum()
        rule = {"gbp": "guided", "deconv": "deconv"}.get(name, "normal")
        from trainables.activations import backward_rule

        with backward_rule(rule):
            (grad,) = torch.autograd.grad(score, x)
        return grad
    finally:
        for m in norms:
            m.track_running_stats = True


@pytest.mark.parametrize("name", GENERATORS)
def test_training_maps_are_per_image_float64(name: str) -> None:
    """Each image's training map equals the map of that image alone with the same statistics fixed
    (issue 9): the batch's BatchNorm statistics are constants of the saliency pass."""
    net = _net(nn.SiLU, bn=True)
    patch_activations(net)
    net.train()
    x, target = _batch(b=6, seed=3), torch.tensor([0, 1, 2, 0, 1, 2])
    stats = _train_forward_stats(net, x)
    assert len(stats) == 3
    batch = generator_map(
        name, net, x, target, create_graph=True, how=PassConfig(bn_mode="batch", bn_stats=stats)
    )
    for i in range(len(x)):
        alone = generator_map(
            name, net, x[i : i + 1], target[i : i + 1], create_graph=True, how=PassConfig(bn_mode="batch", bn_stats=stats))  # fmt: skip
        torch.testing.assert_close(batch[i : i + 1], alone, rtol=0, atol=1e-8)
    # Without recorded statistics generator_map computes the same ones from the batch.
    torch.testing.assert_close(
        generator_map(name, net, x, target, create_graph=False, how=PassConfig(bn_mode="batch")),
        batch.detach(),
    )
    # Independent oracle: a copy whose running statistics ARE those values, in plain eval mode.
    oracle = copy.deepcopy(net).eval()
    for (m, (mean, var)), m_copy in zip(
        stats.items(), [m for m in oracle.modules() if isinstance(m, nn.BatchNorm2d)]
    ):
        m_copy.running_mean.copy_(mean)
        m_copy.running_var.copy_(var)
    expected = generator_map(
        name, oracle, x, target, create_graph=False, how=PassConfig(bn_mode="frozen")
    )
    torch.testing.assert_close(batch.detach(), expected, rtol=1e-10, atol=1e-12)
    if name in ("gbp", "deconv", "gradient"):
        # The old coupled map is a different map (this test fails on the code before the fix).
        coupled = _coupled_map(name, net, x, target)
        cosine = nn.functional.cosine_similarity(coupled.flatten(1), batch.detach().flatten(1))
        assert cosine.min() < 0.99


@pytest.mark.parametrize("name", GENERATORS)
def test_batchnorm_modes(name: str) -> None:
    net = _net(nn.SiLU, bn=True)
    patch_activations(net)
    net.train()
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    x = _batch()
    x_other = x.clone()
    x_other[1:] = _batch(seed=7)[1:]
    stats = _train_forward_stats(net, x)  # the training forward updates the running statistics
    before = [copy.deepcopy(m.state_dict()) for m in norms]  # ... the saliency passes must not
    for bn_mode in ("frozen", "batch"):
        maps = [
            generator_map(
                name,
                net,
                inp,
                TARGET,
                create_graph=True,
                how=PassConfig(bn_mode=bn_mode, bn_stats=stats),
            )
            for inp in (x, x_other)
        ]
        # Image 0 is the same in both batches: with the statistics fixed, so is its map.
        torch.testing.assert_close(maps[0][0], maps[1][0], rtol=1e-12, atol=1e-14)
        assert all(m.training for m in norms)
        for norm, state in zip(norms, before):
            for key, value in norm.state_dict().items():
                assert torch.equal(value, state[key]), (bn_mode, key)
    frozen = generator_map(
        name, net, x, TARGET, create_graph=False, how=PassConfig(bn_mode="frozen")
    )
    batch = generator_map(name, net, x, TARGET, create_graph=False, how=PassConfig(bn_mode="batch"))
    if name != "gradcam" or frozen.abs().sum() + batch.abs().sum() > 0:
        assert not torch.allclose(frozen, batch)  # the two modes use different statistics
    with pytest.raises(ValueError, match="valid modes"):
        bad_mode = "eval"
        generator_map(name, net, x, TARGET, create_graph=False, how=PassConfig(bn_mode=bad_mode))
    with (
        pytest.raises(ValueError, match="training forward's statistics"),
        batchnorm_mode(net, "batch", {}),
    ):
        net.classify(x)
    assert set(batch_stats(net, x)) == set(stats)


def test_frozen_mode_needs_running_statistics() -> None:
    net = _net(bn=True)
    net.features[1] = nn.BatchNorm2d(4, track_running_stats=False).double()
    with pytest.raises(ValueError, match="features.1"), batchnorm_mode(net, "frozen"):
        pass


def test_gradcam_highlights_planted_feature() -> None:
    class BlobNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.ReLU())
            self.classification_head = nn.Sequential(
                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3)
            )
            with torch.no_grad():
                self.features[0].weight.copy_(
                    torch.stack([torch.ones(1, 3, 3), -torch.ones(1, 3, 3)])
                )
                self.features[0].bias.fill_(-0.5)
                self.classification_head[2].weight.copy_(
                    torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
                )

        def classify(self, x: torch.Tensor) -> torch.Tensor:
            return self.classification_head(self.features(x))

    x = torch.zeros(2, 1, 32, 32)
    x[0, 0, 4:10, 20:26] = 1.0
    x[1, 0, 22:28, 6:12] = 1.0
    cam = generator_map("gradcam", BlobNet(), x, 0, create_graph=False)
    assert cam.shape == (2, 1, 32, 32)
    for image, (rows, cols) in enumerate([((4, 10), (20, 26)), ((22, 28), (6, 12))]):
        peak = np.unravel_index(cam[image, 0].argmax().item(), (32, 32))
        assert rows[0] <= peak[0] < rows[1] and cols[0] <= peak[1] < cols[1]
        outside = cam[image, 0].clone()
        outside[rows[0] - 3 : rows[1] + 3, cols[0] - 3 : cols[1] + 3] = 0
        assert outside.max() == 0
    negative = generator_map("gradcam", BlobNet(), x, 2, create_graph=False)
    assert torch.equal(negative, torch.zeros_like(negative))  # only positive evidence


def test_to_heatmap_definition() -> None:
    raw = torch.randn(2, 3, 20, 24, generator=torch.Generator().manual_seed(0)).double()
    channel = raw.abs().argmax(1, keepdim=True)
    signed = raw.gather(1, channel)
    heat = to_heatmap(raw)
    assert heat.shape == (2, 1, 20, 24)
    torch.testing.assert_close(heat, signed.abs() / signed.abs().amax((2, 3), keepdim=True))
    positive = to_heatmap(raw, mode="positive")
    assert torch.equal(positive == 0, signed <= 0)
    assert torch.allclose(positive.amax((2, 3)), torch.ones(2, 1, dtype=raw.dtype))
    smooth = to_heatmap(raw[:, :1], smooth_sigma=1.5)
    expected = np.stack(
        [gaussian_filter(np.abs(r[0].numpy()), 1.5, mode="mirror") for r in raw[:, :1]]
    )
    expected /= expected.max(axis=(1, 2), keepdims=True)
    # torchvision builds the kernel in float32, hence the tolerance.
    np.testing.assert_allclose(smooth[:, 0].numpy(), expected, rtol=1e-6, atol=1e-7)
    assert torch.equal(to_heatmap(torch.zeros(1, 1, 4, 4)), torch.zeros(1, 1, 4, 4))
    leaf = raw.clone().requires_grad_()
    to_heatmap(leaf, smooth_sigma=1.0)[:, :, 5:9, 5:9].sum().backward()
    assert leaf.grad is not None and leaf.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="larger than"):
        to_heatmap(raw, smooth_sigma=10.0)
    with pytest.raises(ValueError, match="abs, positive"):
        to_heatmap(raw, mode="signed")  # type: ignore[arg-type]


class SmpClassifier(nn.Module):
    """The classify() contract of trainables.model.MultiTaskUNet, on a bare smp.Unet."""

    def __init__(self, encoder: str) -> None:
        super().__init__()
        self.unet = smp.Unet(
            encoder, encoder_weights=None, in_channels=1, classes=1, aux_params={"classes": 3}
        )

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet.classification_head(self.unet.encoder(x)[-1])


@pytest.fixture(scope="module", params=["efficientnet-b0", "tu-test_efficientnet"])
def smp_model(request: pytest.FixtureRequest) -> SmpClassifier:
    torch.manual_seed(0)
    model = SmpClassifier(request.param)
    patch_activations(model)
    # Random init + init running statistics (mean 0, var 1) shrink efficientnet-b0's signal by
    # ~0.5 per SiLU / SE gate: frozen-BN maps come out ~1e-16. Calibrate the statistics the way a
    # few epochs of training would (smp's efficientnet BN momentum is only 0.01).
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.momentum = None  # cumulative average
        norm.reset_running_stats()
    with torch.no_grad():
        for seed in range(3):
            model.classify(torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(seed)))
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    return model


@pytest.mark.parametrize("bn_mode", ["frozen", "batch"])
def test_real_smp_models(smp_model: SmpClassifier, bn_mode: str) -> None:
    smp_model.train()
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(5))
    target = torch.tensor([0, 2])
    maps = {}
    for name in GENERATORS:
        raw = generator_map(
            name, smp_model, x, target, create_graph=True, how=PassConfig(bn_mode=bn_mode)
        )
        assert raw.shape == (2, 1, 32, 32) and torch.isfinite(raw).all()
        if name == "gradcam":  # all zero when the class has no positive evidence (random init)
            assert (raw >= 0).all()
        else:
            assert (to_heatmap(raw).amax((1, 2, 3)) > 0.99).all()
        maps[name] = raw.detach()
        if name == "gradient":
            trained = raw
    smp_model.zero_grad()
    to_heatmap(trained).mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in smp_model.parameters())
    # captum's "GBP" on SiLU networks is the plain gradient; ours is not.
    assert not torch.allclose(maps["gbp"], maps["gradient"])
    assert not torch.allclose(maps["gbp"], maps["deconv"])


def test_train_mode_maps_are_deterministic_despite_dropout():
    """Dropout / stochastic depth are off in the saliency pass: two calls give the same map."""
    from trainables.model import build_model

    torch.manual_seed(0)
    model = build_model("efficientnet-b0", None, (16, 8, 8)).train()
    x = torch.rand(4, 1, 32, 32)
    target = torch.tensor([0, 1, 2, 0])
    a = generator_map("gbp", model, x, target, create_graph=False, how=PassConfig(bn_mode="batch"))
    b = generator_map("gbp", model, x, target, create_graph=False, how=PassConfig(bn_mode="batch"))
    torch.testing.assert_close(a, b)
    assert model.training and all(m.training for m in model.modules())  # modes restored
