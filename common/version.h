// The Gantry release these binaries belong to.
#pragma once

namespace gantry {
constexpr const char* kGantryVersion = "0.1.0";
}  // namespace gantry
