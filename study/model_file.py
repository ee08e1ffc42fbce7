"""What ``gaze-study predict`` accepts as a model file, checked before anything is built from it.

A ``model.pt`` is input (a run's artifact, a file someone sent). ``torch.load(weights_only=True)``
refuses code, not size: a 1.8 KB file whose config holds 60 nested lists sharing one list
(``a = [a, a]``) is 2**60 values to anything that walks or prints it (3.8 GB and minutes through a
plain repr), and an ``image_size`` of 20032 asks for 9.6 GB. So, in this order and without
recursion: the file's size, the dict's shape, a node and depth budget on the config (a shared
list counted as often as it appears, as a walk would expand it), the types and ranges of every
value predict uses, the state dict's shape; only then the encoder name (smp's and timm's lists, no
download) and the model. Each check raises ``ModelFileError`` with a short reason.
"""

from __future__ import annotations

from typing import Any

MAX_FILE_BYTES = 1 << 30  # efficientnet-b0's U-Net is ~25 MB; a GB is no model of ours
CONFIG_NODES = 1_000  # TrialConfig has ~30 fields: values, keys and list items together
CONFIG_DEPTH = 3  # config -> decoder_channels -> width
MAX_TEXT = 256  # characters of one string in the config
STATE_ENTRIES = 10_000  # parameters and buffers (efficientnet-b7's U-Net has ~1,500)
IMAGE_SIZES = (32, 2048)  # the trained sizes this study uses (the CLI's --image-size floor is 32)
DECODER_STAGES = (1, 5)  # smp's U-Net: one decoder stage per encoder stage, at most 5
DECODER_WIDTH = (1, 2048)
_SCALARS = (str, int, float, bool, type(None))


class ModelFileError(ValueError):
    """The file is not a model predict can use; the message says why (short, no values dumped)."""


def check_size(n_bytes: int) -> None:
    if n_bytes > MAX_FILE_BYTES:
        raise ModelFileError(f"{n_bytes} bytes: larger than any model ({MAX_FILE_BYTES} max)")


def check_plain(value: Any, what: str, nodes: int = CONFIG_NODES, depth: int = CONFIG_DEPTH):
    """Refuse anything but plain scalars in dicts and lists, past ``nodes`` values or ``depth``.

    Iterative, and counting a value each time it is reached: a list shared n times costs n times
    its size, as it would to whoever expands it. Children are counted before they are pushed, so
    a list of a billion items is refused without pushing them.
    """
    stack, seen = [(value, 0)], 1
    while stack:
        item, level = stack.pop()
        if isinstance(item, str) and len(item) > MAX_TEXT:
            raise ModelFileError(f"{what} has a string of {len(item)} characters")
        if not isinstance(item, dict | list | tuple):
            if not isinstance(item, _SCALARS):
                raise ModelFileError(f"{what} holds a {type(item).__name__}, not a plain value")
            continue
        seen += 2 * len(item) if isinstance(item, dict) else len(item)
        if seen > nodes:
            raise ModelFileError(f"{what} has more than {nodes} values (nested lists?)")
        if item and level + 1 > depth:
            raise ModelFileError(f"{what} is nested deeper than {depth} levels")
        children = [x for kv in item.items() for x in kv] if isinstance(item, dict) else item
        stack.extend((c, level + 1) for c in children)


def _int_in(value: Any, bounds: tuple[int, int]) -> bool:
    return (
        isinstance(value, int) and not isinstance(value, bool) and bounds[0] <= value <= bounds[1]
    )


def check_saved(saved: Any, known_fields: set[str]) -> dict[str, Any]:
    """The config (known fields only) of a loaded ``model.pt``, after checking its structure, the
    values predict builds the model from, and its state dict (its image size: ``image_size``).

    Raises:
        ModelFileError: naming the first problem.
    """
    if not isinstance(saved, dict) or not {"state_dict", "config"} <= set(saved):
        raise ModelFileError("expected a dict with 'state_dict' and 'config' (fit's model.pt)")
    config = saved["config"]
    if not isinstance(config, dict):
        raise ModelFileError(f"its config is a {type(config).__name__}, not a dict")
    check_plain(config, "its config")
    kept = {k: v for k, v in config.items() if k in known_fields}
    for field in ("arm", "encoder"):  # absent: TrialConfig's default
        if field in kept and not isinstance(kept[field], str):
            raise ModelFileError(f"its config's {field} is not a name")
    if "decoder_channels" in kept:  # absent: TrialConfig's default widths
        widths = kept["decoder_channels"]
        if not (
            isinstance(widths, list | tuple)
            and _int_in(len(widths), DECODER_STAGES)
            and all(_int_in(w, DECODER_WIDTH) for w in widths)
        ):
            raise ModelFileError(
                f"decoder_channels must be {DECODER_STAGES[0]}-{DECODER_STAGES[1]} widths of "
                f"{DECODER_WIDTH[0]}-{DECODER_WIDTH[1]} channels"
            )
        kept["decoder_channels"] = tuple(widths)
    check_state_dict(saved["state_dict"])
    return kept


def image_size(saved: dict[str, Any], decoder_channels: tuple[int, ...]) -> int:
    """The size the model was trained at: within ``IMAGE_SIZES``, a multiple of the U-Net's
    stride (``saved`` passed ``check_saved``)."""
    # fit saves the image size beside the config (older files had it inside the config).
    size = saved.get("image_size", saved["config"].get("image_size"))
    stride = 2 ** len(decoder_channels)
    if not _int_in(size, IMAGE_SIZES) or size % stride:
        low, high = IMAGE_SIZES
        raise ModelFileError(
            f"image_size {size if isinstance(size, int) else type(size).__name__} is not a "
            f"trained size ({low}-{high} px, a multiple of the U-Net's stride {stride})"
        )
    return size


def check_state_dict(state: Any) -> None:
    import torch

    if not isinstance(state, dict):
        raise ModelFileError(f"its state_dict is a {type(state).__name__}, not a dict of tensors")
    if len(state) > STATE_ENTRIES:
        raise ModelFileError(f"its state_dict has {len(state)} entries ({STATE_ENTRIES} max)")
    for key, value in state.items():
        if not isinstance(key, str) or len(key) > MAX_TEXT or not isinstance(value, torch.Tensor):
            raise ModelFileError("its state_dict is not parameter names mapped to tensors")


def check_encoder(name: str) -> None:
    """An smp encoder name or ``tu-<timm model>``, looked up in their registries (never built,
    never downloaded)."""
    import segmentation_models_pytorch as smp
    import timm

    known = name in smp.encoders.get_encoder_names()
    if not known and name.startswith("tu-"):
        known = timm.is_model(name[3:])
    if not known:
        raise ModelFileError(
            f"encoder {name[:MAX_TEXT]!r} is neither an smp encoder nor tu-<a timm model>"
        )


def task(saved: dict[str, Any]):
    """The classes the model's head predicts: the file's ``task`` (a model trained before tasks
    were recorded predicts the default dataset's classes, EGD-CXR's).

    Raises:
        ValueError: a ``task`` that is not a list of 2-64 class names and a flag.
    """
    from trainables.data.datasets import task_of
    from trainables.task import Task

    value = saved.get("task")
    if value is None:
        return task_of("egd-cxr")
    check_plain(value, "task")
    if not isinstance(value, dict) or not isinstance(value.get("classes"), list | tuple):
        raise TypeError("task must be {'classes': [...], 'exclusive': bool}")
    if not 2 <= len(value["classes"]) <= 64 or not all(isinstance(c, str) and 0 < len(c) <= 64 for c in value["classes"]):  # fmt: skip
        raise ValueError("task classes must be 2-64 names of 1-64 characters")
    return Task.from_dict(value)
