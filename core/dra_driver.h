// File: core/dra_driver.h
//
// The DRA driver's name (DESIGN.md "Second wave"): what the ResourceSlices (projection/), the
// kubelet plugin, the CDI kinds and the metadata files (dra/) all carry.
#pragma once

namespace pcid {

inline constexpr char kDraDriverName[] = "pcidevices.io";

}  // namespace pcid
