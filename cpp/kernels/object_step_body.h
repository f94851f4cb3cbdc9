// Update kernel bodies: the per-pixel arithmetic of the ptychography engine's preconditioned object and
// probe steps and of the object constraint, written once for every backend (cpu/object_step_cpu.cpp and
// cpu/probe_step_cpu.cpp loop over them).
#pragma once

#include "mspt/complex.h"

namespace mspt {

// The object constraint (a projection): none; a transmission amplitude never above 1 (the sample does not
// add electrons); amplitude exactly 1 (a phase object).
enum ObjectConstraint { kConstraintNone = 0, kAmplitudeAtMostOne = 1, kPhaseOnly = 2 };

template <int Kind, class T>
MSPT_HD cplx<T> constrain_transmission(cplx<T> o) {
  if (Kind == kConstraintNone) return o;
  const T floor = Kind == kPhaseOnly ? T(1e-12) : T(1);
  const T amplitude = m_sqrt(o.re * o.re + o.im * o.im);
  const T scale = T(1) / (amplitude > floor ? amplitude : floor);
  return make_cplx(o.re * scale, o.im * scale);
}

// The step's gain at a pixel: step / (curvature (illumination + floor)), floor a fraction of the batch's
// largest illumination (the rPIE-style regularisation of the inverse).
template <class T>
MSPT_HD T step_gain(T illumination, T floor, T curvature, T step) {
  return step / ((illumination + floor) * curvature);
}

// One preconditioned gradient step on a transmission: o - gain * g.
template <class T>
MSPT_HD cplx<T> preconditioned_update(cplx<T> o, cplx<T> g, T gain) {
  return make_cplx(o.re - g.re * gain, o.im - g.im * gain);
}

}  // namespace mspt
