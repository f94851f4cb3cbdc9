"""A volume of Gaussian atoms and its exact projections at a set of poses, with the Jacobian's products.

Atom n is the density a_n exp(-|r - p_n|^2 / (2 s_n^2)) (volume units, p_n = (x, y, z) in A about the rotation
centre, width s_n in A). Its line integral along z after the pose (R, (dy, dx)) is a 2D Gaussian of the same
width about (c_x, c_y) = ((R p_n)_x + dx, (R p_n)_y + dy) with peak a_n sqrt(2 pi) s_n, sampled at the pixel
centres (DESIGN.md coordinates): no voxel grid and no interpolation, so the model's resolution does not
depend on the pose (a trilinear projector's interpolation blur does: nil on grid-aligned rays, up to about a
sixth of a voxel squared elsewhere, enough to bias tilt angles by tenths of a degree on 1 A atoms).

Each atom is drawn within a square window of ``reach`` pixels about its centre in every projection (``WIDTHS``
widths), so memory and time grow with atoms x tilts x window, not with atoms x image. Parameters:
per atom (x, y, z (A), a, log s); per tilt the rotation vector w (rad; R <- exp([w]x) R) and (dy, dx) (A).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

WIDTHS = 4.0  # each atom's window reaches this many widths from its centre (the Gaussian is 3e-4 of its peak there)
ATOM_PARAMETERS = 5  # x, y, z, a, log s
TILT_PARAMETERS = 5  # w_x, w_y, w_z, dy, dx


@dataclasses.dataclass
class Atoms:
    """Gaussian atoms: positions (N, 3) as (x, y, z) in A, amplitudes (N,) in volume units, widths (N,) in A."""

    positions_A: np.ndarray
    amplitudes: np.ndarray
    widths_A: np.ndarray

    def __len__(self) -> int:
        return len(self.amplitudes)

    def moved(self, delta: np.ndarray) -> "Atoms":
        """The atoms after a step ``delta`` (N, 5) in (x, y, z, a, log s)."""
        widths = self.widths_A * np.exp(delta[:, 4])
        return Atoms(self.positions_A + delta[:, :3], self.amplitudes + delta[:, 3], widths)

    def subset(self, keep: np.ndarray) -> "Atoms":
        return Atoms(self.positions_A[keep], self.amplitudes[keep], self.widths_A[keep])

    def joined(self, other: "Atoms") -> "Atoms":
        return Atoms(np.concatenate([self.positions_A, other.positions_A]),
                     np.concatenate([self.amplitudes, other.amplitudes]),
                     np.concatenate([self.widths_A, other.widths_A]))  # fmt: skip


class AtomProjections:
    """The atoms' projections at fixed poses and the Jacobian of them w.r.t. atoms and poses (products only).

    Built once per linearisation point; holds per (tilt, atom) window the profile and its derivatives w.r.t.
    the window centre (c_y, c_x), the amplitude and the log width (float32) and the pixel indices (int64):
    28 bytes per window pixel, about twice that while a product is computed."""

    def __init__(self, atoms: Atoms, rotation, shifts_A, projection_shape, pixel_A: float):
        rotation = np.asarray(rotation, dtype=float)
        shifts_A = np.asarray(shifts_A, dtype=float)
        self.shape = tuple(projection_shape)
        self.rotation = rotation
        t_count, (py, px) = len(rotation), self.shape
        self.moved = np.einsum("tab,nb->tna", rotation, atoms.positions_A)  # (T, N, 3) R p
        centre_y = (self.moved[..., 1] + shifts_A[:, None, 0]) / pixel_A + py // 2  # fractional pixel rows
        centre_x = (self.moved[..., 0] + shifts_A[:, None, 1]) / pixel_A + px // 2
        reach = max(1, int(math.ceil(WIDTHS * float(np.max(atoms.widths_A, initial=pixel_A)) / pixel_A)))
        reach = min(reach, max(py, px))  # a window beyond the image adds nothing but memory
        span = np.arange(-reach, reach + 1)
        rows = np.round(centre_y).astype(np.int64)[..., None] + span  # (T, N, W)
        cols = np.round(centre_x).astype(np.int64)[..., None] + span
        width = atoms.widths_A[None, :, None]
        ey = (rows - centre_y[..., None]) * pixel_A  # (T, N, W) offsets from the centre (A)
        ex = (cols - centre_x[..., None]) * pixel_A
        gy = np.exp(-0.5 * (ey / width) ** 2) * ((rows >= 0) & (rows < py))
        gx = np.exp(-0.5 * (ex / width) ** 2) * ((cols >= 0) & (cols < px))
        unit = (math.sqrt(2 * math.pi) * width[..., None]) * gy[..., :, None] * gx[..., None, :]  # (T, N, W, W)
        profile = atoms.amplitudes[None, :, None, None] * unit
        inv_var = 1.0 / width[..., None] ** 2
        # d(profile)/d(c_y), d/d(c_x) (the atom moving moves its profile), d/da, d/d(log s)
        rho2 = (ey[..., :, None] ** 2 + ex[..., None, :] ** 2) * inv_var
        self.derivatives = np.stack([profile * (ey * inv_var[..., 0])[..., :, None],
                                     profile * (ex * inv_var[..., 0])[..., None, :],
                                     unit, profile * (1.0 + rho2)], axis=2).astype(np.float32)  # fmt: skip
        self.profile = profile.astype(np.float32)
        self.flat_index = (np.clip(rows, 0, py - 1)[..., :, None] * px + np.clip(cols, 0, px - 1)[..., None, :])
        self.flat_index += (np.arange(t_count) * py * px)[:, None, None, None]
        self.t_count, self.n_atoms = t_count, len(atoms)

    def _scatter(self, windows: np.ndarray) -> np.ndarray:
        """Sum (T, N, W, W) window values into (T, Py, Px) images (window pixels outside the image carry 0)."""
        size = self.t_count * self.shape[0] * self.shape[1]
        total = np.bincount(self.flat_index.ravel(), weights=windows.ravel().astype(np.float64), minlength=size)
        return total.reshape(self.t_count, *self.shape)

    def _gather(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(images, dtype=np.float64).ravel()[self.flat_index]

    def images(self) -> np.ndarray:
        """(T, Py, Px) the projections of the atoms."""
        return self._scatter(self.profile)

    def removal_cost(self, residual: np.ndarray) -> np.ndarray:
        """(N,) how much 1/2 |residual|^2 (residual = model - data) rises if each atom alone is taken out of the
        model: 1/2 |r - P_n|^2 - 1/2 |r|^2 = 1/2 |P_n|^2 - P_n . r, summed over the tilts."""
        profile = self.profile.astype(np.float64)
        own = 0.5 * np.einsum("tnyx,tnyx->n", profile, profile)
        return own - np.einsum("tnyx,tnyx->n", profile, self._gather(residual))

    def _centre_moves(self, atom_step: np.ndarray, tilt_step: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(T, N) moves of each window centre (c_y, c_x) (A) for steps in the positions and the poses."""
        moved_by_atoms = np.einsum("tab,nb->tna", self.rotation, atom_step[:, :3])  # R dp
        moved_by_rotation = np.cross(tilt_step[:, None, :3], self.moved)  # (w x R p)
        shift = tilt_step[:, None, 3:]
        return (moved_by_atoms[..., 1] + moved_by_rotation[..., 1] + shift[..., 0],
                moved_by_atoms[..., 0] + moved_by_rotation[..., 0] + shift[..., 1])  # fmt: skip

    def apply(self, atom_step: np.ndarray, tilt_step: np.ndarray) -> np.ndarray:
        """J [atom_step (N, 5); tilt_step (T, 5)] -> (T, Py, Px)."""
        move_y, move_x = self._centre_moves(atom_step, tilt_step)
        d = self.derivatives
        amplitude, log_width = atom_step[None, :, 3, None, None], atom_step[None, :, 4, None, None]
        windows = (d[:, :, 0] * move_y[..., None, None] + d[:, :, 1] * move_x[..., None, None]
                   + d[:, :, 2] * amplitude + d[:, :, 3] * log_width)  # fmt: skip
        return self._scatter(windows)

    def apply_transpose(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """J^T images -> (atom part (N, 5), tilt part (T, 5))."""
        sums = np.einsum("tnkyx,tnyx->tnk", self.derivatives, self._gather(images).astype(np.float32), dtype=np.float64)
        return self._chain(sums)

    def _chain(self, sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-window sums (T, N, 4) over (c_y, c_x, a, log s) -> the atom and tilt parts (N, 5), (T, 5)."""
        g_y, g_x = sums[..., 0], sums[..., 1]
        atom = np.empty((self.n_atoms, ATOM_PARAMETERS))
        # c_y = (R p)_y + dy, c_x = (R p)_x + dx: the position's gradient is R's rows 1 and 0
        atom[:, :3] = np.einsum("tn,ta->na", g_y, self.rotation[:, 1])
        atom[:, :3] += np.einsum("tn,ta->na", g_x, self.rotation[:, 0])
        atom[:, 3:] = sums[..., 2:].sum(axis=0)
        tilt = np.empty((self.t_count, TILT_PARAMETERS))
        # d(w x m)_y/dw = (-m_z, 0, m_x), d(w x m)_x/dw = (0, m_z, -m_y)
        m = self.moved
        zero = np.zeros_like(m[..., 0])
        dy_dw = np.stack([-m[..., 2], zero, m[..., 0]], -1)
        dx_dw = np.stack([zero, m[..., 2], -m[..., 1]], -1)
        tilt[:, :3] = np.einsum("tn,tna->ta", g_y, dy_dw) + np.einsum("tn,tna->ta", g_x, dx_dw)
        tilt[:, 3], tilt[:, 4] = g_y.sum(axis=1), g_x.sum(axis=1)
        return atom, tilt

    def block_diagonal(self) -> tuple[np.ndarray, np.ndarray]:
        """The diagonal blocks of J^T J: (N, 5, 5) per atom (exact) and (T, 5, 5) per tilt (overlaps of
        neighbouring atoms' windows left out)."""
        d = self.derivatives
        gram = np.einsum("tnkyx,tnlyx->tnkl", d, d).astype(np.float64)  # (T, N, 4, 4) over (c_y, c_x, a, log s)
        t_count, n = self.t_count, self.n_atoms
        to_atom = np.zeros((t_count, 4, ATOM_PARAMETERS))  # (c_y, c_x, a, log s) per unit step of the atom's own
        to_atom[:, 0, :3], to_atom[:, 1, :3] = self.rotation[:, 1], self.rotation[:, 0]
        to_atom[:, 2, 3] = to_atom[:, 3, 4] = 1.0
        atom_blocks = np.einsum("tka,tnkl,tlb->nab", to_atom, gram, to_atom)
        m = self.moved
        to_tilt = np.zeros((t_count, n, 4, TILT_PARAMETERS))
        to_tilt[..., 0, 0], to_tilt[..., 0, 2], to_tilt[..., 0, 3] = -m[..., 2], m[..., 0], 1.0
        to_tilt[..., 1, 1], to_tilt[..., 1, 2], to_tilt[..., 1, 4] = m[..., 2], -m[..., 1], 1.0
        tilt_blocks = np.einsum("tnka,tnkl,tnlb->tab", to_tilt, gram, to_tilt)
        return atom_blocks, tilt_blocks
