"""The `lrpfn` command line (also `python -m lrpfn`).

    lrpfn explain --model torchvision:vgg16 --weights vgg16.pth --input photos/ \\
        --rules epsilon_gamma_box --out heatmaps/
    lrpfn explain --model mypackage.models:make_net --input digit.png --rules alpha2beta1 \\
        --crop 28 --grayscale --out heatmaps/ --save-npy
    lrpfn rules                                    # rule keys, presets and their parameters
    lrpfn check --model torchvision:resnet50 --rules epsilon_plus   # pre-flight report

Models are `torchvision:NAME` (weights from a local `--weights` file; without one the
weights are random and a warning says so) or `module:attr` / `path/to/file.py:attr`, an
`nn.Module` or a callable returning one. Images are read with Pillow and preprocessed as
for ImageNet for torchvision models (resize 256, centre crop 224, normalise with the
ImageNet mean and std); `--resize`, `--crop`, `--mean`, `--std`, `--grayscale` override
that. For `epsilon_gamma_box` the box bounds are the pixel range [0, 1] after
normalisation, per channel: `low = -mean / std`, `high = (1 - mean) / std`.

Every error exits with status 1 (2 for malformed arguments) and a message naming the
problem, without a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import composites, image, rules as rule_classes
from ._api import lrp, prepare
from ._plan import Plan
from .composites import PRESETS
from .errors import LRPError, UnsupportedNodeError
from .rules import RULE_KEYS

__all__ = [
    "CLIError",
    "Preprocessing",
    "describe",
    "find_images",
    "imagenet_preprocessing",
    "load_model",
    "main",
    "make_rules",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
PATTERN_KEYS = ("patternnet", "patternattribution")


class CLIError(Exception):
    """A problem with the command line's arguments or files: shown as one line, no traceback."""


# --- models -------------------------------------------------------------------------------


def load_model(
    spec: str, weights: str | None = None, *, warn: bool = True
) -> tuple[torch.nn.Module, bool]:
    """The model named by `spec`, in eval mode, and whether it is a torchvision model.

    `spec` is `torchvision:NAME` or `module:attr` (`attr` an `nn.Module` or a callable
    returning one; `module` a dotted module name or a `.py` file). `weights` is a local
    file holding a state dict (or a checkpoint dict with a "state_dict" entry).
    """
    source, sep, name = spec.partition(":")
    if not sep or not source or not name:
        raise CLIError(
            f"unknown model {spec!r}: use torchvision:NAME (e.g. torchvision:vgg16) or "
            "module:attr naming an nn.Module or a function returning one."
        )
    if source == "torchvision":
        model = _torchvision_model(name)
        if weights is None and warn:
            print(
                f"lrpfn: warning: no --weights given: {name} has RANDOM weights, so its "
                "explanations mean nothing. Pass --weights FILE (a state dict saved with "
                "torch.save(model.state_dict(), FILE)).",
                file=sys.stderr,
            )
    else:
        model = _user_model(source, name, spec)
    if weights is not None:
        _load_weights(model, weights, spec)
    return model.eval(), source == "torchvision"


def _torchvision_model(name: str) -> torch.nn.Module:
    try:
        import torchvision
    except ImportError as error:
        raise CLIError(
            "torchvision is not installed: pip install 'lrpfn[vision]' to use torchvision:NAME."
        ) from error
    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise CLIError(
            f"unknown model 'torchvision:{name}': not an image classifier of torchvision "
            f"{torchvision.__version__} (e.g. {', '.join(sorted(known)[:6])}, ...)."
        )
    return torchvision.models.get_model(name, weights=None)


def _user_model(source: str, attr: str, spec: str) -> torch.nn.Module:
    module = _import(source, spec)
    value: Any = module
    for part in attr.split("."):
        if not hasattr(value, part):
            raise CLIError(f"unknown model {spec!r}: {source!r} has no attribute {attr!r}.")
        value = getattr(value, part)
    if not isinstance(value, torch.nn.Module):
        if not callable(value):
            raise CLIError(f"model {spec!r} is neither an nn.Module nor a callable returning one.")
        value = value()
    if not isinstance(value, torch.nn.Module):
        raise CLIError(
            f"model {spec!r}: calling {attr}() returned {type(value).__name__}, not an nn.Module."
        )
    return value


def _import(source: str, spec: str) -> Any:
    if source.endswith(".py"):
        path = Path(source)
        if not path.is_file():
            raise CLIError(f"model file not found: {source} (from --model {spec}).")
        loaded = importlib.util.spec_from_file_location(path.stem, path)
        assert loaded is not None and loaded.loader is not None
        module = importlib.util.module_from_spec(loaded)
        loaded.loader.exec_module(module)
        return module
    if "" not in sys.path:
        sys.path.insert(0, "")  # the current directory, as for `python -m`
    try:
        return importlib.import_module(source)
    except ModuleNotFoundError as error:
        raise CLIError(
            f"unknown model {spec!r}: cannot import module {source!r} ({error})."
        ) from error


def _load_weights(model: torch.nn.Module, weights: str, spec: str) -> None:
    path = Path(weights)
    if not path.is_file():
        raise CLIError(f"weights file not found: {weights}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CLIError(f"cannot read weights file {weights}: {error}".splitlines()[0]) from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CLIError(f"weights file {weights} holds a {type(state).__name__}, not a state dict.")
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        problem = " ".join(str(error).split())
        raise CLIError(f"weights file {weights} does not fit {spec}: {problem[:300]}") from error


# --- rules --------------------------------------------------------------------------------


def make_rules(name: str, mean: Sequence[float], std: Sequence[float]) -> Any:
    """The rule mapping for `--rules NAME`: a TorchLRP rule key or a preset composite.

    `epsilon_gamma_box` gets the bounds of the normalised pixel range [0, 1] per channel.
    """
    check_rule_name(name)
    if name == "epsilon_gamma_box":
        mean_t = torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
        return composites.epsilon_gamma_box(low=(0.0 - mean_t) / std_t, high=(1.0 - mean_t) / std_t)
    if name in PRESETS:
        return PRESETS[name]()
    return RULE_KEYS[name]()


def check_rule_name(name: str) -> None:
    """Raise `CLIError` unless `name` is a rule key or preset usable from the command line."""
    if name in PRESETS or name in RULE_KEYS:
        return
    if name in PATTERN_KEYS:
        raise CLIError(
            f"rule {name!r} needs patterns fitted on training data, which the command line "
            "cannot do: use lrpfn.patterns.fit and lrpfn.rules.PatternNet in Python."
        )
    raise CLIError(
        f"unknown rule {name!r}; choose a rule key ({', '.join(RULE_KEYS)}) or a preset "
        f"({', '.join(PRESETS)}); `lrpfn rules` lists them."
    )


# --- images -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How files become network inputs: resize the shorter side, centre-crop, normalise."""

    resize: int | None
    crop: int | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    grayscale: bool

    def load(self, path: Path) -> torch.Tensor:
        """The image at `path` as a `(C, H, W)` float tensor."""
        try:
            from PIL import Image
        except ImportError as error:
            raise CLIError("Pillow is not installed: pip install 'lrpfn[vision]'.") from error
        try:
            with Image.open(path) as opened:
                picture = opened.convert("L" if self.grayscale else "RGB")
        except OSError as error:
            raise CLIError(f"cannot read image {path}: {error}".splitlines()[0]) from error
        if self.resize is not None:
            width, height = picture.size
            scale = self.resize / min(width, height)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            picture = picture.resize(size, Image.Resampling.BILINEAR)
        if self.crop is not None:
            width, height = picture.size
            if width < self.crop or height < self.crop:
                raise CLIError(
                    f"image {path} is {width}x{height}, smaller than --crop {self.crop}; "
                    "add --resize."
                )
            left, top = round((width - self.crop) / 2), round((height - self.crop) / 2)
            picture = picture.crop((left, top, left + self.crop, top + self.crop))
        pixels = np.asarray(picture, dtype=np.float32) / 255.0
        x = torch.from_numpy(pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1).copy())
        mean = torch.tensor(self.mean).reshape(-1, 1, 1)
        std = torch.tensor(self.std).reshape(-1, 1, 1)
        return (x - mean) / std


def imagenet_preprocessing(resize: int = 256, crop: int = 224) -> Preprocessing:
    """Resize the shorter side to 256, centre-crop 224, normalise with ImageNet's statistics."""
    return Preprocessing(resize, crop, IMAGENET_MEAN, IMAGENET_STD, grayscale=False)


def _preprocessing(args: argparse.Namespace, torchvision_model: bool) -> Preprocessing:
    channels = 1 if args.grayscale else 3
    default_mean, default_std = (
        (IMAGENET_MEAN, IMAGENET_STD) if torchvision_model else ((0.0,) * 3, (1.0,) * 3)
    )
    mean = tuple(args.mean) if args.mean is not None else default_mean[:channels]
    std = tuple(args.std) if args.std is not None else default_std[:channels]
    for label, values in (("--mean", mean), ("--std", std)):
        if len(values) not in (1, channels):
            raise CLIError(f"{label} needs 1 or {channels} values, got {len(values)}.")
    if len(mean) == 1:
        mean = mean * channels
    if len(std) == 1:
        std = std * channels
    if any(value <= 0 for value in std):
        raise CLIError(f"--std values must be positive, got {std}.")
    resize = args.resize if args.resize is not None else (256 if torchvision_model else None)
    crop = args.crop if args.crop is not None else (224 if torchvision_model else None)
    return Preprocessing(resize, crop, mean, std, args.grayscale)


def find_images(spec: str) -> tuple[Path, list[Path]]:
    """The root folder and the image files of `--input` (a file, or a folder searched
    recursively), sorted."""
    path = Path(spec)
    if path.is_file():
        return path.parent, [path]
    if not path.is_dir():
        raise CLIError(f"input not found: {spec}")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CLIError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {spec}")
    return path, files


# --- commands -----------------------------------------------------------------------------


def _device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CLIError(f"--device {name}: CUDA is not available on this machine; use --device cpu.")
    try:
        return torch.device(name)
    except RuntimeError as error:
        raise CLIError(f"unknown device {name!r}: {error}") from error


def _explain(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be at least 1, got {args.batch_size}.")
    check_rule_name(args.rules)
    root, files = find_images(args.input)
    device = _device(args.device)
    model, is_torchvision = load_model(args.model, args.weights)
    preprocessing = _preprocessing(args, is_torchvision)
    plan = prepare(model.to(device), make_rules(args.rules, preprocessing.mean, preprocessing.std))
    out = Path(args.out)
    bar = tqdm(total=len(files), unit="image", disable=args.quiet or None, file=sys.stderr)
    for start in range(0, len(files), args.batch_size):
        batch = files[start : start + args.batch_size]
        x = _stack([preprocessing.load(path) for path in batch], batch).to(device)
        _explain_batch(plan, model, x, batch, root, out, preprocessing, args, bar)
        bar.update(len(batch))
    bar.close()
    print(f"wrote {len(files)} heatmap(s) to {out}")
    return 0


def _stack(inputs: list[torch.Tensor], paths: list[Path]) -> torch.Tensor:
    shapes = {tuple(x.shape) for x in inputs}
    if len(shapes) > 1:
        found = ", ".join(
            f"{p.name} {tuple(x.shape[1:])}" for p, x in zip(paths, inputs, strict=True)
        )
        raise CLIError(
            f"images of one batch differ in size ({found}): pass --crop N (and --resize N), "
            "or --batch-size 1."
        )
    return torch.stack(inputs)


def _explain_batch(plan, model, x, batch, root, out, preprocessing, args, bar) -> None:
    with torch.no_grad():
        logits = model(x)
    if logits.ndim != 2:
        raise CLIError(f"the model's output has shape {tuple(logits.shape)}, not (batch, classes).")
    target = logits.argmax(1) if args.target is None else args.target
    relevance = lrp(plan, x, target=target)
    index = torch.as_tensor(target, device=logits.device).expand(len(batch))
    explained = logits.gather(1, index[:, None]).squeeze(1)
    heat = image.heatmap(relevance, args.cmap)
    if args.overlay:
        pixels = image.to_pixels(x, preprocessing.mean, preprocessing.std)
        blended = image.overlay(pixels, heat, args.alpha)
    for i, path in enumerate(batch):
        stem = out / path.relative_to(root).with_suffix("")
        image.save_png(heat[i], stem.with_suffix(".png"))
        if args.overlay:
            image.save_png(blended[i], stem.parent / f"{stem.name}_overlay.png")
        if args.save_npy:
            np.save(stem.with_suffix(".npy"), relevance[i].detach().cpu().numpy())
        bar.write(
            f"{path}: class {int(index[i])}, logit {float(explained[i]):.4g}, "
            f"relevance sum {float(relevance[i].sum()):.4g}",
            file=sys.stdout,
        )


def _rules(args: argparse.Namespace) -> int:
    print("Rule keys (TorchLRP's; --rules KEY):")
    for key, make in RULE_KEYS.items():
        print(f"  {key:<20} {make()!r}")
    for key in PATTERN_KEYS:
        print(f"  {key:<20} needs patterns: Python only (lrpfn.patterns.fit)")
    print("\nPresets (lrpfn.composites; --rules NAME):")
    for name, preset in PRESETS.items():
        summary = " ".join((preset.__doc__ or "").split())
        print(f"  {name:<26} {name}({_parameters(preset)})")
        print(f"  {'':<26} {summary}")
    print(
        "  (on the command line epsilon_gamma_box's low and high are the normalised pixel "
        "range [0, 1] per channel)"
    )
    print("\nRule classes (lrpfn.rules, for Python):")
    for name in sorted(dir(rule_classes)):
        value = getattr(rule_classes, name)
        if isinstance(value, type) and dataclasses.is_dataclass(value):
            print(f"  {name}({_parameters(value)})")
    return 0


def _check(args: argparse.Namespace) -> int:
    check_rule_name(args.rules)
    model, is_torchvision = load_model(args.model, args.weights, warn=False)
    preprocessing = _preprocessing(args, is_torchvision)
    try:
        plan = prepare(model, make_rules(args.rules, preprocessing.mean, preprocessing.std))
    except UnsupportedNodeError as error:
        print(f"{args.model}: not ready to explain.\n{error}")
        return 1
    _print_table(plan, args.model, args.rules)
    return 0


def _print_table(plan: Plan, model: str, rules: str) -> None:
    infos = composites.node_infos(plan.module, plan.handlers)
    print(f"{model}: every node has a handler; rules resolved from {rules!r}:")
    width = max((len(info.name) for info in infos), default=4)
    source_width = max((len(info.module or "") for info in infos), default=6)
    print(f"  {'node':<{width}}  {'module':<{source_width}}  {'family':<13}  rule")
    for info in infos:
        print(
            f"  {info.name:<{width}}  {info.module or '':<{source_width}}  {info.family:<13}  "
            f"{describe(plan.rules[info.name])}"
        )


def describe(rule: Any) -> str:
    """A rule as `Name(field=value, ...)`, tensors shown as short lists of numbers."""
    if not dataclasses.is_dataclass(rule) or isinstance(rule, type):
        return repr(rule)
    fields = []
    for field in dataclasses.fields(rule):
        value = getattr(rule, field.name)
        if isinstance(value, torch.Tensor):
            numbers = [round(float(v), 4) for v in value.flatten()[:8]]
            value = numbers[0] if len(numbers) == 1 else numbers
        fields.append(f"{field.name}={value!r}")
    return f"{type(rule).__name__}({', '.join(fields)})"


def _parameters(function: Any) -> str:
    return ", ".join(
        name if parameter.default is inspect.Parameter.empty else f"{name}={parameter.default!r}"
        for name, parameter in inspect.signature(function).parameters.items()
    )


# --- argument parsing ---------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lrpfn", description="Explain PyTorch models with Layer-wise Relevance Propagation."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    explain = commands.add_parser("explain", help="write a heatmap PNG per input image")
    _model_arguments(explain)
    explain.add_argument("--input", required=True, help="an image file or a folder of images")
    explain.add_argument("--out", required=True, help="folder for the heatmaps")
    explain.add_argument("--target", type=int, help="class to explain (default: the prediction)")
    explain.add_argument("--batch-size", type=int, default=8, help="images per batch (8)")
    explain.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    explain.add_argument("--save-npy", action="store_true", help="also save relevance as .npy")
    explain.add_argument(
        "--overlay", action="store_true", help="also save the heatmap over the image"
    )
    explain.add_argument("--alpha", type=float, default=0.6, help="overlay opacity (0.6)")
    explain.add_argument("--cmap", default="bwr", choices=sorted(image.COLORMAPS))
    explain.add_argument("--quiet", action="store_true", help="no progress bar")
    explain.set_defaults(run=_explain)

    listing = commands.add_parser("rules", help="list rule keys, presets and rule classes")
    listing.set_defaults(run=_rules)

    check = commands.add_parser(
        "check", help="report unsupported nodes and print the resolved rule of every node"
    )
    _model_arguments(check)
    check.set_defaults(run=_check)
    return parser


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="torchvision:NAME, or module:attr / file.py:attr"
    )
    parser.add_argument("--weights", help="a local state-dict file (torch.save)")
    parser.add_argument(
        "--rules", default="epsilon_gamma_box", help="a rule key or preset (epsilon_gamma_box)"
    )
    parser.add_argument("--resize", type=int, help="shorter side first resized to N pixels")
    parser.add_argument("--crop", type=int, help="then centre-cropped to N x N")
    parser.add_argument("--mean", type=float, nargs="+", help="per-channel mean to subtract")
    parser.add_argument("--std", type=float, nargs="+", help="per-channel std to divide by")
    parser.add_argument("--grayscale", action="store_true", help="one input channel")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 on success)."""
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except (CLIError, LRPError) as error:
        print(f"lrpfn {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
