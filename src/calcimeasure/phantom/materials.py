"""Effective X-ray attenuation coefficients of the phantom's materials.

The phantom uses a *monoenergetic effective-energy* model: a polyenergetic
beam of tube voltage ``kvp`` is replaced by a single photon energy
``E_eff = 0.45 * kvp + 12`` keV (a heuristic that puts a 55 kVp extremity beam
at ~37 keV and a 70 kVp knee beam at ~44 keV, i.e. close to the mean energy of
a W-anode spectrum with ~2.5 mm Al filtration after some beam hardening).
Mass attenuation coefficients are interpolated log-log in a small table.

Sources of the table (values rounded, accurate to a few per cent, which is
ample for a phantom):

* water, ICRU skeletal muscle, ICRU adipose tissue, ICRU cortical bone
  (1.92 g/cm3), PMMA and lead: NIST XCOM / NIST IR 5632 tables;
* calcium hydroxyapatite Ca10(PO4)6(OH)2: estimated from cortical bone by
  scaling its Ca+P photo-electric share (bone minus 0.672 x water) by the
  mass-fraction ratio 0.584/0.328 = 1.78 and adding 0.416 x water for O/H.

Soft-tissue skin is taken as muscle; bone marrow as the mean of muscle and
adipose tissue (mixed red/yellow marrow, 1.0 g/cm3).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "ENERGIES_KEV",
    "MASS_ATTENUATION_CM2_G",
    "DENSITY_G_CM3",
    "HYDROXYAPATITE_CRYSTAL_DENSITY_G_CM3",
    "effective_energy_kev",
    "linear_attenuation_per_mm",
    "attenuation_table_per_mm",
    "calcification_excess_per_mm",
]

#: Photon energies of the table, keV.
ENERGIES_KEV = np.array([20.0, 30.0, 40.0, 50.0, 60.0, 80.0, 100.0])

#: Mass attenuation coefficients mu/rho (cm^2/g) at :data:`ENERGIES_KEV`.
MASS_ATTENUATION_CM2_G: dict[str, np.ndarray] = {
    "water": np.array([0.8096, 0.3756, 0.2683, 0.2269, 0.2059, 0.1837, 0.1707]),
    "muscle": np.array([0.8205, 0.3790, 0.2688, 0.2264, 0.2048, 0.1823, 0.1693]),
    "adipose": np.array([0.5616, 0.3162, 0.2451, 0.2161, 0.2004, 0.1804, 0.1681]),
    "cortical_bone": np.array([4.001, 1.331, 0.6655, 0.4242, 0.3148, 0.2229, 0.1855]),
    "hydroxyapatite": np.array([6.49, 2.08, 0.975, 0.578, 0.399, 0.253, 0.197]),
    "pmma": np.array([0.6566, 0.3288, 0.2438, 0.2093, 0.1924, 0.1735, 0.1630]),
    "lead": np.array([86.36, 30.32, 14.36, 8.041, 5.021, 2.419, 5.549]),
}
MASS_ATTENUATION_CM2_G["skin"] = MASS_ATTENUATION_CM2_G["muscle"]
MASS_ATTENUATION_CM2_G["marrow"] = 0.5 * (
    MASS_ATTENUATION_CM2_G["muscle"] + MASS_ATTENUATION_CM2_G["adipose"]
)

#: Mass densities (g/cm^3).
DENSITY_G_CM3: dict[str, float] = {
    "water": 1.0,
    "muscle": 1.05,
    "skin": 1.09,
    "adipose": 0.95,
    "marrow": 1.0,
    "cortical_bone": 1.92,
    "hydroxyapatite": 3.16,
    "pmma": 1.19,
    "lead": 11.35,
}

#: Density of crystalline hydroxyapatite, g/cm^3 (upper bound of a deposit).
HYDROXYAPATITE_CRYSTAL_DENSITY_G_CM3 = 3.16


def effective_energy_kev(kvp: float) -> float:
    """Effective photon energy (keV) of a beam of tube voltage `kvp` (kV).

    ``E_eff = 0.45 * kvp + 12``, clipped to the table range.
    """
    if not 20.0 <= float(kvp) <= 150.0:
        raise ValueError(f"`kvp` must be within 20..150 kV, got {kvp}")
    return float(np.clip(0.45 * float(kvp) + 12.0, ENERGIES_KEV[0], ENERGIES_KEV[-1]))


def _mass_attenuation(material: str, energy_kev: float) -> float:
    try:
        table = MASS_ATTENUATION_CM2_G[material]
    except KeyError:
        raise ValueError(
            f"unknown material {material!r}; known: {sorted(MASS_ATTENUATION_CM2_G)}"
        ) from None
    return float(np.exp(np.interp(np.log(energy_kev), np.log(ENERGIES_KEV), np.log(table))))


def linear_attenuation_per_mm(material: str, kvp: float, *, density_g_cm3: float | None = None) -> float:
    """Linear attenuation coefficient (1/mm) of `material` in a `kvp` beam.

    Parameters
    ----------
    material : str
        A key of :data:`MASS_ATTENUATION_CM2_G`.
    kvp : float
        Tube voltage in kV.
    density_g_cm3 : float, optional
        Mass density; default :data:`DENSITY_G_CM3` of the material.
    """
    rho = DENSITY_G_CM3[material] if density_g_cm3 is None else float(density_g_cm3)
    return _mass_attenuation(material, effective_energy_kev(kvp)) * rho / 10.0


def attenuation_table_per_mm(kvp: float) -> dict[str, float]:
    """Linear attenuation coefficients (1/mm) of all materials at `kvp`."""
    return {name: linear_attenuation_per_mm(name, kvp) for name in DENSITY_G_CM3}


def calcification_excess_per_mm(density_g_cm3: float, kvp: float) -> float:
    """Excess attenuation (1/mm) of a calcific deposit over the soft tissue it replaces.

    A deposit containing ``density_g_cm3`` grams of hydroxyapatite per cm^3 is
    modelled as that mass of HA plus soft tissue (muscle) filling the remaining
    volume fraction ``1 - density / 3.16``.  It displaces muscle, so the excess
    is ``rho_HA * (mu/rho)_HA - (rho_HA / 3.16) * mu_muscle``.
    """
    if not 0.0 < float(density_g_cm3) <= HYDROXYAPATITE_CRYSTAL_DENSITY_G_CM3:
        raise ValueError(
            f"`density_g_cm3` must be in (0, 3.16] g/cm3 of hydroxyapatite, got {density_g_cm3}"
        )
    e = effective_energy_kev(kvp)
    mu_ha = _mass_attenuation("hydroxyapatite", e) * density_g_cm3 / 10.0
    mu_soft = linear_attenuation_per_mm("muscle", kvp)
    return mu_ha - density_g_cm3 / HYDROXYAPATITE_CRYSTAL_DENSITY_G_CM3 * mu_soft
