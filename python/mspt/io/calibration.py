"""ScanCalibration: the calibrations every tilt of a tilt series shares (the root attributes of an
``mspt.tiltseries`` file), validated on creation with errors that name the attribute."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any

from .. import _validate as v
from ..probe import ALIASES, POLAR_ANGLES, POLAR_ORDERS


@dataclasses.dataclass(frozen=True)
class ScanCalibration:
    """Beam, probe, scan and detector calibrations of a tilt series.

    energy_eV : beam energy (eV). semiangle_mrad : probe convergence semiangle (mrad).
    defocus_A : probe defocus (A) referenced to the plane through the rotation centre; positive puts the
        crossover downstream of it (abTEM's sign).
    aberrations : Krivanek coefficients besides defocus (C_nm in A, phi_nm in rad), e.g. {"C30": 1e4}.
    scan_step_A : raster step (dy, dx) in A.
    detector_sampling_mrad : detector pixel (ky, kx) in mrad; or reciprocal_sampling_invA in 1/A (one of them).
    scan_rotation_deg : rotation of the scan axes relative to the detector axes (degrees).
    detector_transpose : the detector's axes are stored (k_x, k_y).
    """

    energy_eV: float
    semiangle_mrad: float
    scan_step_A: tuple[float, float]
    defocus_A: float = 0.0
    aberrations: Mapping[str, float] | None = None
    detector_sampling_mrad: tuple[float, float] | None = None
    reciprocal_sampling_invA: tuple[float, float] | None = None
    scan_rotation_deg: float = 0.0
    detector_transpose: bool = False

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen dataclass)
        set_("energy_eV", float(v.positive("energy_eV", self.energy_eV)))
        set_("semiangle_mrad", float(v.positive("semiangle_mrad", self.semiangle_mrad)))
        set_("defocus_A", v.finite("defocus_A", self.defocus_A, "A"))
        set_("scan_step_A", v.pair("scan_step_A", self.scan_step_A, "A", positive_values=True))
        if (self.detector_sampling_mrad is None) == (self.reciprocal_sampling_invA is None):
            raise ValueError(
                "detector_sampling_mrad / reciprocal_sampling_invA: expected exactly one detector calibration "
                "(mrad per pixel, or 1/A per pixel)"
            )
        for name, unit in (("detector_sampling_mrad", "mrad"), ("reciprocal_sampling_invA", "1/A")):
            if getattr(self, name) is not None:
                set_(name, v.pair(name, getattr(self, name), unit, positive_values=True))
        set_("scan_rotation_deg", v.finite("scan_rotation_deg", self.scan_rotation_deg, "degrees"))
        if not isinstance(self.detector_transpose, bool):
            raise ValueError(f"detector_transpose: expected true or false, got {self.detector_transpose!r}")
        set_("aberrations", _aberrations(self.aberrations))

    def scan_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`mspt.ptycho.PtychoScan` for these calibrations."""
        return dict(
            energy_eV=self.energy_eV, semiangle_mrad=self.semiangle_mrad, scan_step_A=self.scan_step_A,
            defocus_A=self.defocus_A, defocus_reference="centre", aberrations=self.aberrations,
            detector_sampling_mrad=self.detector_sampling_mrad, reciprocal_sampling_invA=self.reciprocal_sampling_invA,
            scan_rotation_deg=self.scan_rotation_deg, detector_transpose=self.detector_transpose,
        )  # fmt: skip

    def to_attrs(self) -> dict[str, Any]:
        """The root attributes of an ``mspt.tiltseries`` file (absent calibrations left out)."""
        attrs = dict(
            energy_eV=self.energy_eV, semiangle_mrad=self.semiangle_mrad, defocus_A=self.defocus_A,
            scan_step_A=list(self.scan_step_A), scan_rotation_deg=self.scan_rotation_deg,
            detector_transpose=self.detector_transpose,
        )  # fmt: skip
        if self.detector_sampling_mrad is not None:
            attrs["detector_sampling_mrad"] = list(self.detector_sampling_mrad)
        else:
            attrs["reciprocal_sampling_invA"] = list(self.reciprocal_sampling_invA)
        if self.aberrations:
            attrs["aberrations"] = json.dumps(dict(self.aberrations))
        return attrs

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any], where: str = "") -> "ScanCalibration":
        """Read the root attributes of a file; a missing required one raises a ValueError naming it."""
        required = {"energy_eV": "the beam energy in eV", "semiangle_mrad": "the probe semiangle in mrad",
                    "scan_step_A": "the raster step (dy, dx) in A"}  # fmt: skip
        for name, what in required.items():
            if name not in attrs:
                raise ValueError(f"{name}: missing root attribute{where}; expected {what}")
        kwargs = {name: _plain(attrs[name]) for name in required}
        for name in ("defocus_A", "scan_rotation_deg", "detector_sampling_mrad", "reciprocal_sampling_invA"):
            if name in attrs:
                kwargs[name] = _plain(attrs[name])
        if "detector_transpose" in attrs:
            value = _plain(attrs["detector_transpose"])
            if value not in (0, 1, True, False):
                raise ValueError(f"detector_transpose: expected true or false (or 0 / 1), got {value!r}")
            kwargs["detector_transpose"] = bool(value)
        if "aberrations" in attrs:
            text = _plain(attrs["aberrations"])
            try:
                kwargs["aberrations"] = json.loads(text) if text else None
            except (TypeError, json.JSONDecodeError):
                raise ValueError(
                    f'aberrations: expected a JSON object of Krivanek coefficients, e.g. {{"C30": 10000.0}}, got {text!r}'
                ) from None
        return cls(**kwargs)


def _plain(value):
    """An HDF5 attribute as a plain Python value (bytes decoded, 0-d arrays unwrapped)."""
    if isinstance(value, bytes):
        return value.decode()
    if hasattr(value, "tolist"):
        value = value.tolist()
    return value


def _aberrations(value) -> dict[str, float] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f'aberrations: expected a mapping of Krivanek coefficients, e.g. {{"C30": 10000.0}}, got {value!r}')
    known = {*POLAR_ORDERS, *POLAR_ANGLES, *ALIASES}
    out = {}
    for key, number in value.items():
        if key not in known or key == "C10":
            expected = sorted(known - {"C10"})
            raise ValueError(f"aberrations: unknown coefficient {key!r} (defocus is defocus_A); expected one of {expected}")
        try:
            number = float(number)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            raise ValueError(f"aberrations[{key!r}]: expected a finite number, got {value[key]!r}")
        out[key] = number
    return out or None
