"""Why does (or doesn't) a loss on a heatmap steer the classifier? Two measurements per generator.

    python -m benchmarks.guidance_diagnosis                  # trains a no-seg model briefly first
    python -m benchmarks.guidance_diagnosis --model model.pt # or diagnose a trained model.pt

1. Sensitivity to the top of the network (Adebayo et al. 2018, cascading randomisation): the cosine
   between each generator's heatmap of the model and of the same model with its classification
   head re-initialised. A map that barely changes when the head -- the decision -- is replaced
   cannot tell the loss on it what the decision depends on.
2. Where a loss on the map pushes the weights: for each guidance loss (set 1's BCE on the GBP,
   deconvNet or Grad-CAM map; rrr and rrr-share on the input gradient; gbp-share), the norm of its
   gradient on the classification head and on the encoder, relative to the classification loss's
   gradient there. A loss whose gradient never reaches the head changes features, not the
   decision rule.

Prints tables (ratios, no pass/fail), on the images of the shortcut twin's training split.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import platform

import torch
import torch.nn.functional as F

from study.presets import TINY_DECODER, TINY_ENCODER
from trainables.config import DataConfig, TrialConfig
from trainables.data.prepare import prepare_data
from trainables.device_data import DeviceData
from trainables.fit import fit, step_terms
from trainables.model import build_model
from trainables.model_sets import get_arm
from trainables.saliency import generator_map, to_heatmap

GENERATORS = ("gbp", "deconv", "gradient", "logprob-gradient", "gradcam")
LOSS_ARMS = ("set1-gbp", "set1-deconv", "set1-gradcam", "rrr", "rrr-share", "gbp-share")


def randomisation_cosines(model: torch.nn.Module, x: torch.Tensor, seed: int = 0) -> dict:
    """Per generator: mean cosine (over images) between maps before and after re-initialising the
    classification head; 1 = the map ignores the head."""
    model.eval()
    other = copy.deepcopy(model)
    torch.manual_seed(seed)
    for m in other.unet.classification_head.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    with torch.no_grad():
        target = model.classify(x).argmax(1)
    out = {}
    for name in GENERATORS:
        a = to_heatmap(generator_map(name, model, x, target, create_graph=False)).flatten(1)
        b = to_heatmap(generator_map(name, other, x, target, create_graph=False)).flatten(1)
        out[name] = F.cosine_similarity(a, b, dim=1).nan_to_num(0.0).mean().item()
    return out


def _grad_norms(model: torch.nn.Module, loss: torch.Tensor) -> dict[str, float]:
    groups = {"head": list(model.unet.classification_head.parameters()),
              "encoder": list(model.unet.encoder.parameters())}  # fmt: skip
    params = [p for ps in groups.values() for p in ps]
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    lookup = dict(zip(map(id, params), grads, strict=True))
    out = {}
    for name, ps in groups.items():
        sq = sum(float(lookup[id(p)].pow(2).sum()) for p in ps if lookup[id(p)] is not None)
        out[name] = sq**0.5
    return out


def loss_gradient_ratios(model: torch.nn.Module, cfg: TrialConfig, batch) -> dict[str, dict]:
    """Per guidance arm: |grad of its guidance term| / |grad of the classification term| on the
    head and on the encoder (same batch, same weights, train mode), as the terms are ("raw") and
    as the arm's total loss weighs them (gamma, rrr_lambda, share_lambda: "weighted")."""
    model.train()
    x, gaze, y = batch
    out = {}
    for arm_name in LOSS_ARMS:
        arm = get_arm(arm_name)
        terms = step_terms(model, arm, dataclasses.replace(cfg, arm=arm_name), x, gaze, y)
        (name,) = [k for k in terms if k not in ("cls", "total")]  # one guidance term per arm
        # The total is linear in its terms: its derivatives are the weights it gives them.
        w_cls, w_gui = torch.autograd.grad(
            terms["total"], [terms["cls"], terms[name]], retain_graph=True
        )
        cls = _grad_norms(model, terms["cls"])
        gui = _grad_norms(model, terms[name])
        raw = {g: gui[g] / max(cls[g], 1e-12) for g in cls}
        weight = float(w_gui) / float(w_cls)
        out[arm_name] = {
            **{f"raw {g}": r for g, r in raw.items()},
            **{f"weighted {g}": r * weight for g, r in raw.items()},
            "weight": weight,
        }
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="a model.pt written by a trial (default: train no-seg briefly)")
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--shortcut", default="marker")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--out", default="outputs/diagnosis")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    data = prepare_data(
        DataConfig(data_dir=args.data_dir, synthetic_images=args.images, image_size=args.size,
                   synthetic_shortcut=args.shortcut, synthetic_shortcut_test="shuffled"),
        progress=False,
    )  # fmt: skip
    cfg = TrialConfig(arm="no-seg", epochs=args.epochs, encoder=TINY_ENCODER,
                      decoder_channels=TINY_DECODER, panels=0,
                      bootstrap_resamples=20)  # fmt: skip
    if args.model:
        saved = torch.load(args.model, map_location="cpu", weights_only=True)
        cfg = TrialConfig(
            **{**saved["config"], "decoder_channels": tuple(saved["config"]["decoder_channels"])}
        )
        model = build_model(cfg.encoder, None, cfg.decoder_channels)
        model.load_state_dict(saved["state_dict"])
        source = args.model
    else:
        fit(cfg, data, args.out, log=lambda m: None)
        saved = torch.load(f"{args.out}/model/model.pt", map_location="cpu", weights_only=True)
        model = build_model(cfg.encoder, None, cfg.decoder_channels)
        model.load_state_dict(saved["state_dict"])
        source = f"no-seg trained {args.epochs} epochs on the {args.shortcut} shortcut twin"
    dd = DeviceData(data, torch.device("cpu"))
    idx = dd.indices("train")[:32]
    batch = dd.batch(idx)
    print(f"# benchmarks.guidance_diagnosis: {source}; {args.size} px; CPU {platform.machine()}, "
          f"torch {torch.__version__}")  # fmt: skip
    print("\n1. cosine of each heatmap before / after re-initialising the classification head")
    for name, cos in randomisation_cosines(model, batch[0]).items():
        print(f"   {name:<18} {cos:6.3f}")
    print("\n2. |grad of the guidance term| / |grad of the classification term|, same batch")
    print("   (raw: the terms as computed; weighted: as the arm's total loss weighs them)")
    print(
        f"   {'arm':<14} {'weight':>7} {'raw head':>9} {'raw enc':>8} {'w. head':>8} {'w. enc':>8}"
    )
    for arm, r in loss_gradient_ratios(model, cfg, batch).items():
        print(
            f"   {arm:<14} {r['weight']:7.3f} {r['raw head']:9.3f} {r['raw encoder']:8.3f} "
            f"{r['weighted head']:8.3f} {r['weighted encoder']:8.3f}"
        )


if __name__ == "__main__":
    main()
