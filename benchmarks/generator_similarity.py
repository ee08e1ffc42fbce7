"""How alike are the generators' heatmaps? Cosine similarity per image between pairs of generators.

    python -m benchmarks.generator_similarity                 # efficientnet-b0, synthetic twin, 128 px
    python -m benchmarks.generator_similarity --model model.pt  # a trained model.pt instead of random init

The model is the paper's (efficientnet-b0 encoder, in_channels=1); with random init its BatchNorm
running statistics are first warmed up on the images (train-mode forwards without gradients), then
maps are taken as in evaluation: eval mode, predicted class, one image's map independent of the
others. Prints, for each pair, the mean / min / max over images of the cosine between the two
``to_heatmap`` maps (1 = the same map). Used to check that deconvNet is not a copy of guided backprop.
"""

from __future__ import annotations

import argparse
import itertools
import platform

import numpy as np
import torch

from trainables.config import DataConfig
from trainables.data.prepare import prepare_data
from trainables.model import build_model
from trainables.saliency import PassConfig, generator_map, to_heatmap


def _images(size: int, count: int, data_dir: str) -> torch.Tensor:
    data = prepare_data(
        DataConfig(data_dir=data_dir, image_size=size, synthetic_images=60), progress=False
    )
    x = torch.from_numpy(data.images[:count].astype(np.float32) / 255.0)
    return x.unsqueeze(1)


def cosine_table(model: torch.nn.Module, x: torch.Tensor, names: list[str]) -> list[tuple]:
    """(pair, mean, min, max) cosine over images between to_heatmap maps of each generator pair."""
    model.eval()
    with torch.no_grad():
        target = model.classify(x).argmax(1)
    maps = {
        n: to_heatmap(
            generator_map(n, model, x, target, create_graph=False, how=PassConfig(bn_mode="frozen"))
        ).flatten(1)
        for n in names
    }
    rows = []
    for a, b in itertools.combinations(names, 2):
        cos = torch.nn.functional.cosine_similarity(maps[a], maps[b], dim=1)
        rows.append((f"{a} vs {b}", cos.mean().item(), cos.min().item(), cos.max().item()))
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoder", default="efficientnet-b0")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--generators", default="gbp,deconv,gradient")
    p.add_argument("--model", default=None, help="a model.pt written by a trial (else random init)")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    x = _images(args.size, args.images, args.data_dir)
    if args.model:
        saved = torch.load(args.model, map_location="cpu", weights_only=True)
        cfg = saved["config"]
        model = build_model(cfg["encoder"], None, tuple(cfg["decoder_channels"]))
        model.load_state_dict(saved["state_dict"])
        source = args.model
    else:
        model = build_model(args.encoder, None)
        model.train()
        with torch.no_grad():
            for _ in range(20):  # BN momentum 0.1: running statistics settle on these images
                model.classify(x)
        source = f"{args.encoder}, random init, BN statistics warmed up on the images"
    print(
        f"# benchmarks.generator_similarity: {source}; {args.images} synthetic images at "
        f"{args.size} px; CPU {platform.machine()}, torch {torch.__version__}"
    )
    print(f"{'pair':<22} {'mean':>6} {'min':>6} {'max':>6}")
    for pair, mean, lo, hi in cosine_table(model, x, args.generators.split(",")):
        print(f"{pair:<22} {mean:6.3f} {lo:6.3f} {hi:6.3f}")


if __name__ == "__main__":
    main()
