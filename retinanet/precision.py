"""The numeric precision a run computes in: fp32, or autocast to bf16 / fp16 where the hardware is fast at it.

Under autocast the convolutions run in the low-precision type; the losses, box decoding and NMS
stay in float32 (``retinanet.losses`` and ``retinanet.postprocess`` cast to float32 first).
A type the device has no fast path for is not emulated: the run says so once and stays fp32,
which is what it would cost anyway.
"""
import contextlib
from dataclasses import dataclass
from typing import Optional

import torch

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """What a run computes in: ``name`` fp32 / bf16 / fp16, ``dtype`` the autocast type (None for fp32),
    ``reason`` a few words on how it was chosen (printed once by the scripts)."""

    name: str
    dtype: Optional[torch.dtype]
    reason: str

    def autocast(self, device: torch.device):
        """torch.autocast to ``dtype`` on ``device``; no autocast at all for fp32."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)

    def describe(self) -> str:
        return f"precision {self.name} ({self.reason})"


FP32 = Precision("fp32", None, "asked for")


def cpu_has_fast(name: str) -> bool:
    """Whether this CPU computes ``name`` (bf16, fp16) in hardware: AVX512_BF16 or AMX for bf16, AMX-FP16 for fp16."""
    # torch's own CPU feature probes (private; a torch without one reports no support)
    def probe(feature: str) -> bool:
        return bool(getattr(torch.cpu, f"_is_{feature}_supported", lambda: False)())

    if name == "bf16":
        return probe("avx512_bf16") or probe("amx_tile")
    if name == "fp16":
        return probe("amx_fp16")
    return False


def device_has_fast(device: torch.device, name: str) -> bool:
    """Whether ``device`` computes ``name`` (bf16, fp16) fast: any CUDA device for fp16, those with bf16
    support for bf16 (compute capability 8.0 and newer), the CPU as ``cpu_has_fast`` says."""
    if device.type == "cuda":
        return name == "fp16" or torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_fast(name)
    return False


def _hardware(device: torch.device) -> str:
    if device.type == "cpu":
        return "this CPU"
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} devices"


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """The precision to run for ``requested`` (one of PRECISIONS) on ``device``.

    auto: bf16 where the device computes it in hardware, fp32 otherwise. bf16 / fp16 asked for on
    a device without a fast path for it: fp32, with the reason saying so.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    if requested == "fp32":
        return FP32
    if requested == "auto":
        if device_has_fast(device, "bf16"):
            return Precision("bf16", torch.bfloat16, f"auto: {_hardware(device)} computes bf16 in hardware")
        return Precision("fp32", None, f"auto: {_hardware(device)} has no fast bf16")
    if device_has_fast(device, requested):
        return Precision(requested, DTYPES[requested], "asked for")
    return Precision("fp32", None, f"{requested} asked for, but {_hardware(device)} has no fast {requested}: "
                                   "running fp32")
