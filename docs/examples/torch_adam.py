"""Reconstruct a small simulated 4D-STEM scan with torch.optim.Adam around mspt.torch.multislice."""

import numpy as np
import torch

import mspt
import mspt.torch

energy_eV, sampling_A, dz_A = 200e3, (0.25, 0.25), 8.0
probe = torch.from_numpy(mspt.make_probe(energy_eV, 25, (32, 32), sampling_A, defocus_A=40, electrons=1e5).array)

# Ground truth: 2 slices of Gaussian "atoms" (phase, rad) on a 96 x 96 object; a 12 x 12 scan, 4 px steps.
yy, xx = np.mgrid[:96, :96]
atoms = [(y, x) for y in range(20, 80, 7) for x in range(20, 80, 7)]
true_phase = np.zeros((2, 96, 96))
for n, (y, x) in enumerate(atoms):
    true_phase[n % 2] += 0.5 * np.exp(-((yy - y - 3 * (n % 2)) ** 2 + (xx - x) ** 2) / (2 * 1.5**2))
positions = torch.tensor([(y, x) for y in range(25, 72, 4) for x in range(25, 72, 4)], dtype=torch.float64)
slices_true = torch.from_numpy(np.exp(1j * true_phase).astype(np.complex64))
measured = mspt.torch.multislice(slices_true, probe, positions, dz_A, energy_eV, sampling_A)

# The reconstruction: phase slices as a torch parameter, an amplitude loss, Adam.
phase = torch.zeros((2, 96, 96), requires_grad=True)
optimiser = torch.optim.Adam([phase], lr=0.05)
for step in range(50):
    optimiser.zero_grad()
    model = mspt.torch.multislice(torch.exp(1j * phase), probe, positions, dz_A, energy_eV, sampling_A)
    loss = ((model + 1e-3).sqrt() - measured.sqrt()).square().sum()
    loss.backward()
    optimiser.step()

# Accuracy: correlation of the summed phase with the truth inside the scanned field of view.
inside = (slice(30, 67), slice(30, 67))
recovered, truth = phase.detach().sum(0).numpy()[inside], true_phase.sum(0)[inside]
correlation = np.corrcoef(recovered.ravel(), truth.ravel())[0, 1]
print(f"summed-phase correlation {correlation:.3f} after {step + 1} Adam steps (loss {loss.item():.3g})")
