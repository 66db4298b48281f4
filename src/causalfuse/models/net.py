"""CausalFusionNet: LRRNet encoders -> BAFFM -> conv + tanh reconstruction.

The network of "Causality-Driven Infrared and Visible Image Fusion" as
``shared/DESIGN.md`` fixes it:

1. two LRRNet encoders (infrared, visible), each giving a 256-channel code
   whose halves are the low-rank part L and the sparse part S;
2. :class:`~causalfuse.models.baffm.BAFFM` turns both codes and the fixed
   per-modality confounder dictionaries into per-pixel fusion weights, one per
   modality for each of L and S;
3. the weighted codes F = [w_ir,L L_ir, w_ir,S S_ir, w_vi,L L_vi, w_vi,S S_vi]
   (512 channels) go through one 3x3 conv (reflection padded, as LRRNet's
   layers) and tanh; the image is (t + 1) / 2. The paper says "a
   convolutional layer and a Tanh"; ``NetConfig.reconstruction_kernel``
   widens that conv (an option for study: 3 is ``shared/DESIGN.md``'s).

``NetConfig.use_baffm = False`` is the paper's "without BAFFM" ablation: the
same network and checkpoint format with the back-door term removed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CausalFuseError
from .._device import autocast_dtype
from .baffm import BAFFM, _pointwise, is_channels_last
from .lrr import LRREncoder, _numba_wanted, encode_side_by_side, load_lrrnet_state

__all__ = ["NetConfig", "CausalFusionNet", "Reconstruction"]

CODE_CHANNELS = 256  # LRRNet's published model: n = 128, code 2n
MAX_KERNEL = 15  # widest reconstruction conv NetConfig accepts (the fused tiles' overlap of 16 covers its receptive field)


@dataclass
class NetConfig:
    """Hyper-parameters of :class:`CausalFusionNet` (saved in every checkpoint).

    Attributes:
        dict_size: N, prototypes per modality (the paper: 25).
        dict_dim: d, prototype dimension after PCA (default 128).
        d_k: query/key width of the attention.
        d_f: width of D_m = W_h X + W_g E[g(z)].
        use_baffm: False gives the "without BAFFM" ablation.
        prior: P(z_i): ``uniform`` (1/N, the paper) or ``empirical`` (cluster
            frequencies, for ablation).
        attention_chunk: pixels per attention chunk (bounds memory).
        normalise_expectation: normalise the back-door weights lambda_i P(z_i)
            to a distribution (see :mod:`causalfuse.models.baffm`); False is
            the literal product, which checkpoints written before this option
            used.
        reconstruction_kernel: side of the reconstruction conv (odd; 3 as
            ``shared/DESIGN.md`` fixes it). A wider kernel lets each output
            pixel read the codes of a wider neighbourhood (the receptive
            field grows by ``(k - 3) / 2`` pixels on every side).
    """

    dict_size: int = 25
    dict_dim: int = 128
    d_k: int = 32
    d_f: int = 32
    use_baffm: bool = True
    prior: Literal["uniform", "empirical"] = "uniform"
    attention_chunk: int = 65536
    normalise_expectation: bool = True
    reconstruction_kernel: int = 3

    #: Values of options added after the first release, for files written
    #: before them (their configuration has no such key).
    LEGACY_DEFAULTS = {"normalise_expectation": False}

    @classmethod
    def with_legacy_defaults(cls, data: dict[str, Any]) -> dict[str, Any]:
        """A saved configuration with the values older files were computed with filled in."""
        return {**cls.LEGACY_DEFAULTS, **data}

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NetConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CausalFuseError(f"unknown network configuration keys: {', '.join(unknown)}")
        cfg = cls(**data)
        if cfg.prior not in ("uniform", "empirical"):
            raise CausalFuseError(f"prior must be 'uniform' or 'empirical', got {cfg.prior!r}")
        k = cfg.reconstruction_kernel
        if not isinstance(k, int) or isinstance(k, bool) or k < 1 or k > MAX_KERNEL or k % 2 == 0:
            raise CausalFuseError(f"reconstruction_kernel must be an odd integer from 1 to {MAX_KERNEL}, got {k!r}")
        return cfg


class Reconstruction(nn.Module):
    """One reflection-padded k x k conv (512 -> 1; k = 3 by default) on the weighted codes, then tanh.

    The weighted 512-channel map F is never materialised: a k x k conv equals
    a per-pixel projection to its k^2 taps followed by a shifted sum, and the
    per-pixel fusion weights can be applied to the tap projections of each
    part instead of to its 128 channels (both are linear at the pixel).
    """

    def __init__(self, code_channels: int = CODE_CHANNELS, kernel: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2 * code_channels, 1, kernel_size=kernel)
        self.half = code_channels // 2
        self.kernel = kernel
        self.taps = kernel * kernel

    def _tap_weights(self, modality: int) -> torch.Tensor:
        # conv weight (1, 512, k, k) -> for one modality's 256 channels, one
        # projection per part: L (128 ch) -> k^2 taps, S (128 ch) -> k^2 taps.
        c = 2 * self.half
        w = self.conv.weight[0, modality * c : (modality + 1) * c]  # (256, k, k)
        return w.reshape(2, self.half, self.taps).transpose(1, 2)  # (part, tap, ch)

    def tap_matrix(self, modality: int) -> torch.Tensor:
        """(256, 2 k^2): one modality's channels onto each part's taps (L's channels to the first k^2 columns, S's to the rest)."""
        low, high = self._tap_weights(modality).transpose(1, 2)  # (ch, tap) each
        return torch.block_diag(low, high)

    def _part_taps(self, z: torch.Tensor, modality: int) -> torch.Tensor:
        """(B, 256, H, W) -> (B, 2, k^2, H, W): each part's projection onto its taps, one matrix product."""
        b, c, h, w = z.shape
        if is_channels_last(z):  # each part's channels flattened are a view of z: one product per part, no copy
            weights = self._tap_weights(modality)
            return torch.stack(
                [torch.bmm(weights[p].expand(b, -1, -1), z[:, p * self.half : (p + 1) * self.half].reshape(b, self.half, h * w)) for p in range(2)],
                dim=1,
            ).view(b, 2, self.taps, h, w)
        weight = self._tap_weights(modality).expand(b, -1, -1, -1).reshape(2 * b, self.taps, self.half)
        return torch.bmm(weight, z.reshape(2 * b, self.half, h * w)).view(b, 2, self.taps, h, w)

    def forward(self, z_ir: torch.Tensor, z_vi: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return self.from_part_taps(self._part_taps(z_ir, 0), self._part_taps(z_vi, 1), weights)

    def from_part_taps(self, taps_ir: torch.Tensor, taps_vi: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The fused image from each modality's part taps (B, 2, k^2, H, W) and the fusion weights (B, 4, H, W)."""
        taps = None
        for m, t in enumerate((taps_ir, taps_vi)):
            t = (t * weights[:, 2 * m : 2 * m + 2, None]).sum(dim=1)
            taps = t if taps is None else taps + t
        return self.from_taps(taps)

    @staticmethod
    def weighted_rows(rows_ir: torch.Tensor, rows_vi: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The weighted taps (B, k^2, H, W) from each modality's per-pixel rows (B H W, 2 k^2) of :meth:`tap_matrix` products."""
        b, _, h, w = weights.shape
        t = rows_ir.shape[1] // 2
        parts = torch.cat([rows_ir, rows_vi], dim=1).view(b * h * w, 4, t)  # (ir_L, ir_S, vi_L, vi_S) as the weights
        taps = (parts * weights.permute(0, 2, 3, 1).reshape(b * h * w, 4, 1)).sum(dim=1)
        return taps.view(b, h, w, t).permute(0, 3, 1, 2)

    def from_taps(self, taps: torch.Tensor) -> torch.Tensor:
        """The fused image from the conv's k^2 weighted tap maps (B, k^2, H, W): shifted sum, bias, tanh."""
        b, _, h, w = taps.shape
        r = self.kernel // 2
        taps = F.pad(taps, (r, r, r, r), mode="reflect")
        out = self.conv.bias.view(1, 1, 1, 1).expand(b, 1, h, w)
        for k in range(self.taps):
            dy, dx = divmod(k, self.kernel)
            out = out + taps[:, k : k + 1, dy : dy + h, dx : dx + w]
        return (torch.tanh(out) + 1.0) / 2.0

    def widened(self, weight: torch.Tensor) -> torch.Tensor:
        """A narrower kernel's weight (1, 512, j, j), j <= k odd, placed at the centre of a k x k one (zeros around).

        With reflection padding the two convs give the same image: the
        centre taps read the same pixels, the others are zero.
        """
        j = weight.shape[-1]
        if weight.shape[:2] != self.conv.weight.shape[:2] or weight.shape[-2] != j or j % 2 == 0 or j > self.kernel:
            raise CausalFuseError(f"cannot place a reconstruction kernel of shape {tuple(weight.shape)} in one of {tuple(self.conv.weight.shape)}")
        r = (self.kernel - j) // 2
        return F.pad(weight, (r, r, r, r))

    def weighted_codes(self, z_ir: torch.Tensor, z_vi: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The conv's input F = [w_ir,L L_ir, w_ir,S S_ir, w_vi,L L_vi, w_vi,S S_vi], materialised (B, 512, H, W)."""
        hf = self.half
        parts = [z_ir[:, :hf], z_ir[:, hf:], z_vi[:, :hf], z_vi[:, hf:]]
        return torch.cat([p * weights[:, i : i + 1] for i, p in enumerate(parts)], dim=1)

    def forward_reference(self, z_ir: torch.Tensor, z_vi: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The same output by materialising F (for tests)."""
        fused = self.weighted_codes(z_ir, z_vi, weights)
        r = self.kernel // 2
        t = self.conv(F.pad(fused, (r, r, r, r), mode="reflect"))
        return (torch.tanh(t) + 1.0) / 2.0


class CausalFusionNet(nn.Module):
    """The causal fusion network.

    Args:
        config: hyper-parameters; see :class:`NetConfig`.

    Shapes:
        ``forward(ir, vi)``: (B, 1, H, W) each, values in [0, 1], any H, W >= 2
        -> fused (B, 1, H, W) in [0, 1].
    """

    def __init__(self, config: NetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or NetConfig()
        self.encoder_ir = LRREncoder()
        self.encoder_vi = LRREncoder()
        self.baffm = BAFFM(
            CODE_CHANNELS,
            config.dict_size,
            config.dict_dim,
            config.d_k,
            config.d_f,
            use_backdoor=config.use_baffm,
            chunk=config.attention_chunk,
            normalise=config.normalise_expectation,
        )
        self.reconstruction = Reconstruction(CODE_CHANNELS, config.reconstruction_kernel)
        #: Run the head's per-pixel work in Numba's loops where the encoders' loops made the codes (see :meth:`forward_head`).
        self.numba_head = True
        # Where the dictionaries came from; checked when loading new ones.
        self.dictionary_provenance: dict[str, Any] = {}

    # -- dictionaries ---------------------------------------------------------
    def set_dictionaries(
        self,
        ir: torch.Tensor,
        vi: torch.Tensor,
        *,
        ir_frequencies: torch.Tensor | None = None,
        vi_frequencies: torch.Tensor | None = None,
        provenance: dict[str, Any] | None = None,
    ) -> None:
        """Install the fixed confounder dictionaries (N, d) of both modalities."""
        n, d = self.config.dict_size, self.config.dict_dim
        for name, z in (("infrared", ir), ("visible", vi)):
            if tuple(z.shape) != (n, d):
                raise CausalFuseError(
                    f"{name} dictionary has shape {tuple(z.shape)}, but the network is configured for "
                    f"N={n} prototypes of dimension d={d}"
                )
        with torch.no_grad():
            self.baffm.ir.dictionary.copy_(ir)
            self.baffm.vi.dictionary.copy_(vi)
            if self.config.prior == "empirical":
                if ir_frequencies is None or vi_frequencies is None:
                    raise CausalFuseError("prior='empirical' needs the dictionaries' cluster frequencies")
                self.baffm.set_prior("empirical", ir_frequencies.float(), vi_frequencies.float())
            else:
                self.baffm.set_prior("uniform")
        self.dictionary_provenance = dict(provenance or {})

    def load_dictionary_file(self, path: str) -> None:
        """Install both dictionaries from a ``causalfuse dictionary build`` file."""
        from ..dictionary.io import load_dictionaries

        ir, vi = load_dictionaries(path)
        self.set_dictionaries(
            torch.as_tensor(ir.prototypes),
            torch.as_tensor(vi.prototypes),
            ir_frequencies=torch.as_tensor(ir.frequencies),
            vi_frequencies=torch.as_tensor(vi.frequencies),
            provenance={"ir": ir.provenance, "vi": vi.provenance},
        )

    # -- LRRNet initialisation ------------------------------------------------
    def load_lrrnet(self, path: str) -> None:
        """Initialise both encoders from LRRNet's published weights file."""
        state = load_lrrnet_state(path)
        self.encoder_ir.load_official(state, prefix="get_ls1.")
        self.encoder_vi.load_official(state, prefix="get_ls2.")

    # -- forward --------------------------------------------------------------
    def forward_features(self, ir: torch.Tensor, vi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two 256-channel codes [L, S] of infrared and visible."""
        side_by_side = encode_side_by_side([self.encoder_ir, self.encoder_vi], [ir, vi])
        if side_by_side is not None:
            return side_by_side[0], side_by_side[1]
        return self._code(self.encoder_ir, ir), self._code(self.encoder_vi, vi)

    @staticmethod
    def _code(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
        forward_code = getattr(encoder, "forward_code", None)
        if forward_code is not None:  # the whole code without a concatenating copy
            return forward_code(x)
        return torch.cat(encoder(x), dim=1)

    def fusion_weights(self, z_ir: torch.Tensor, z_vi: torch.Tensor) -> torch.Tensor:
        """(B, 4, H, W) weights (ir_L, ir_S, vi_L, vi_S)."""
        return self.baffm(z_ir, z_vi)

    def forward_head(self, z_ir: torch.Tensor, z_vi: torch.Tensor) -> torch.Tensor:
        """The fused image (B, 1, H, W) from the two codes.

        Channels-last codes are the LRR encoders' on the CPU: for training
        they go through :meth:`_forward_head_rows`, for inference through
        :meth:`_forward_head_numba`; any other code through the modules.
        """
        if is_channels_last(z_ir) and is_channels_last(z_vi):
            if torch.is_grad_enabled():
                return self._forward_head_rows(z_ir, z_vi)
            if self._numba_head_applies(z_ir):
                return self._forward_head_numba(z_ir, z_vi)
        return self.reconstruction(z_ir, z_vi, self.fusion_weights(z_ir, z_vi))

    def _numba_head_applies(self, z: torch.Tensor) -> bool:
        return (
            self.numba_head
            and self.reconstruction.kernel == 3  # head_numba's loops are written for 9 taps
            and z.device.type == "cpu"
            and z.dtype == torch.float32
            and all(p.dtype == torch.float32 for p in (self.baffm.weights.weight, self.reconstruction.conv.weight))
            and autocast_dtype("cpu") is None
            and not torch.jit.is_tracing()
            and _numba_wanted()
        )

    def _forward_head_numba(self, z_ir: torch.Tensor, z_vi: torch.Tensor) -> torch.Tensor:
        """:meth:`forward_head` for inference: one matrix product per code, the rest in one compiled pass.

        Each code goes through BAFFM's projection (the attention's logits and
        the mapped W_h X) and both parts' reconstruction taps in one product,
        as in :meth:`_forward_head_rows` but with the outputs as maps: at
        480 x 640 one product of 47 rows (the taps' 18 with their zero
        blocks) takes 0.11-0.13 s for both codes against 0.16-0.18 s for
        three narrower ones, which each read the code again. The per-pixel
        work after it (two softmaxes, the weighted taps, the shifted sum and
        tanh) is :func:`causalfuse.models.head_numba.fuse`. Same image to
        float32 rounding.
        """
        from .head_numba import fuse

        b, _, h, w = z_ir.shape
        qe, taps = [], []
        for m, z in enumerate((z_ir, z_vi)):
            weight, bias, n = self._head_projection(m)
            rows = _pointwise(z, weight, bias).reshape(b, -1, h * w)
            qe.append(rows[:, :n])
            taps.append(rows[:, n:])
        read_outs = [branch.read_out(mapping) for branch, mapping in zip((self.baffm.ir, self.baffm.vi), self.baffm.mappings())]
        return fuse(qe, taps, read_outs, self.baffm.weights.bias, self.reconstruction.conv.bias, h, w).to(z_ir.dtype)

    def _head_projection(self, modality: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """One code's projection for the whole head: weights (n + 2 k^2, C), bias (n + 2 k^2,), and n.

        The first n rows are BAFFM's (:meth:`ConfounderAttention.projection`:
        the attention's logits, then the mapped W_h X), the last 2 k^2 (18 for
        the 3x3 conv) the reconstruction's taps (:meth:`Reconstruction.tap_matrix`, no bias).
        """
        branch = (self.baffm.ir, self.baffm.vi)[modality]
        weight, bias = branch.projection(self.baffm.mappings()[modality])
        tap = self.reconstruction.tap_matrix(modality)  # (C, 2 k^2)
        return torch.cat([weight, tap.t()]), torch.cat([bias, bias.new_zeros(tap.shape[1])]), weight.shape[0]

    def _forward_head_rows(self, z_ir: torch.Tensor, z_vi: torch.Tensor) -> torch.Tensor:
        """:meth:`forward_head` for training on channels-last codes (the LRR encoders' on the CPU).

        Read in place as a (B H W, 256) matrix, each code goes through BAFFM's
        projection and the reconstruction's taps in one matrix product, so
        the backward pass writes one code-sized gradient per code, not one
        per product and per part and their sum (about 2 s of a step at the
        paper's crop of 256). Without a gradient the general path is faster
        (its per-row work is on contiguous maps). Same values to float
        rounding.
        """
        b, c, h, w = z_ir.shape
        projections, rows_taps = [], []
        for m, z in enumerate((z_ir, z_vi)):
            weight, bias, n = self._head_projection(m)
            rows = torch.addmm(bias, z.permute(0, 2, 3, 1).reshape(b * h * w, c), weight.t())
            projections.append(rows[:, :n].reshape(b, h * w, n).transpose(1, 2))
            rows_taps.append(rows[:, n:])
        weights = self.baffm.from_projections(projections[0], projections[1], h, w)
        return self.reconstruction.from_taps(self.reconstruction.weighted_rows(rows_taps[0], rows_taps[1], weights))

    def forward(self, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
        if ir.shape != vi.shape or ir.dim() != 4 or ir.shape[1] != 1:
            raise CausalFuseError(f"expected two (B, 1, H, W) tensors of the same shape, got {tuple(ir.shape)} and {tuple(vi.shape)}")
        least = max(2, self.reconstruction.kernel // 2 + 1)  # reflection padding needs more pixels than it pads
        if min(ir.shape[-2:]) < least:
            raise CausalFuseError(f"images must be at least {least} x {least} pixels, got {tuple(ir.shape[-2:])}")
        z_ir, z_vi = self.forward_features(ir, vi)
        return self.forward_head(z_ir, z_vi)

    @property
    def receptive_radius(self) -> int:
        """Pixels of context one output pixel depends on: the encoder's first conv
        and two 3x3 convs per LRR block (1 + 2 * 4), plus the reconstruction
        conv's half-width (1 for 3x3). Tiles with at least this much overlap
        reproduce the whole image."""
        return 1 + 2 * 4 + self.reconstruction.kernel // 2
