"""Physical constants and electron-optical relations (lengths in angstrom, energies in eV)."""

from __future__ import annotations

import math

# CODATA 2018
PLANCK_Js = 6.62607015e-34
ELECTRON_MASS_kg = 9.1093837015e-31
ELEMENTARY_CHARGE_C = 1.602176634e-19
SPEED_OF_LIGHT_m_s = 299792458.0


def wavelength_A(energy_eV: float) -> float:
    """Relativistic electron wavelength in angstrom for a beam energy in eV."""
    if not (energy_eV > 0 and math.isfinite(energy_eV)):
        raise ValueError(f"energy_eV: expected a positive finite energy in eV, got {energy_eV!r}")
    e = ELEMENTARY_CHARGE_C * energy_eV
    mc2 = ELECTRON_MASS_kg * SPEED_OF_LIGHT_m_s**2
    return PLANCK_Js * SPEED_OF_LIGHT_m_s / math.sqrt(e * (2 * mc2 + e)) * 1e10


def interaction_parameter(energy_eV: float) -> float:
    """Interaction parameter sigma in rad / (V A): the phase a projected potential of 1 V A imparts."""
    lam_m = wavelength_A(energy_eV) * 1e-10
    mc2 = ELECTRON_MASS_kg * SPEED_OF_LIGHT_m_s**2
    e = ELEMENTARY_CHARGE_C * energy_eV
    gamma_m = ELECTRON_MASS_kg * (1 + e / mc2)
    sigma_per_V_m = 2 * math.pi * gamma_m * ELEMENTARY_CHARGE_C * lam_m / PLANCK_Js**2
    return sigma_per_V_m * 1e-10
